"""Where the refiner's clips render, without a cluster: local workers (an out-of-memory error while a
replica is copied, the host's replica accounting) and the model recipes Ray workers load from (same
files by identity, found by path map or by name in the worker's models folder), the ``--ray`` flag."""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from avatar_cascade.core.errors import InputError, ModelFileError
from avatar_cascade.core.runtime import ReplicaHost
from avatar_cascade.models.handle import WanModels
from avatar_cascade.models.recipe import MODELS_ENV, FileRef, ModelRecipe, candidates, find_on_worker, parse_path_map
from avatar_cascade.sampling.settings import SamplerSettings
from avatar_cascade.stages.refiner import workers as W
from avatar_cascade.stages.refiner.refiner import refine_clips
from avatar_cascade.stages.refiner.settings import RefinerSettings
from tests.helpers import cpu_runtime, refiner_inputs, save_safetensors

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = RefinerSettings(seed=3, batch_size=1, sampler=SamplerSettings(steps=2, guidance=3.0, shift=3.0))


def run(wan_models, cache, settings, rt=None):
    kf, aligned, story = refiner_inputs(clips=3)
    return refine_clips(wan_models, kf, aligned, story, settings, rt or cpu_runtime(), cache_dir=cache)


class Recorder(ReplicaHost):
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def reserve(self, device, nbytes):
        self.calls.append(("reserve", str(device), nbytes))

    def adopt(self, modules, device):
        self.calls.append(("adopt", str(device), [id(m) for m in modules]))

    def release(self, modules):
        self.calls.append(("release", [id(m) for m in modules]))


def test_replicas_are_reserved_adopted_and_released_by_the_host(wan_models, tmp_path, counter):
    host = Recorder()
    one = run(wan_models, tmp_path / "one", SETTINGS)
    counter.take()
    two = run(
        wan_models, tmp_path / "two", dataclasses.replace(SETTINGS, devices=("cpu", "cpu")), cpu_runtime(replicas=host)
    )
    assert len(set(counter.calls)) == 2 and [c[0] for c in host.calls] == ["reserve", "adopt", "release"]
    originals = {id(m) for m in (*wan_models.dit.modules(), *wan_models.vae.modules())}
    weights = sum(p.numel() * p.element_size() for i in originals for p in _by_id(wan_models, i).parameters())
    assert host.calls[0][2] == weights  # room asked for the DiT + VAE before copying them
    adopted = host.calls[1][2]
    assert len(adopted) == len(originals) and not set(adopted) & originals  # the copies, not the loaded models
    assert host.calls[2][1] == adopted  # and let go of after the run
    assert all(torch.equal(a.frames(i), b.frames(i)) for a, b in [(one, two)] for i in range(3))


def _by_id(models: WanModels, ident: int) -> torch.nn.Module:
    return next(m for m in (*models.dit.modules(), *models.vae.modules()) if id(m) == ident)


def test_out_of_memory_while_replicating_leaves_that_device_out(wan_models, tmp_path, monkeypatch, caplog):
    real = W.replicate_handle
    tried = []

    def replicate_handle(handle, device):  # fault injection: the extra device is too full for a copy of the VAE
        tried.append(type(handle).__name__)
        if type(handle).__name__ == "WanVAE":
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        return real(handle, device)

    monkeypatch.setattr(W, "replicate_handle", replicate_handle)
    caplog.set_level(logging.WARNING, "avatar_cascade")
    host = Recorder()
    clips = run(wan_models, tmp_path, dataclasses.replace(SETTINGS, devices=("cpu", "cpu")), cpu_runtime(replicas=host))
    assert clips.computed == 3 and tried == ["WanDiT", "WanVAE"]
    assert [c[0] for c in host.calls] == ["reserve"]  # nothing adopted, so nothing to release
    assert any("no room for a replica" in r.getMessage() and "without it" in r.getMessage() for r in caplog.records)
    manifest = (tmp_path / "refiner_manifest.json").read_text()
    assert manifest.count("/cpu") == 3 and len({w for w in _workers(tmp_path)}) == 1  # all on the one worker left
    monkeypatch.setattr(W, "replicate_handle", lambda h, d: (_ for _ in ()).throw(torch.OutOfMemoryError("x")))
    with pytest.raises(InputError, match="none of these devices had room"):
        run(wan_models, tmp_path / "none", dataclasses.replace(SETTINGS, devices=("cuda:5",)))


def _workers(cache: Path) -> list[str]:
    import json

    return [row["worker"] for row in json.loads((cache / "refiner_manifest.json").read_text())["clips"]]


# ----------------------------------------------------------------------------- model recipes (Ray workers)


def test_path_map_and_worker_models_folder_find_the_same_file(demo_models_dir, tmp_path, monkeypatch):
    from avatar_cascade.demo.models import DIT_FILE
    from avatar_cascade.models.files import file_identity

    src = demo_models_dir / "diffusion_models" / DIT_FILE
    ref = FileRef(str(src), file_identity(src))
    assert find_on_worker(ref) == src  # a shared folder: the same path
    worker = tmp_path / "worker_models"
    (worker / "diffusion_models").mkdir(parents=True)
    shutil.copyfile(src, worker / "diffusion_models" / DIT_FILE)
    moved = FileRef(str(tmp_path / "gone" / "models" / "diffusion_models" / DIT_FILE), ref.identity)
    monkeypatch.delenv(MODELS_ENV, raising=False)
    with pytest.raises(ModelFileError, match="no such file on this worker"):
        find_on_worker(moved)
    mapped = parse_path_map(f"{tmp_path / 'gone' / 'models'}={worker}")
    assert find_on_worker(moved, mapped) == worker / "diffusion_models" / DIT_FILE
    monkeypatch.setenv(MODELS_ENV, str(worker))  # the worker's own models folder, by the same name
    assert find_on_worker(moved) == worker / "diffusion_models" / DIT_FILE
    assert candidates("C:\\m\\vae\\x.safetensors", (("C:/m", "/mnt/m"),)) == [
        Path("/mnt/m/vae/x.safetensors"),
        Path("C:\\m\\vae\\x.safetensors"),
    ]
    save_safetensors(worker / "diffusion_models" / DIT_FILE, {"x": torch.zeros(3)})  # another file, same name
    with pytest.raises(ModelFileError, match="not the file the driver loaded"):
        find_on_worker(moved)
    with pytest.raises(InputError, match="ray_path_map.*cannot read"):
        RefinerSettings(ray_path_map="/only/one/side").check()


def test_a_recipe_loads_the_same_models_again(demo_models_dir, models, audio_adapter_file):
    from avatar_cascade.models.audio_adapter import load_audio_adapter
    from avatar_cascade.models.lora import apply_loras, lora_spec

    dit, vae, _ = models
    block = dit.transformer.blocks[0].attn1.to_q.weight
    lora = save_safetensors(
        demo_models_dir / "loras" / "tiny_recipe_lora.safetensors",
        {
            "diffusion_model.blocks.0.self_attn.q.lora_down.weight": torch.randn(2, block.shape[1]),
            "diffusion_model.blocks.0.self_attn.q.lora_up.weight": torch.randn(block.shape[0], 2),
        },
    )
    styled = apply_loras(dit, (lora_spec(lora, 0.7),))
    talking = load_audio_adapter(audio_adapter_file, styled, strength=1.5).attach(styled)
    try:
        recipe = ModelRecipe.of(talking, vae)
        again, vae2, ie = recipe.load()
        assert ie is None and again.cache_identity() == talking.cache_identity()
        for mine, theirs in ((talking.transformer, again.transformer), (vae.vae, vae2.vae)):
            a, b = mine.state_dict(), theirs.state_dict()
            assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        assert again.audio_adapter.strength == 1.5
        x = dict(again.audio_adapter.module.state_dict())
        assert all(torch.equal(v, talking.audio_adapter.module.state_dict()[k]) for k, v in x.items())
    finally:
        talking.audio_adapter.detach()
        lora.unlink()
    with pytest.raises(InputError, match="not loaded from a file"):
        ModelRecipe.of(dataclasses.replace(dit, path=None), vae)


def test_ray_flag_selects_the_ray_backend():
    from avatar_cascade.cli import run_config

    base = ["--image", "a.png", "--audio", "a.wav", "--prompt", "x", "--models", "m", "--out", "o.mp4"]
    cfg = run_config([*base, "--ray", "10.0.0.5:6379"])
    assert cfg.refiner.backend == "ray" and cfg.refiner.ray_address == "10.0.0.5:6379"
    assert run_config(base).refiner.backend == "local"


# ----------------------------------------------------------------------------- inside a real ComfyUI

COMFY = os.environ.get("AVATAR_CASCADE_COMFYUI")
COMFY_SCRIPT = """
import sys, torch
sys.argv = ["main.py", "--cpu"]
import comfy.options; comfy.options.enable_args_parsing()
import comfy.model_management as mm
import importlib.util
spec = importlib.util.spec_from_file_location("ac_bridge", BRIDGE)  # ComfyUI has a nodes module of its own
bridge = importlib.util.module_from_spec(spec); spec.loader.exec_module(bridge)
assert bridge.HAS_COMFY
host = bridge.make_runtime().replicas
replica = torch.nn.Linear(64, 64)
host.reserve(torch.device("cpu"), 64 * 65 * 4)
host.adopt([replica], torch.device("cpu"))
counted = [m for m in mm.loaded_models() if getattr(m.model, "inner", None) is replica]
assert len(counted) == 1 and counted[0].model_size() == 64 * 65 * 4, mm.loaded_models()
host.release([replica])
assert not [m for m in mm.loaded_models() if getattr(m.model, "inner", None) is replica]
print("ok")
"""


@pytest.mark.comfyui
@pytest.mark.skipif(not COMFY, reason="set AVATAR_CASCADE_COMFYUI to a ComfyUI checkout to run this")
def test_comfyui_counts_the_replicas_as_loaded_models():
    python = os.environ.get("AVATAR_CASCADE_COMFYUI_PYTHON", sys.executable)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([COMFY, str(ROOT)])}
    script = f"BRIDGE = {str(ROOT / 'nodes' / 'comfy_bridge.py')!r}\n" + COMFY_SCRIPT
    r = subprocess.run([python, "-c", script], capture_output=True, text=True, cwd=COMFY, env=env, timeout=300)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stdout[-2000:] + r.stderr[-4000:]


def test_without_ray_installed_the_backend_says_how_to_get_it(monkeypatch):
    from avatar_cascade.stages.refiner import ray_backend

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(InputError, match=r"backend = 'ray': Ray is not installed.*avatar-cascade\[ray\]"):
        ray_backend.connect("auto")

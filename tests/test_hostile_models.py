"""Adversarial suite: model files as artists really have them, and the wrong ones.

Expected outcomes: a Hugging Face cache link (``snapshots/.../x.safetensors -> blobs/<hash>``, no
extension on the target) loads, its target's contents still checked (a pickle behind the link is
refused); files in a symlinked subfolder are listed by the loader nodes (a link loop does not hang);
a truncated DiT, a VAE chosen as the DiT, a DiT chosen as a LoRA and a LoRA strength out of range are
refused before the first model runs (exit 2, one line, no ``timeline.json`` written yet).
"""

from __future__ import annotations

import os
import pickle

import pytest

from avatar_cascade.core.errors import ModelFileError
from avatar_cascade.demo.models import DIT_FILE, VAE_FILE
from tests.hostile_helpers import models_tree, one_line_error, run_args


def hf_cache_link(src, models, folder: str, name: str):
    """``models/<folder>/<name>`` -> ``hub/snapshots/rev/<name>`` -> ``hub/blobs/<hash>`` (huggingface_hub's layout)."""
    hub = models.parent / "hub"
    (hub / "blobs").mkdir(parents=True, exist_ok=True)
    (hub / "snapshots" / "rev").mkdir(parents=True, exist_ok=True)
    blob = hub / "blobs" / "9f2c1e0d5b7a"
    blob.write_bytes(src.read_bytes())
    (hub / "snapshots" / "rev" / name).symlink_to(os.path.relpath(blob, hub / "snapshots" / "rev"))
    link = models / folder / name
    link.parent.mkdir(parents=True, exist_ok=True)
    link.unlink(missing_ok=True)
    link.symlink_to(hub / "snapshots" / "rev" / name)
    return link, blob


def test_a_hugging_face_cache_link_loads(demo_models_dir, tmp_path):
    from avatar_cascade.models.files import resolve_model_path
    from avatar_cascade.models.wan_vae import load_wan_vae

    models = tmp_path / "models"
    link, blob = hf_cache_link(demo_models_dir / "vae" / VAE_FILE, models, "vae", "wan_vae.safetensors")
    path = resolve_model_path([models / "vae"], "wan_vae.safetensors", "vae_name")
    assert path.resolve() == blob.resolve() and blob.suffix == ""
    assert load_wan_vae(path, input_name="vae_name") is not None


def test_a_pickle_behind_a_safetensors_named_link_is_refused(tmp_path):
    """The extension is the name's, the safety check is the contents': a pickle blob is never unpickled."""
    from avatar_cascade.models.files import resolve_model_path
    from avatar_cascade.models.wan_vae import load_wan_vae

    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    models = tmp_path / "models"
    hf_cache_link(evil, models, "vae", "wan_vae.safetensors")
    path = resolve_model_path([models / "vae"], "wan_vae.safetensors", "vae_name")
    with pytest.raises(ModelFileError, match="not a safetensors file"):
        load_wan_vae(path, input_name="vae_name")


def test_files_in_a_symlinked_subfolder_are_listed_and_a_link_loop_does_not_hang(tmp_path, monkeypatch):
    from nodes import comfy_bridge as bridge

    models = tmp_path / "models"
    (models / "loras").mkdir(parents=True)
    (models / "loras" / "own.safetensors").write_bytes(b"x")
    elsewhere = tmp_path / "big_disk" / "loras"
    elsewhere.mkdir(parents=True)
    (elsewhere / "style.safetensors").write_bytes(b"x")
    (models / "loras" / "linked").symlink_to(elsewhere, target_is_directory=True)
    (elsewhere / "loop").symlink_to(elsewhere, target_is_directory=True)  # a loop
    monkeypatch.setattr(bridge, "HAS_COMFY", False)
    monkeypatch.setenv("AVATAR_CASCADE_MODELS", str(models))
    assert bridge.list_models("loras") == ["linked/style.safetensors", "own.safetensors"]


def _run(capsys, args):
    from avatar_cascade.cli import main

    rc = main(args)
    return rc, capsys.readouterr().err


@pytest.mark.parametrize("case", ["truncated-dit", "vae-as-dit", "dit-as-lora", "lora-strength", "vae-as-adapter"])
def test_model_content_errors_are_found_before_any_work(case, demo_models_dir, tmp_path, capsys):
    tree = models_tree(demo_models_dir, tmp_path / "models")
    dit = tree / "diffusion_models" / DIT_FILE
    extra: list[str] = []
    over: dict = {}
    if case == "truncated-dit":
        data = dit.read_bytes()
        dit.unlink()
        dit.write_bytes(data[: len(data) * 2 // 3])
        name = "--dit"
    elif case == "vae-as-dit":
        over["dit"] = "v.safetensors"
        (tree / "diffusion_models" / "v.safetensors").symlink_to(tree / "vae" / VAE_FILE)
        name = "--dit"
    elif case == "dit-as-lora":
        (tree / "loras").mkdir()
        (tree / "loras" / "l.safetensors").symlink_to(dit)
        extra = ["--lora", "l.safetensors:0.8"]
        name = "--lora"
    elif case == "lora-strength":
        (tree / "loras").mkdir()
        (tree / "loras" / "l.safetensors").symlink_to(dit)
        extra = ["--lora", "l.safetensors:25"]
        name = "--lora"
    else:
        over["audio_adapter"] = VAE_FILE
        (tree / "model_patches" / VAE_FILE).symlink_to(tree / "vae" / VAE_FILE)
        name = "--audio-adapter"
    work = tmp_path / "work"
    rc, err = _run(capsys, [*run_args(tree, tmp_path / "o.mp4", **over), *extra, "--workdir", str(work)])
    assert rc == 2, err
    line = one_line_error(err)
    assert name in line and "Fix:" in line, line
    assert not (work / "timeline.json").exists()  # before the aligner, the Director and any model


def test_windows_lora_path_is_named_as_a_path_not_a_strength(demo_models_dir, tmp_path, capsys):
    r"""``C:\loras\x.safetensors`` is one name (refused as an absolute path), not ``C`` with strength ``\loras...``."""
    from avatar_cascade.cli import _lora_arg

    assert _lora_arg(r"C:\loras\x.safetensors") == (r"C:\loras\x.safetensors", 1.0)
    assert _lora_arg(r"C:\loras\x.safetensors:0.5") == (r"C:\loras\x.safetensors", 0.5)
    assert _lora_arg("style.safetensors:0.7") == ("style.safetensors", 0.7)
    tree = models_tree(demo_models_dir, tmp_path / "models")
    rc, err = _run(capsys, [*run_args(tree, tmp_path / "o.mp4"), "--lora", r"C:\loras\x.safetensors"])
    assert rc == 2 and "absolute paths" in one_line_error(err)

"""Integration with a real ComfyUI: every shipped API workflow runs to success on CPU.

Set ``AVATAR_CASCADE_COMFYUI`` to a ComfyUI checkout (and ``AVATAR_CASCADE_COMFYUI_PYTHON`` to the
python of its environment, default: this interpreter). The test starts ``main.py --cpu`` on
127.0.0.1 with temporary models / input / output folders (models written by ``demo-models``) and
the pack loaded through ``extra_model_paths`` ``custom_nodes``, posts every workflow in
``workflows/*_api.json`` to ``/prompt``, waits on ``/history`` and checks the written videos; then
checks that ``/interrupt`` stops a run and keeps finished clips. Skipped without a checkout.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from fractions import Fraction
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COMFY = os.environ.get("AVATAR_CASCADE_COMFYUI")
pytestmark = [
    pytest.mark.comfyui,
    pytest.mark.skipif(not COMFY, reason="set AVATAR_CASCADE_COMFYUI to a ComfyUI checkout to run these"),
]
API_FILES = sorted((ROOT / "workflows").glob("*_api.json"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str):
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.load(r)


def _post(url: str, payload: dict | None = None):
    data = json.dumps(payload or {}).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        body = r.read()
        return json.loads(body) if body else None


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from avatar_cascade.cli import copy_sample_inputs
    from avatar_cascade.demo_models import write_demo_models

    tmp = tmp_path_factory.mktemp("comfy")
    models, inp, out, nodes = tmp / "models", tmp / "input", tmp / "output", tmp / "custom_nodes"
    write_demo_models(models)
    copy_sample_inputs(inp)
    nodes.mkdir()
    (nodes / "avatar-cascade").symlink_to(ROOT, target_is_directory=True)
    cfg = tmp / "extra_model_paths.yaml"
    folders = ["diffusion_models", "vae", "text_encoders", "audio_encoders", "LLM", "loras", "clip_vision",
               "model_patches"]
    cfg.write_text("avatar_cascade_test:\n" + f"    base_path: {models}\n" + f"    custom_nodes: {nodes}\n"
                   + "".join(f"    {f}: {f}\n" for f in folders))
    port = _free_port()
    python = os.environ.get("AVATAR_CASCADE_COMFYUI_PYTHON", sys.executable)
    log = open(tmp / "server.log", "w")
    proc = subprocess.Popen(
        [python, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port), "--extra-model-paths-config",
         str(cfg), "--input-directory", str(inp), "--output-directory", str(out), "--disable-auto-launch"],
        cwd=COMFY, stdout=log, stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 180
    while time.time() < deadline:
        try:
            _get(f"{base}/object_info/AvatarCascadeAudioAligner")
            break
        except Exception:
            if proc.poll() is not None:
                break
            time.sleep(1)
    else:
        proc.kill()
    if proc.poll() is not None:
        pytest.fail("ComfyUI did not start:\n" + (tmp / "server.log").read_text()[-4000:])
    yield {"base": base, "out": out, "log": tmp / "server.log"}
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


def _wait(base: str, prompt_id: str, timeout: float = 900) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        h = _get(f"{base}/history/{prompt_id}")
        if prompt_id in h:
            return h[prompt_id]
        time.sleep(1)
    raise AssertionError(f"prompt {prompt_id} did not finish in {timeout} s")


def test_pack_imports_and_lists_the_six_stages(server):
    info = _get(f"{server['base']}/object_info")
    for node_id in ("AvatarCascadeAudioAligner", "AvatarCascadeDirector", "AvatarCascadeBlueprintSampler",
                    "AvatarCascadeKeyframeExtractor", "AvatarCascadeFLFRefiner", "AvatarCascadeClipStitcher"):
        assert node_id in info
    log = server["log"].read_text()
    assert "avatar-cascade" in log and "IMPORT FAILED" not in log


@pytest.mark.parametrize("path", API_FILES, ids=lambda p: p.name)
def test_workflow_runs_to_success(server, path):
    from avatar_cascade.media import probe_media

    api = json.loads(path.read_text())
    r = _post(f"{server['base']}/prompt", {"prompt": api, "client_id": "avatar-cascade-tests"})
    entry = _wait(server["base"], r["prompt_id"])
    errors = [m for m in entry["status"].get("messages", []) if m[0] == "execution_error"]
    assert entry["status"]["status_str"] == "success", json.dumps(errors)[:3000]
    videos = [v for out in entry["outputs"].values() for v in out.get("images", []) if v["filename"].endswith(".mp4")]
    assert videos, entry["outputs"]
    for v in videos:
        f = server["out"] / v["subfolder"] / v["filename"]
        info = probe_media(f)
        kinds = [s["type"] for s in info["streams"]]
        assert kinds.count("video") == 1 and kinds.count("audio") == 1
        video_s = Fraction(info["video_frames"]) / Fraction(info["fps"])
        assert abs(float(video_s) - info["audio_samples"] / info["sample_rate"]) < 1 / float(info["fps"])


def test_interrupt_stops_a_run_and_keeps_finished_clips(server):
    demo = json.loads((ROOT / "workflows" / "avatar_cascade_demo_api.json").read_text())
    ref = next(k for k, v in demo.items() if v["class_type"] == "AvatarCascadeFLFRefiner")
    demo[ref]["inputs"].update(seed=12345, steps=40, batch_size=1, cache_folder="interrupt_test")
    r = _post(f"{server['base']}/prompt", {"prompt": demo, "client_id": "avatar-cascade-tests"})
    cache = server["out"] / "avatar_cascade_work" / "interrupt_test"
    deadline = time.time() + 600
    while time.time() < deadline and not list(cache.glob("clip_*.safetensors")):
        time.sleep(0.5)
    assert list(cache.glob("clip_*.safetensors")), "no clip finished before the deadline"
    _post(f"{server['base']}/interrupt")
    entry = _wait(server["base"], r["prompt_id"], timeout=300)
    kinds = [m[0] for m in entry["status"].get("messages", [])]
    assert "execution_interrupted" in kinds
    finished = list(cache.glob("clip_*.safetensors"))
    assert finished and not list(cache.glob("*.tmp"))

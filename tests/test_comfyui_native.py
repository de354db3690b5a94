"""ComfyUI's native models (MODEL / VAE / CLIP / CLIP_VISION) driving the cascade, inside a real ComfyUI.

The checks run in one ComfyUI process (``tests/comfy_native_checks.py``, with ``AVATAR_CASCADE_COMFYUI`` and
``AVATAR_CASCADE_COMFYUI_PYTHON`` as for the other real-ComfyUI tests); each test below asserts one of them:

* the same seed through the pack's DiT loader and through ComfyUI's (UNETLoader's) gives the same latents;
* a LoRA applied by ComfyUI's LoraLoaderModelOnly code changes the output, at strength 0 does not, equals the
  pack's own LoRA path, and leaves the input MODEL unchanged (weights, patches, options, hooks);
* the InfiniteTalk-layout audio adapter on a native MODEL gives what it gives on the pack's DiT, and its hooks
  are gone afterwards;
* ComfyUI's VAE / UMT5 / CLIP-vision objects give the pack's numbers; prompt emphasis ``(word:1.5)`` acts;
* the refiner node renders from a LoRA-patched native MODEL, and neither MODEL changed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COMFY = os.environ.get("AVATAR_CASCADE_COMFYUI")
pytestmark = [
    pytest.mark.comfyui,
    pytest.mark.skipif(not COMFY, reason="set AVATAR_CASCADE_COMFYUI to a ComfyUI checkout to run these"),
]


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict:
    work = tmp_path_factory.mktemp("native")
    python = os.environ.get("AVATAR_CASCADE_COMFYUI_PYTHON", sys.executable)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    script = ROOT / "tests" / "comfy_native_checks.py"
    r = subprocess.run(
        [python, str(script), COMFY, str(ROOT), str(work)],
        capture_output=True,
        text=True,
        cwd=COMFY,
        env=env,
        timeout=1200,
    )
    out = work / "results.json"
    assert r.returncode == 0 and out.is_file(), r.stdout[-3000:] + r.stderr[-5000:]
    return json.loads(out.read_text())


def _check(results: dict, name: str) -> dict:
    res = results[name]
    assert "error" not in res, res["error"]
    assert res["ok"], res
    return res


def test_same_seed_through_our_loader_and_comfyuis_gives_the_same_latents(results):
    res = _check(results, "dit_parity")
    assert res["max_diff_cfg5"] < 1e-4 and res["scale_cfg5"] > 0.1


def test_lora_loader_model_only_changes_the_output_and_leaves_the_input_model_unchanged(results):
    res = _check(results, "lora")
    assert res["lora_effect"] > 1e-2 and res["strength0_diff"] < 1e-5 and res["input_unchanged"]
    assert res["vs_pack_lora"] < 1e-3  # ComfyUI's LoRA patch = the pack's LoRA on the same file


def test_a_function_wrapper_and_a_block_replace_patch_run_inside_the_cascade(results):
    res = _check(results, "patches_and_wrappers")
    assert res["wrapper"] == 3 and res["block"] == 3  # one batched forward per step, 3 steps
    assert 0 < res["sigmas"] <= 1.0 and res["input_unchanged"]


def test_audio_adapter_on_a_native_model_matches_the_pack_dit_and_leaves_no_hooks(results):
    res = _check(results, "audio_adapter")
    assert res["max_diff"] < 1e-4 and res["audio_effect"] > 1e-3 and res["input_unchanged"]


def test_native_vae_clip_and_clip_vision_give_the_packs_numbers(results):
    for name in ("vae", "clip", "clip_vision"):
        _check(results, name)
    assert results["clip"]["shape"][1:] == [512, 4096]


def test_prompt_emphasis_acts_on_the_native_clip_path(results):
    assert _check(results, "clip")["emphasis_effect"] > 1e-4


def test_comfyui_can_load_the_packs_own_dit_partially(results):
    res = _check(results, "partial_load_of_the_packs_model")
    assert res["model_lowvram"] and res["offloaded_layers"] > 0 and res["max_diff"] == 0.0


def test_refiner_node_renders_from_a_lora_patched_native_model(results):
    res = _check(results, "refiner_node_with_lora_model")
    assert res["frames"] == 9 and res["differs_from_base"] > 0
    assert res["base_unchanged"] and res["patched_unchanged"]


def test_a_native_wan_vace_model_follows_the_control_as_the_packs_vace_does(results):
    res = _check(results, "vace")
    assert res["max_diff"] < 1e-4 and res["control_changes_output"] > 1e-3 and res["input_model_unchanged"]


def test_the_guided_refiner_and_blueprint_nodes_render_from_a_native_vace_model(results):
    res = _check(results, "vace_nodes_with_a_native_vace_model")
    assert res["refiner_max_diff_u8"] <= 2 and res["blueprint_max_diff_u8"] <= 2 and res["blueprint_frames"] > 0

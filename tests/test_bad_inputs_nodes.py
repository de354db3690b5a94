"""Bad-input suite, the nodes: model files through the loader nodes (a VAE posing as a DiT, truncated
files, ``..`` in names, LoRAs for other models), widget values refused by ``VALIDATE_INPUTS`` and
broken Storyline Edit JSON. Each is answered by a clear error that names the input, the bad value
and a fix, with the working directory and the temp folder in a sandbox (``conftest.py``) that is
checked for stray files. (The CLI table and the documented handling: ``test_bad_inputs_cli.py``.)
"""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch

from avatar_cascade.core.errors import AvatarCascadeError
from avatar_cascade.demo.models import DIT_FILE, VAE_FILE
from tests.helpers import assert_clear, write_wav
from tests.helpers import node_class as _node

# ----------------------------------------------------------------------------- model files through the loader nodes


@pytest.fixture()
def models_tree(sandbox, demo_models_dir):
    """A models/ tree in the sandbox with a VAE posing as a DiT, a truncated DiT and foreign LoRAs."""
    from safetensors.torch import save_file

    root = sandbox / "models"
    dm = root / "diffusion_models"
    dm.mkdir(parents=True)
    shutil.copyfile(demo_models_dir / "diffusion_models" / DIT_FILE, dm / DIT_FILE)
    shutil.copyfile(demo_models_dir / "vae" / VAE_FILE, dm / "my_vae.safetensors")
    data = (demo_models_dir / "diffusion_models" / DIT_FILE).read_bytes()
    (dm / "half.safetensors").write_bytes(data[: len(data) // 2])
    (root / "loras").mkdir()
    sdxl = {
        "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 320),
        "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": torch.zeros(320, 4),
    }
    save_file(sdxl, str(root / "loras" / "sdxl_style.safetensors"))
    flux = {
        "diffusion_model.double_blocks.0.img_attn.qkv.lora_A.weight": torch.zeros(4, 3072),
        "diffusion_model.double_blocks.0.img_attn.qkv.lora_B.weight": torch.zeros(9216, 4),
    }
    save_file(flux, str(root / "loras" / "flux_style.safetensors"))
    return root


def _raises_clear(fn, input_name: str, value: str) -> str:
    with pytest.raises(AvatarCascadeError) as info:
        fn()
    assert_clear(str(info.value), input_name, value)
    return str(info.value)


def test_vae_file_chosen_as_dit(models_tree):
    msg = _raises_clear(lambda: _node("AvatarCascadeDiTLoader")().load("my_vae.safetensors"), "dit_name", "my_vae")
    assert "VAE" in msg or "not recognised" in msg


def test_truncated_safetensors(models_tree):
    msg = _raises_clear(lambda: _node("AvatarCascadeDiTLoader")().load("half.safetensors"), "dit_name", "half")
    assert "truncated" in msg


def test_model_name_with_dotdot_in_a_node(models_tree):
    _raises_clear(lambda: _node("AvatarCascadeDiTLoader")().load("../loras/x.safetensors"), "dit_name", "../")
    stack = _node("AvatarCascadeLoRAStack")()
    _raises_clear(lambda: stack.stack("../../secret.safetensors", 1.0, "all"), "lora_name", "../")


@pytest.mark.parametrize(("file", "family"), [("sdxl_style", "Stable Diffusion"), ("flux_style", "FLUX")])
def test_lora_for_another_model(models_tree, file, family):
    (dit,) = _node("AvatarCascadeDiTLoader")().load(DIT_FILE)
    (stack,) = _node("AvatarCascadeLoRAStack")().stack(f"{file}.safetensors", 1.0, "all")
    msg = _raises_clear(lambda: _node("AvatarCascadeApplyLoRA")().apply(dit, stack), "lora", file)
    assert family in msg


# ----------------------------------------------------------------------------- widget values (VALIDATE_INPUTS)

WIDGET_KINDS = [
    ("AvatarCascadeFLFRefiner", {"scheduler": "euler_ancestral_magic"}, "scheduler", "euler_ancestral_magic"),
    ("AvatarCascadeFLFRefiner", {"seed": -5}, "seed", "-5"),
    ("AvatarCascadeFLFRefiner", {"seed": 2**64}, "seed", str(2**64)),
    ("AvatarCascadeAudioAligner", {"fps": 0.0}, "fps", "0.0"),
    ("AvatarCascadeAudioAligner", {"fps": -30.0}, "fps", "-30.0"),
    ("AvatarCascadeAudioAligner", {"fps": 1e9}, "fps", "1000000000.0"),
    ("AvatarCascadeAudioAligner", {"fps": math.nan}, "fps", "nan"),
    ("AvatarCascadeAudioAligner", {"fps": math.inf}, "fps", "inf"),
    ("AvatarCascadeAudioAligner", {"fps": 25.0, "clip_frames": 80}, "clip_frames", "80"),
    ("AvatarCascadeBlueprintSampler", {"width": 100, "height": 64}, "width", "100"),
]


@pytest.mark.parametrize(
    ("node", "widgets", "input_name", "value"), WIDGET_KINDS, ids=[f"{n[13:]}-{k}" for n, k, *_ in WIDGET_KINDS]
)
def test_widget_values_are_refused_before_the_run(sandbox, node, widgets, input_name, value):
    msg = _node(node).VALIDATE_INPUTS(**widgets)
    assert isinstance(msg, str), msg
    assert_clear(msg, input_name, value)


# ----------------------------------------------------------------------------- storyline JSON (Storyline Edit node)


@pytest.fixture()
def timeline(sandbox):
    from avatar_cascade.media import load_audio

    audio = load_audio(write_wav(sandbox / "inputs" / "two_seconds.wav", 2.0))
    aligned, _ = _node("AvatarCascadeAudioAligner")().align(audio.to_comfy(), 16.0, 17)
    assert len(aligned.timeline.clips) >= 2
    return aligned


def _story(aligned) -> dict:
    _, text = _node("AvatarCascadeStorylineEdit")().edit(aligned, _rule_story(aligned))["result"]
    return json.loads(text)


def _rule_story(aligned) -> str:
    from avatar_cascade.stages.inbetween.inbetween import inbetween_storyline

    return inbetween_storyline(aligned.timeline, "a person talks").to_json()


def test_storyline_json_that_is_not_json(timeline):
    edit = _node("AvatarCascadeStorylineEdit")()
    _raises_clear(lambda: edit.edit(timeline, '{"global": "talk", "shots": [ '), "storyline", "")


def test_storyline_json_missing_fields(timeline):
    data = _story(timeline)
    del data["shots"]
    edit = _node("AvatarCascadeStorylineEdit")()
    _raises_clear(lambda: edit.edit(timeline, json.dumps(data)), "storyline", "shots")
    data = _story(timeline)
    del data["shots"][0]["prompt"]
    _raises_clear(lambda: edit.edit(timeline, json.dumps(data)), "storyline", "prompt")


def test_storyline_json_with_overlapping_shots(timeline):
    data = _story(timeline)
    first = data["shots"][0]
    data["shots"][1]["frame_start"] = first["frame_start"]  # shot 1 claims shot 0's frames too
    edit = _node("AvatarCascadeStorylineEdit")()
    msg = _raises_clear(lambda: edit.edit(timeline, json.dumps(data)), "storyline", str(first["frame_start"]))
    assert "shots[1].frame_start" in msg and "overlaps the previous shot" in msg
    data = _story(timeline)
    data["shots"].append(dict(data["shots"][-1]))  # one shot too many
    _raises_clear(lambda: edit.edit(timeline, json.dumps(data)), "storyline", "shots")

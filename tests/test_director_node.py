"""Director nodes through NODE_CLASS_MAPPINGS: the Director's JSON is what the Storyline Edit node takes,
the editor's errors name field and shot, the MLLM loader finds models/LLM folders, and the model is
placed for the Director call and released after."""

from __future__ import annotations

import contextlib
import json

import pytest
import torch

from avatar_cascade.core.errors import InputError, ModelFileError
from avatar_cascade.demo.tiny_mllm import write_tiny_qwen25_vl
from nodes import NODE_CLASS_MAPPINGS, comfy_bridge
from tests.helpers import aligned_tone, cpu_runtime, tone

SR = 16000
INSTRUCTION = "A calm teacher explains the lesson. Smile at 0:04, look left during 0:06-0:07."


@pytest.fixture(scope="module")
def aligned():
    """An AVATAR_TIMELINE from the real Audio Aligner: 8 s of tone with a pause at 3-4 s (3 sub-clips)."""
    wave = tone(8.0)
    wave[:, 3 * SR : 4 * SR] = 0.0
    return aligned_tone(8.0, 25, 81, wave=wave)  # the fixed grid (snap_seams_frames=0)


@pytest.fixture
def image():
    return torch.rand(1, 48, 40, 3)  # ComfyUI IMAGE [B, H, W, C]


def _director(**kw):
    node = NODE_CLASS_MAPPINGS["AvatarCascadeDirector"]()
    out = getattr(node, node.FUNCTION)(**kw)
    assert out["ui"]["text"] == [out["result"][1]]  # the storyline JSON is shown on the node
    return out["result"]


def _edit(timeline, text):
    node = NODE_CLASS_MAPPINGS["AvatarCascadeStorylineEdit"]()
    return getattr(node, node.FUNCTION)(timeline=timeline, storyline_json=text)["result"]


def test_director_json_round_trips_through_storyline_edit(aligned, image):
    story, text = _director(image=image, timeline=aligned, instruction=INSTRUCTION, seed=0, max_new_tokens=512)
    assert len(story.shots) == len(aligned.timeline.clips) == 3
    assert [s.source for s in story.shots] == ["rules", "artist", "artist"]
    edited, normalised = _edit(aligned, text)
    assert edited == story and normalised == text
    data = json.loads(text)  # an artist's edit: change one shot's camera, re-validate through the node
    data["shots"][2]["camera"] = "slow dolly-in"
    edited, normalised = _edit(aligned, json.dumps(data))
    assert edited.shots[2].camera == "slow dolly-in" and "slow dolly-in" in edited.shot_prompt(2)
    assert json.loads(normalised)["shots"][2]["camera"] == "slow dolly-in"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d["shots"][1].pop("prompt"), r"shots\[1\]\.prompt: missing"),
        (lambda d: d["shots"][2].update(emotion={"mood": "happy"}), r"shots\[2\]\.emotion: must be text"),
        (lambda d: d["shots"][2].update(frame_start=10), r"shots\[2\]\.frame_start: 10 overlaps the previous shot"),
        (lambda d: d["shots"][0].update(index=1), r"shots\[0\]\.index: is 1, expected 0"),
        (lambda d: d["shots"].pop(), r"shots: has 2 shots but the timeline has 3 sub-clips"),
        (lambda d: d.update(character=["a", {"b": 1}]), r"character: must be text"),
    ],
    ids=["missing-prompt", "non-text-emotion", "overlap", "out-of-order", "shot-count", "non-text-global"],
)
def test_editor_errors_name_the_field_and_the_shot(aligned, image, edit, message):
    _, text = _director(image=image, timeline=aligned, instruction=INSTRUCTION, seed=0, max_new_tokens=512)
    data = json.loads(text)
    edit(data)
    with pytest.raises(InputError, match=message) as err:
        _edit(aligned, json.dumps(data))
    assert err.value.input_name == "storyline" and "edit the storyline JSON" in str(err.value)


def test_editor_names_line_and_column_of_broken_json(aligned, image):
    _, text = _director(image=image, timeline=aligned, instruction="", seed=0, max_new_tokens=512)
    with pytest.raises(InputError, match=r"invalid JSON at line \d+ column \d+"):
        _edit(aligned, text.replace('"scene":', '"scene"', 1))


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    write_tiny_qwen25_vl(root / "LLM" / "tiny-qwen25-vl", seed=0)
    return root


def test_mllm_loader_node_and_director_with_a_real_model(models_dir, aligned, image, monkeypatch):
    monkeypatch.setenv("AVATAR_CASCADE_MODELS", str(models_dir))
    loader = NODE_CLASS_MAPPINGS["AvatarCascadeMLLMLoader"]
    assert "tiny-qwen25-vl" in loader.INPUT_TYPES()["required"]["mllm_name"][0]
    (mllm,) = getattr(loader(), loader.FUNCTION)(mllm_name="tiny-qwen25-vl")
    assert mllm.family == "qwen2_5_vl" and mllm.model.dtype == torch.float32  # CPU: fp32
    with pytest.raises(ModelFileError, match="'..' is not allowed"):
        getattr(loader(), loader.FUNCTION)(mllm_name="../LLM/tiny-qwen25-vl")

    placed, generated_while_placed = [], []

    @contextlib.contextmanager
    def model_loader(modules):  # what ComfyUI's model management does: place for the block, release after
        placed.append(("load", modules))
        yield
        placed.append(("release", modules))

    monkeypatch.setattr(
        comfy_bridge,
        "make_runtime",
        lambda node_id=None: cpu_runtime(model_loader=model_loader),
    )
    real_generate = type(mllm).generate

    def generate(text, image, max_new_tokens, *args, **kwargs):  # the real model, its budget capped for speed
        generated_while_placed.append(placed[-1][0] == "load")
        return real_generate(mllm, text, image, min(max_new_tokens, 4), *args, **kwargs)

    monkeypatch.setattr(mllm, "generate", generate)
    story, text = _director(
        image=image, timeline=aligned, instruction=INSTRUCTION, seed=3, max_new_tokens=64, mllm=mllm
    )
    assert [p[0] for p in placed] == ["load", "release"] and placed[0][1] == [mllm.model]
    assert generated_while_placed and all(generated_while_placed)
    assert any("were planned by rules" in w for w in story.warnings)  # tiny model: gibberish replies
    edited, normalised = _edit(aligned, text)
    assert edited == story and normalised == text

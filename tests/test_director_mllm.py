"""MLLM Director with real tiny models: Qwen2.5-VL, Qwen3-VL and Qwen2.5-Omni (full folder and
thinker only) written by the demo factory, loaded and run end to end. (Scripted replies for the
parsing, repair, retry, fallback and audio-excerpt paths: ``test_director_scripted.py``.)"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from avatar_cascade.core.errors import InputError, ModelFileError
from avatar_cascade.demo.tiny_mllm import (
    write_tiny_qwen3_vl,
    write_tiny_qwen25_omni,
    write_tiny_qwen25_omni_thinker,
    write_tiny_qwen25_vl,
)
from avatar_cascade.models.mllm import load_mllm
from tests.helpers import assert_covers
from tests.helpers import run_director as run

# -- the real tiny Qwen2.5-VL -----------------------------------------------------


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> Path:
    return write_tiny_qwen25_vl(tmp_path_factory.mktemp("tiny_qwen25_vl"), seed=0)


@pytest.fixture(scope="module")
def tiny(tiny_folder):
    return load_mllm(tiny_folder)


def test_tiny_model_is_deterministic_and_small(tiny_folder, tmp_path):
    again = write_tiny_qwen25_vl(tmp_path / "again", seed=0)
    names = sorted(p.name for p in tiny_folder.iterdir())
    assert {"config.json", "model.safetensors", "tokenizer.json", "processor_config.json"} <= set(names)
    for n in names:
        assert (again / n).read_bytes() == (tiny_folder / n).read_bytes(), n
    assert sum(p.stat().st_size for p in tiny_folder.iterdir()) < 5_000_000
    other = write_tiny_qwen25_vl(tmp_path / "seed1", seed=1)
    assert (other / "model.safetensors").read_bytes() != (tiny_folder / "model.safetensors").read_bytes()


def test_real_generate_with_image_is_deterministic(tiny):
    from PIL import Image

    assert tiny.family == "qwen2_5_vl" and not tiny.accepts_audio
    img = Image.new("RGB", (40, 30), (200, 120, 80))
    a, stats = tiny.generate("Describe the person as JSON.", img, 12, seed=3, system="You are a director.")
    b, _ = tiny.generate("Describe the person as JSON.", img, 12, seed=3, system="You are a director.")
    assert a == b and stats["tokens_out"] == 12 and stats["tokens_in"] > 4


def test_unsupported_or_broken_folders_raise_model_file_error(tmp_path, tiny_folder):
    (tmp_path / "llama").mkdir()
    (tmp_path / "llama" / "config.json").write_text('{"model_type": "llama"}')
    with pytest.raises(ModelFileError, match="'llama' is not a supported.*qwen2_5_vl.*qwen2_5_omni") as err:
        load_mllm(tmp_path / "llama", input_name="mllm_name")
    assert err.value.input_name == "mllm_name"
    with pytest.raises(ModelFileError, match="is not a folder"):
        load_mllm(tmp_path / "nowhere")
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_bytes((tiny_folder / "config.json").read_bytes())
    (pickled / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(ModelFileError, match=r"no \.safetensors weights \(found pytorch_model\.bin\)"):
        load_mllm(pickled)
    truncated = tmp_path / "truncated"
    truncated.mkdir()
    for f in tiny_folder.iterdir():
        (truncated / f.name).write_bytes(f.read_bytes())
    (truncated / "model.safetensors").write_bytes((tiny_folder / "model.safetensors").read_bytes()[:50_000])
    with pytest.raises(ModelFileError, match="could not be loaded as Qwen2_5_VLForConditionalGeneration"):
        load_mllm(truncated)


def test_full_omni_folder_loads_the_thinker_only(tmp_path):
    from PIL import Image
    from safetensors.torch import load_file

    folder = write_tiny_qwen25_omni(tmp_path / "omni", seed=0)
    stored = load_file(folder / "model.safetensors")
    assert any(k.startswith("talker.") for k in stored) and any(k.startswith("token2wav.") for k in stored)
    m = load_mllm(folder)
    assert type(m.model).__name__ == "Qwen2_5OmniThinkerForConditionalGeneration"
    assert m.family == "qwen2_5_omni" and m.accepts_audio
    got = m.model.state_dict()
    expected = {k.removeprefix("thinker."): v for k, v in stored.items() if k.startswith("thinker.")}
    assert got.keys() == expected.keys() and all(torch.equal(got[k], v) for k, v in expected.items())
    text, stats = m.generate("Plan the video.", Image.new("RGB", (40, 30)), 6, seed=0, system="Director.")
    assert stats["tokens_out"] == 6 and isinstance(text, str)


@pytest.fixture(scope="module")
def omni(tmp_path_factory):
    folder = write_tiny_qwen25_omni_thinker(tmp_path_factory.mktemp("tiny_omni_thinker"), seed=0)
    return load_mllm(folder)


def test_thinker_only_omni_folder_hears_the_real_audio(omni):
    from avatar_cascade.models.mllm import AudioExcerpt

    config = json.loads(Path(omni.model.name_or_path, "config.json").read_text())
    assert config["model_type"] == "qwen2_5_omni_thinker"
    assert type(omni.model).__name__ == "Qwen2_5OmniThinkerForConditionalGeneration"
    assert omni.family == "qwen2_5_omni" and omni.accepts_audio and omni.audio_rate == 16000
    assert omni.max_audio_s == 30.0 and omni.model.dtype == torch.float32  # fp32 on a CPU machine
    voice = AudioExcerpt(0.0, 3.0, 0.1 * np.sin(np.arange(3 * 16000) * 0.05).astype(np.float32))
    inputs = omni._inputs("Plan the video.", None, "Director.", [voice])
    assert tuple(inputs["input_features"].shape) == (1, 16, 3000)  # Whisper mel frames of the 30 s window
    assert int(inputs["feature_attention_mask"].sum()) == 300  # 3 s of real audio at 100 frames/s
    heard = []
    hook = omni.model.model.audio_tower.register_forward_hook(lambda mod, args, out: heard.append(args[0].shape))
    try:
        _, deaf = omni.generate("Plan the video.", None, 2, seed=0, system="Director.")
        assert heard == []
        _, hearing = omni.generate("Plan the video.", None, 2, seed=0, system="Director.", audio=[voice])
    finally:
        hook.remove()
    assert heard, "the audio encoder never ran"
    assert hearing["audio_tokens"] == 75  # 3 s -> 300 mel frames -> 150 -> 75 audio tokens
    assert hearing["tokens_in"] >= deaf["tokens_in"] + 75 and deaf["audio_tokens"] == 0


def test_deaf_model_refuses_audio(tiny):
    from avatar_cascade.models.mllm import AudioExcerpt

    with pytest.raises(InputError, match="cannot hear audio"):
        tiny.generate("x", None, 1, audio=[AudioExcerpt(0.0, 1.0, np.zeros(16000, np.float32))])


def test_same_seed_gives_the_same_storyline_from_a_real_model_that_hears(omni, monkeypatch):
    calls = []

    def recording(*args, **kwargs):
        text, stats = type(omni).generate(omni, *args, **kwargs)
        calls.append((text, stats["tokens_in"], stats["audio_tokens"]))
        return text, stats

    monkeypatch.setattr(omni, "generate", recording)
    kw = {"seconds": 5.0, "seed": 7, "max_new_tokens": 3, "tokens_per_shot": 1, "instruction": "calm, nod at 0:04"}
    first, tl = run(omni, **kw)
    first_calls, calls[:] = list(calls), []
    second, _ = run(omni, **kw)
    assert second.to_json() == first.to_json()
    assert calls == first_calls and len(calls) == 4  # global and shot pass, each retried once, same replies
    assert all(audio == 125 for _, _, audio in calls)  # every pass heard the 5 s track (25 tokens per second)
    assert_covers(first, tl)
    assert [s.source for s in first.shots] == ["rules", "artist"]  # gibberish replies -> rules, then the cue
    assert any("shots 0-1 were planned by rules" in w for w in first.warnings), first.warnings


def test_qwen3_vl_folder_loads_and_generates(tmp_path):
    from PIL import Image

    folder = write_tiny_qwen3_vl(tmp_path / "qwen3_vl", seed=0)
    m = load_mllm(folder, dtype=torch.bfloat16)
    assert type(m.model).__name__ == "Qwen3VLForConditionalGeneration"
    assert m.family == "qwen3_vl" and not m.accepts_audio and m.model.dtype == torch.bfloat16
    img = Image.new("RGB", (40, 30), (10, 200, 30))
    a, stats = m.generate("Describe the person as JSON.", img, 4, seed=1, system="You are a director.")
    b, _ = m.generate("Describe the person as JSON.", img, 4, seed=1, system="You are a director.")
    assert a == b and stats["tokens_out"] == 4 and stats["tokens_in"] > 4

"""MLLM Director: real tiny Qwen2.5-VL / Qwen3-VL / Qwen2.5-Omni models end to end, and scripted
replies (a labelled stand-in) for the parsing, repair, retry, fallback and audio-excerpt paths."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from avatar_cascade.artefacts.storyline import Storyline
from avatar_cascade.artefacts.timeline import plan_timeline
from avatar_cascade.core.errors import InputError, Interrupted, ModelFileError
from avatar_cascade.core.runtime import Progress, Runtime
from avatar_cascade.demo.tiny_mllm import (
    write_tiny_qwen3_vl,
    write_tiny_qwen25_omni,
    write_tiny_qwen25_omni_thinker,
    write_tiny_qwen25_vl,
)
from avatar_cascade.models.mllm import load_mllm
from avatar_cascade.stages.director.audio import excerpt_spans, summarize_audio
from avatar_cascade.stages.director.director import direct
from avatar_cascade.stages.director.json_output import parse_model_json, repair_json
from avatar_cascade.stages.director.settings import DirectorSettings
from tests.helpers import cpu_runtime

SR = 16000
GLOBAL = (
    '{"character": "a woman with red hair", "scene": "a studio", "style": "photorealistic", '
    '"emotional_arc": "calm then excited", "global_negative": "blurry"}'
)


class ScriptedMLLM:
    """TEST STAND-IN for :class:`avatar_cascade.models.mllm.MLLM` - not a model.

    ``generate`` returns crafted replies (a list consumed in order, or a function of
    the prompt) and records every call, so the Director's parsing, repair, retry and
    fallback paths can be driven exactly.
    """

    family, identity, accepts_audio, model = "scripted", "scripted-test-stand-in", False, None
    audio_rate, max_audio_s = None, 0.0

    def __init__(self, replies, hears: bool = False):
        self.replies = replies
        self.calls: list[dict] = []
        if hears:  # pretend to be a model that hears, at Qwen2.5-Omni's 16 kHz and 30 s per excerpt
            self.accepts_audio, self.audio_rate, self.max_audio_s = True, 16000, 30.0

    def modules(self):  # the model-handle contract: nothing to place, it is not a model
        return []

    def generate(self, messages_text, image=None, max_new_tokens=512, seed=0, system=None, audio=None):
        self.calls.append({"prompt": messages_text, "image": image, "max_new_tokens": max_new_tokens, "audio": audio})
        reply = self.replies(messages_text) if callable(self.replies) else self.replies[len(self.calls) - 1]
        return reply, {"tokens_in": len(messages_text), "tokens_out": len(reply)}


def good_shots(prompt: str, drop: tuple[str, ...] = ()) -> str:
    """A valid shot-pass reply for the shots a prompt asks for."""
    a, b = map(int, re.search(r"Plan shots (\d+) to (\d+)", prompt).groups())
    shots = [
        {
            "index": i,
            "emotion": "happy",
            "expression": "smiling",
            "action": "nods",
            "camera": "close-up",
            "prompt": f"shot {i}: she talks",
            "negative_prompt": "blur",
        }
        for i in range(a, b + 1)
    ]
    return json.dumps({"shots": [{k: v for k, v in s.items() if k not in drop} for s in shots]})


def scripted(shots=good_shots, global_reply=GLOBAL, hears=False):
    return ScriptedMLLM(lambda p: shots(p) if "Plan shots" in p else global_reply, hears=hears)


def run(mllm, seconds=9.0, instruction="talk warmly", sr=SR, **kw):
    tl = plan_timeline(int(seconds * sr), sr, 25, 81)
    wav = 0.1 * torch.sin(torch.arange(tl.num_samples) * (0.05 * SR / sr))[None]
    rt = cpu_runtime()
    story = direct(mllm, torch.rand(32, 24, 3), wav, sr, instruction, tl, DirectorSettings(**kw), rt)
    return story, tl


def assert_covers(story: Storyline, tl) -> None:
    Storyline.validate(json.loads(story.to_json()), tl)  # a valid storyline for this timeline
    assert [(s.frame_start, s.frame_end) for s in story.shots] == [(c.frame_start, c.frame_end) for c in tl.clips]


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


# -- JSON helpers -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('Sure! Here is the plan: {"a": 1, "b": [1, 2]} Hope it helps {"c": 3}', {"a": 1, "b": [1, 2]}),
        ('```json\n{"a": "x"}\n```\nanything after', {"a": "x"}),
        ("{'a': 'it is', b: True, 'c': None,}", {"a": "it is", "b": True, "c": None}),
        ('{"shots": [{"index": 0, "prompt": "she smi', {"shots": [{"index": 0, "prompt": "she smi"}]}),
        ('{"a": 1 "b": 2, // comment\n "c": [1, 2,],}', {"a": 1, "b": 2, "c": [1, 2]}),
        ('{"a": {"b": 1]}', {"a": {"b": 1}}),
        # a dangling key without a value is dropped (json-repair), so the Director fills it from rules
        ('{"emotion": happy, "n": 1e2, "key"', {"emotion": "happy", "n": 100.0}),
        ('[{"index": 3}, {"index": 4', [{"index": 3}, {"index": 4}]),
    ],
)
def test_parse_model_json(text, expected):
    assert parse_model_json(text) == expected


def test_repair_json_output_is_strict_json():
    assert repair_json("{'a': 'say \"hi\"', b: [1, 2,]") == '{"a":"say \\"hi\\"","b":[1,2]}'
    with pytest.raises(ValueError, match="no JSON"):
        parse_model_json("I cannot help with that.")


# -- the Director with scripted replies --------------------------------------------


def test_prose_and_code_fences_are_accepted_without_retry():
    m = scripted(
        shots=lambda p: "Here you go:\n```json\n" + good_shots(p) + "\n```\nEnjoy!",
        global_reply="Of course. " + GLOBAL + " Let me know.",
    )
    story, tl = run(m)
    assert len(m.calls) == 2 and m.calls[0]["image"] is not None and m.calls[1]["image"] is None
    assert_covers(story, tl)
    assert story.character == "a woman with red hair" and story.global_negative == "blurry"
    assert [s.source for s in story.shots] == ["director"] * len(tl.clips) and story.warnings == []
    assert story.shot_prompt(1).startswith("a woman with red hair. a studio")


def test_truncated_reply_is_closed_and_used():
    m = scripted(shots=lambda p: good_shots(p)[:-6])  # cut inside the last shot's negative_prompt
    story, tl = run(m)
    assert len(m.calls) == 2
    assert [s.source for s in story.shots] == ["director"] * len(tl.clips)
    assert story.shots[-1].negative_prompt == "bl"


def test_overlapping_shots_retry_then_success_makes_exactly_two_calls():
    def overlapping(p):
        shots = json.loads(good_shots(p))["shots"]
        shots[1]["index"] = 0
        return json.dumps({"shots": shots})

    replies = iter([overlapping, good_shots])
    m = scripted(shots=lambda p: next(replies)(p))
    story, tl = run(m)
    shot_calls = [c for c in m.calls if "Plan shots" in c["prompt"]]
    assert len(shot_calls) == 2
    assert "appears twice (overlapping shots)" in shot_calls[1]["prompt"]
    assert [s.source for s in story.shots] == ["director"] * len(tl.clips) and story.warnings == []


def test_overlapping_frame_span_is_named_in_the_retry():
    def spans(p):
        shots = json.loads(good_shots(p))["shots"]
        shots[2]["frame_start"] = 100  # clip 2 starts at frame 160
        return json.dumps({"shots": shots})

    replies = iter([spans, good_shots])
    m = scripted(shots=lambda p: next(replies)(p))
    run(m)
    assert re.search(r"shots\[2\]\.frame_start: 100 overlaps the previous shot", m.calls[-1]["prompt"])


def test_missing_optional_fields_are_filled_by_rules_with_a_warning():
    m = scripted(shots=lambda p: good_shots(p, drop=("camera",)))
    story, tl = run(m)
    assert len(m.calls) == 2
    assert all(s.camera and s.camera != "close-up" for s in story.shots)
    assert any(w == f"camera missing in shots 0-{len(tl.clips) - 1}: filled by rules" for w in story.warnings)


def test_wrong_shot_count_retries_then_keeps_good_shots_and_fills_the_rest():
    def short(p):
        return json.dumps({"shots": json.loads(good_shots(p))["shots"][:2]})

    m = scripted(shots=short)
    story, tl = run(m)  # 9 s -> 3 sub-clips
    shot_calls = [c for c in m.calls if "Plan shots" in c["prompt"]]
    assert len(shot_calls) == 2 and "2 shots for 3 sub-clips" in shot_calls[1]["prompt"]
    assert [s.source for s in story.shots] == ["director", "director", "rules"]
    assert any(w.startswith("shots 2 were planned by rules") and "2 shots for 3 sub-clips" in w for w in story.warnings)
    assert_covers(story, tl)


def test_missing_prompt_retry_then_fallback():
    m = scripted(shots=lambda p: good_shots(p, drop=("prompt",)), global_reply="no idea")
    story, tl = run(m)
    assert len(m.calls) == 4  # global twice, shots twice
    assert "shots[0].prompt: missing" in m.calls[-1]["prompt"]
    assert all(s.source == "rules" for s in story.shots)
    assert any(w.startswith("global character, scene") for w in story.warnings)
    assert any(w.startswith("shots 0-2 were planned by rules") for w in story.warnings)
    assert_covers(story, tl)


def test_artist_timing_wins_over_the_model():
    story, tl = run(scripted(), seconds=40.0, instruction="Talk about cats, smile at 0:30")
    hit = [s for s in story.shots if s.source == "artist"]
    assert len(hit) == 1 and tl.frame_time(hit[0].frame_start) <= 30.0 < tl.frame_time(hit[0].frame_end)
    assert hit[0].expression == "smile" and hit[0].action == "nods"


def test_thirty_minutes_planned_in_batches():
    tl = plan_timeline(30 * 60 * SR, SR, 25, 81)
    totals, updates = [], []

    class Count(Progress):
        def update(self, n=1, preview=None):
            updates.append(n)

    rt = Runtime(
        torch.device("cpu"),
        show_progress=False,
        progress_factory=lambda total, desc: totals.append((total, desc)) or Count(),
    )
    m = scripted()
    wav = torch.zeros(1, tl.num_samples)
    wav[0, : 60 * SR] = 0.1
    story = direct(m, torch.rand(16, 16, 3), wav, SR, "a long lecture", tl, DirectorSettings(shots_per_batch=16), rt)
    batches = math.ceil(len(tl.clips) / 16)
    assert len(m.calls) == 1 + batches
    assert totals == [(1 + batches, "director")] and sum(updates) == 1 + batches
    assert max(len(c["prompt"]) for c in m.calls) < 6000  # each pass stays small
    assert len(story.shots) == len(tl.clips) and all(s.source == "director" for s in story.shots)


def test_interrupt_between_passes():
    calls = []

    def stop():
        calls.append(1)
        if len(calls) > 1:
            raise Interrupted("stop")

    m = scripted()
    tl = plan_timeline(9 * SR, SR, 25, 81)
    rt = cpu_runtime(interrupt_check=stop)
    with pytest.raises(Interrupted):
        direct(m, torch.rand(16, 16, 3), torch.zeros(1, tl.num_samples), SR, "", tl, DirectorSettings(), rt)
    assert len(m.calls) == 1


def test_director_without_a_model_is_rule_based():
    story, tl = run(None, instruction="be calm, at 0:04 look left")
    assert_covers(story, tl)
    assert [s.source for s in story.shots] == ["rules", "artist", "rules"]


def test_bad_inputs_name_the_input():
    with pytest.raises(InputError, match="image"):
        tl = plan_timeline(SR, SR, 25)
        direct(None, torch.rand(3, 16, 16), torch.zeros(1, SR), SR, "", tl, DirectorSettings(), Runtime())
    with pytest.raises(InputError, match="shots_per_batch"):
        run(None, shots_per_batch=0)


def test_audio_summary_finds_loudness_and_pauses():
    tl = plan_timeline(10 * SR, SR, 25, 81)
    wav = 0.3 * torch.sin(torch.arange(tl.num_samples) * 0.07)[None].repeat(2, 1)
    wav[:, int(4.0 * SR) : int(5.0 * SR)] = 0
    wav[:, int(6.4 * SR) :] *= 0.05
    s = summarize_audio(wav, SR, tl)
    assert s.duration_s == pytest.approx(10.0)
    assert len(s.pauses) == 1 and s.pauses[0][0] == pytest.approx(4.0, abs=0.06)
    assert s.pauses[0][1] == pytest.approx(5.0, abs=0.06)
    assert s.clip_db[0] == pytest.approx(20 * math.log10(0.3 / math.sqrt(2)), abs=0.5)
    assert s.clip_db[2] < s.clip_db[0] - 20
    assert "1 pauses: 0:04.0-0:05.0" in s.describe(tl)


# -- what a model that hears gets ------------------------------------------------------


def test_excerpt_spans_stay_within_the_budget():
    assert excerpt_spans([(0.0, 9.0)], 30.0, 30.0) == [(0.0, 9.0)]
    assert excerpt_spans([(0.0, 50.0)], 60.0, 30.0) == [(0.0, 25.0), (25.0, 50.0)]  # pieces the extractor keeps
    assert excerpt_spans([(0.0, 600.0)], 30.0, 30.0, parts_if_long=3) == [(95.0, 105.0), (295.0, 305.0), (495.0, 505.0)]
    shots = [(3.2 * i, 3.2 * (i + 1)) for i in range(16)]
    got = excerpt_spans(shots, 32.0, 30.0)
    assert len(got) == 16 and all(a >= p and b <= q for (a, b), (p, q) in zip(got, shots, strict=True))
    assert sum(b - a for a, b in got) == pytest.approx(32.0)
    assert excerpt_spans(shots, 0.0, 30.0) == [] and excerpt_spans(shots, 30.0, 0.0) == []


def test_a_model_that_hears_gets_16khz_excerpts_of_each_pass():
    m = scripted(hears=True)
    run(m, seconds=9.0, sr=48000, shots_per_batch=2)  # 3 sub-clips -> global + 2 shot passes
    glob, first, second = m.calls
    assert [(e.start_s, e.end_s) for e in glob["audio"]] == [(0.0, 9.0)]
    assert glob["audio"][0].samples.dtype == np.float32 and len(glob["audio"][0].samples) == 9 * 16000
    assert first["audio"][0].start_s == 0.0 and first["audio"][-1].end_s == pytest.approx(6.44)  # to frame 161
    assert second["audio"][0].start_s == pytest.approx(6.4) and second["audio"][-1].end_s == pytest.approx(9.0)
    assert "You also hear the audio itself" in glob["prompt"] and "You also hear" in first["prompt"]
    deaf = scripted()
    run(deaf, seconds=9.0)
    assert all(c["audio"] is None for c in deaf.calls) and "You also hear" not in deaf.calls[0]["prompt"]
    muted = scripted(hears=True)
    run(muted, seconds=9.0, audio_seconds=0)
    assert all(c["audio"] is None for c in muted.calls)


def test_long_audio_is_heard_in_bounded_excerpts():
    m = scripted(hears=True)
    tl = plan_timeline(10 * 60 * SR, SR, 25, 81)  # 10 minutes, 186 sub-clips
    wav = 0.1 * torch.sin(torch.arange(tl.num_samples) * 0.05)[None]
    rt = cpu_runtime()
    direct(m, torch.rand(16, 16, 3), wav, SR, "", tl, DirectorSettings(), rt)
    glob = m.calls[0]["audio"]
    assert len(glob) == 3 and all(e.end_s - e.start_s == pytest.approx(10.0) for e in glob)
    assert glob[0].start_s > 0 and glob[-1].end_s < 600  # one from each third, centred
    for call in m.calls[1:]:
        assert sum(e.end_s - e.start_s for e in call["audio"]) <= 30.0 + 1e-6
    assert len(m.calls[1]["audio"]) == 16  # 16 shots of 3.24 s exceed 30 s: one excerpt per shot

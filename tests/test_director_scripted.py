"""MLLM Director with scripted replies (a labelled stand-in): JSON parsing and repair, retries, rule
fallbacks, artist timing, batching, interrupts, the audio summary and the audio excerpts a model that
hears gets. (The real tiny Qwen2.5-VL / Qwen3-VL / Qwen2.5-Omni models: ``test_director_mllm.py``.)"""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import torch

from avatar_cascade.artefacts.timeline import plan_timeline
from avatar_cascade.core.errors import InputError, Interrupted
from avatar_cascade.core.runtime import Progress, Runtime
from avatar_cascade.media import AudioTrack
from avatar_cascade.stages.director.audio import excerpt_spans, summarize_audio
from avatar_cascade.stages.director.director import direct
from avatar_cascade.stages.director.json_output import parse_model_json, repair_json
from avatar_cascade.stages.director.settings import DirectorSettings
from tests.helpers import SR, assert_covers, cpu_runtime
from tests.helpers import run_director as run

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
    settings = DirectorSettings(shots_per_batch=16)
    story = direct(m, torch.rand(16, 16, 3), AudioTrack(wav, SR), "a long lecture", tl, settings, rt)
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
        direct(m, torch.rand(16, 16, 3), AudioTrack(torch.zeros(1, tl.num_samples), SR), "", tl, DirectorSettings(), rt)
    assert len(m.calls) == 1


def test_director_without_a_model_is_rule_based():
    story, tl = run(None, instruction="be calm, at 0:04 look left")
    assert_covers(story, tl)
    assert [s.source for s in story.shots] == ["rules", "artist", "rules"]


def test_bad_inputs_name_the_input():
    with pytest.raises(InputError, match="image"):
        tl = plan_timeline(SR, SR, 25)
        direct(None, torch.rand(3, 16, 16), AudioTrack(torch.zeros(1, SR), SR), "", tl, DirectorSettings(), Runtime())
    with pytest.raises(InputError, match="audio.*AudioTrack"):  # a bare waveform has no sample rate
        direct(None, torch.rand(16, 16, 3), torch.zeros(1, SR), "", tl, DirectorSettings(), Runtime())
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
    direct(m, torch.rand(16, 16, 3), AudioTrack(wav, SR), "", tl, DirectorSettings(), rt)
    glob = m.calls[0]["audio"]
    assert len(glob) == 3 and all(e.end_s - e.start_s == pytest.approx(10.0) for e in glob)
    assert glob[0].start_s > 0 and glob[-1].end_s < 600  # one from each third, centred
    for call in m.calls[1:]:
        assert sum(e.end_s - e.start_s for e in call["audio"]) <= 30.0 + 1e-6
    assert len(m.calls[1]["audio"]) == 16  # 16 shots of 3.24 s exceed 30 s: one excerpt per shot

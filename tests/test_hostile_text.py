"""Adversarial suite: bad text in the instruction.

Expected outcomes: the cue parser's work is linear in the prompt (a 10,000-digit run is no longer
quadratic: checked structurally, the wall-time numbers are in ``benchmarks/bench_cue_parser.py``);
"X at 2s and Y at 0:03.5" places each cue at its own time (documented handling); a prompt longer than
the MLLM's context is cut with a visible warning (logged and in the storyline); a timed cue past the
end is warned about on the console, not only in ``storyline.json``.
"""

from __future__ import annotations

import logging
import re

import pytest
import torch

from avatar_cascade.stages.director import cues
from avatar_cascade.stages.director.cues import parse_timed_instructions, strip_timed_instructions


@pytest.mark.parametrize(
    "text, expected",
    [
        ("wave at 2s and nod at 0:03.5", [(2.0, None, "wave"), (3.5, None, "nod")]),
        ("smile at 0:02 and wink at 0:04", [(2.0, None, "smile"), (4.0, None, "wink")]),
        ("smile at 0:02, wink at 0:04", [(2.0, None, "smile"), (4.0, None, "wink")]),
        ("wave at 2s and then nod at 3s", [(2.0, None, "wave"), (3.0, None, "nod")]),
        ("nod between 10 and 20 seconds and smile at 0:30", [(10.0, 20.0, "nod"), (30.0, None, "smile")]),
        ("look left during 0:10-0:20", [(10.0, 20.0, "look left")]),
        ("look at 2 people and smile", []),  # a bare number is no time
    ],
)
def test_each_cue_joined_by_and_gets_its_own_time(text, expected):
    got = [(c.start_s, c.end_s, c.text) for c in parse_timed_instructions(text)]
    assert got == expected


def test_the_cues_land_on_their_own_shots():
    """The issue's case: the second cue is not pinned to the first cue's shot."""
    from avatar_cascade.artefacts.timeline import plan_timeline
    from avatar_cascade.stages.director.cues import apply_artist_instructions
    from avatar_cascade.stages.director.rules import rule_based_storyline

    tl = plan_timeline(16000 * 6, 16000, 16, clip_frames=17)  # clips of 1 s
    story = rule_based_storyline("", tl, [-20.0] * len(tl.clips))
    out = apply_artist_instructions(story, "wave at 2s and nod at 0:04.5", tl)
    acted = {i: s.action for i, s in enumerate(out.shots) if s.source == "artist"}
    wave = next(i for i, a in acted.items() if a == "wave")
    nod = next(i for i, a in acted.items() if a == "nod")
    assert wave != nod
    assert tl.clips[wave].frame_start <= 32 and tl.clips[nod].frame_start <= 72 < tl.clips[nod].frame_start + 17


def test_every_time_token_starts_at_the_start_of_a_number():
    """Structural linearity check: no regex that reads a time may begin a match inside a run of digits
    (that is what made a 10,000-digit prompt cost ~70 s: an O(n) attempt at each of n positions)."""
    assert cues._TOKEN.startswith(cues._START)
    assert f"\\s*{cues._START}(" in cues._POINT.pattern
    assert cues._RANGE.pattern.count(cues._START) == 2  # both ends of a span
    run = "7" * 5000
    for rx in (cues._RANGE, cues._POINT, re.compile(cues._TOKEN)):
        assert [m.start() for m in rx.finditer(f"x {run} at {run}s y")] in ([], [2], [2, 5006], [5003])


def test_a_long_digit_run_is_still_parsed_right():
    text = "1" * 10_000 + ", smile at 0:02"
    assert [(c.start_s, c.text) for c in parse_timed_instructions(text)][-1] == (2.0, "smile")
    assert strip_timed_instructions(text).startswith("1" * 100)


def test_a_cue_past_the_end_is_warned_on_the_console_and_in_the_storyline(caplog):
    from avatar_cascade.stages.director.director import direct
    from avatar_cascade.stages.director.settings import DirectorSettings
    from tests.helpers import aligned_tone, cpu_runtime

    aligned = aligned_tone(2.0, 16, 17)
    with caplog.at_level(logging.WARNING):
        story = direct(
            None, torch.rand(32, 32, 3), aligned.audio, "wave at 0:30", aligned.timeline, DirectorSettings(),
            cpu_runtime(),
        )  # fmt: skip
    assert any("after the end of the audio" in w for w in story.warnings)
    assert any("after the end of the audio" in r.getMessage() for r in caplog.records)


def test_a_prompt_beyond_the_mllm_context_is_cut_with_a_visible_warning(demo_models_dir, caplog):
    """A 100 kB prompt: the model reads its first tokens only (context minus reply and reserve); warned."""
    from avatar_cascade.demo.models import MLLM_FOLDER
    from avatar_cascade.models.mllm import load_mllm
    from avatar_cascade.stages.director.director import fit_instruction
    from avatar_cascade.stages.director.settings import DirectorSettings

    mllm = load_mllm(demo_models_dir / "LLM" / MLLM_FOLDER)
    assert mllm.context_tokens == 8192
    long = "The presenter speaks warmly about gardens and rivers. " * 2000  # ~110 kB
    settings = DirectorSettings()
    with caplog.at_level(logging.WARNING):
        told, warned = fit_instruction(mllm, long, settings)
    n_told = mllm.fit_text(told, 10**9)[1]
    reply = max(settings.max_new_tokens, settings.tokens_per_shot * settings.shots_per_batch)
    assert n_told <= mllm.context_tokens - reply - 2048 + 8  # decode/re-encode may merge a few tokens
    assert long.startswith(told[:1000]) and len(told) < len(long) // 5
    assert warned and "context" in warned[0] and any("context" in r.getMessage() for r in caplog.records)
    assert fit_instruction(mllm, "smile at 0:02", settings) == ("smile at 0:02", [])


def test_the_director_sends_the_cut_instruction_and_keeps_the_warning(demo_models_dir):
    """Through ``direct()`` with the real tiny MLLM: no prompt it generates from exceeds the context, and the
    storyline carries the cut warning first."""
    from avatar_cascade.demo.models import MLLM_FOLDER
    from avatar_cascade.models.mllm import load_mllm
    from avatar_cascade.stages.director.director import direct
    from avatar_cascade.stages.director.settings import DirectorSettings
    from tests.helpers import aligned_tone, cpu_runtime

    mllm = load_mllm(demo_models_dir / "LLM" / MLLM_FOLDER)
    sizes = []
    real = type(mllm).generate

    def spy(self, text, *a, **k):
        sizes.append(self.fit_text(text, 10**9)[1])
        return real(self, text, *a, **k)

    type(mllm).generate = spy
    try:
        aligned = aligned_tone(1.0, 16, 17)
        settings = DirectorSettings(max_new_tokens=8, tokens_per_shot=1)
        long = "The presenter speaks warmly about gardens and rivers. " * 2000
        story = direct(mllm, torch.rand(64, 64, 3), aligned.audio, long, aligned.timeline, settings, cpu_runtime())
    finally:
        type(mllm).generate = real
    assert sizes and max(sizes) < mllm.context_tokens
    assert "context" in story.warnings[0]

"""Timed-cue parser and rule-based Director on hostile prompts (CPU, no model).

Wall time of ``direct(None, ...)`` (the Director stage without an MLLM: audio summary, rules, timed
cues) for a prompt holding a run of 10,000 / 20,000 / 100,000 digits before "smile at 0:02", and of the
cue parser alone. Before issue 20 the parser tried an O(n) match at each of the n digit positions
(10,000 digits: ~70 s); every time token now starts only at the start of a number (linear).

    python -m benchmarks.bench_cue_parser
"""

from __future__ import annotations

import time

from benchmarks.harness import Case, main


def run(digits: int) -> dict:
    import torch

    from avatar_cascade.artefacts.timeline import plan_timeline
    from avatar_cascade.core.runtime import Runtime
    from avatar_cascade.media import AudioTrack
    from avatar_cascade.stages.director.cues import parse_timed_instructions
    from avatar_cascade.stages.director.director import direct
    from avatar_cascade.stages.director.settings import DirectorSettings

    prompt = "1" * digits + ", smile at 0:02"
    t0 = time.perf_counter()
    cues = parse_timed_instructions(prompt)
    parse_s = time.perf_counter() - t0
    wave = 0.1 * torch.sin(torch.arange(16000 * 4) / 8.0)[None]
    timeline = plan_timeline(wave.shape[-1], 16000, 16, 17)
    audio = AudioTrack(wave, 16000)
    t0 = time.perf_counter()
    direct(None, torch.rand(64, 64, 3), audio, prompt, timeline, DirectorSettings(), Runtime(torch.device("cpu")))
    return {
        "digits": digits,
        "cues": len(cues),
        "parse_s": round(parse_s, 4),
        "director_s": round(time.perf_counter() - t0, 4),
    }


CASES = [Case(f"digits_{n}", run, {"digits": n}) for n in (10_000, 20_000, 100_000)]

if __name__ == "__main__":
    main("bench_cue_parser", CASES)

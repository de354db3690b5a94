"""MLLM Director benchmark on CPU with the tiny test models.

Wall time of ``direct()`` for 1, 10 and 30-minute timelines (81-frame sub-clips at 25 fps,
16 shots per pass), the share of it spent in the model's ``generate()``, tokens in / out
(audio tokens separately for the Omni thinker, which hears up to 30 s per pass) and the
process's peak RSS. The tiny models write gibberish, so every pass is retried once and
every shot ends up planned by rules: this measures the Director's own overhead and the
worst case of model calls (2 per pass), not plan quality. Token budgets are cut to
``max_new_tokens=64, tokens_per_shot=4`` so the 30-minute case stays within minutes on
a CPU (a real model writes about 60-90 tokens per shot).

    python -m benchmarks.bench_director [--only omni]
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from benchmarks.harness import Case, main

SR = 16000
FPS = 25
CLIP_FRAMES = 81


def _speech_like(seconds: float):
    """A 16 kHz tone in 2 s bursts with 0.5 s pauses (loudness varies slowly), ``[1, T]``."""
    import torch

    t = torch.arange(int(seconds * SR)) / SR
    on = (t % 2.5) < 2.0
    level = 0.05 + 0.25 * (0.5 + 0.5 * torch.sin(2 * torch.pi * t / 60.0))
    return (level * on * torch.sin(2 * torch.pi * 180.0 * t))[None]


def run_director(minutes: float, model: str) -> dict:
    import torch

    from avatar_cascade.artefacts.timeline import plan_timeline
    from avatar_cascade.core.runtime import Runtime
    from avatar_cascade.demo.tiny_mllm import write_tiny_qwen25_omni_thinker, write_tiny_qwen25_vl
    from avatar_cascade.media import AudioTrack
    from avatar_cascade.models.mllm import load_mllm
    from avatar_cascade.stages.director.director import direct
    from avatar_cascade.stages.director.settings import DirectorSettings

    wave = _speech_like(minutes * 60)
    timeline = plan_timeline(wave.shape[-1], SR, FPS, CLIP_FRAMES)
    runtime = Runtime(torch.device("cpu"), show_progress=False)
    mllm, load_s = None, 0.0
    totals = {"calls": 0, "tokens_in": 0, "audio_tokens": 0, "tokens_out": 0, "generate_s": 0.0}
    with tempfile.TemporaryDirectory() as tmp:
        if model != "none":
            t0 = time.perf_counter()
            writer = write_tiny_qwen25_omni_thinker if model == "omni" else write_tiny_qwen25_vl
            mllm = load_mllm(writer(Path(tmp) / model), dtype=torch.float32)
            load_s = time.perf_counter() - t0
            real = type(mllm).generate

            def generate(*args, **kwargs):
                text, stats = real(mllm, *args, **kwargs)
                totals["calls"] += 1
                for k in ("tokens_in", "audio_tokens", "tokens_out"):
                    totals[k] += stats[k]
                totals["generate_s"] += stats["seconds"]
                return text, stats

            mllm.generate = generate
        t0 = time.perf_counter()
        story = direct(
            mllm, torch.rand(256, 256, 3), AudioTrack(wave, SR), "A lively lecture, smile at 0:30", timeline,
            DirectorSettings(seed=0, max_new_tokens=64, tokens_per_shot=4), runtime,
        )  # fmt: skip
        director_s = time.perf_counter() - t0
    by_rules = sum(s.source == "rules" for s in story.shots)
    return {
        "clips": len(timeline.clips),
        "load_s": round(load_s, 2),
        "director_s": round(director_s, 2),
        **{k: (round(v, 2) if isinstance(v, float) else v) for k, v in totals.items()},
        "generate_share": round(totals["generate_s"] / director_s, 3) if director_s else 0.0,
        "shots_by_rules": by_rules,
    }


CASES = [
    Case("rules_30min", run_director, {"minutes": 30, "model": "none"}),
    Case("qwen25_vl_1min", run_director, {"minutes": 1, "model": "vl"}),
    Case("qwen25_vl_10min", run_director, {"minutes": 10, "model": "vl"}),
    Case("qwen25_vl_30min", run_director, {"minutes": 30, "model": "vl"}),
    Case("omni_thinker_1min", run_director, {"minutes": 1, "model": "omni"}),
    Case("omni_thinker_10min", run_director, {"minutes": 10, "model": "omni"}),
    Case("omni_thinker_30min", run_director, {"minutes": 30, "model": "omni"}),
]

if __name__ == "__main__":
    main("bench_director", CASES)  # not __name__: under `python -m` it is "__main__"

"""Audio Aligner: time and peak memory to align 1, 10 and 30 minutes of 48 kHz stereo audio on CPU.

Cases: timeline + seam snapping only (no encoder); with the tiny demo wav2vec2; with a
base-size wav2vec2 (``Wav2Vec2Config()`` defaults, ~95 M parameters, random weights).
Every case runs the whole stage as the node does (checks, seam snapping at 8 frames,
resampling to 16 kHz, features at 25 fps in InfiniteTalk's "video" mode) and then draws
the timeline picture. The audio is synthetic speech-like sound (syllable-rate bursts of a
tone with noise and pauses), generated inside the case, so its size counts in peak RSS.

Run: ``python -m benchmarks.bench_audio_aligner [--only NAME]``.
"""

from __future__ import annotations

import math
import time

from benchmarks.harness import Case, main

SR = 48000
FPS = 25


def _speech(minutes: float):
    """Stereo 48 kHz speech-like audio ``[2, T]`` float32, made in 10 s blocks (deterministic)."""
    import torch

    n = int(minutes * 60 * SR)
    out = torch.empty(2, n)
    g = torch.Generator().manual_seed(0)
    block = 10 * SR
    for a in range(0, n, block):
        t = torch.arange(a, min(n, a + block), dtype=torch.float64) / SR
        env = (0.5 + 0.5 * torch.sin(2 * math.pi * 3.3 * t)) * (torch.sin(2 * math.pi * 0.23 * t) > -0.8)
        x = env * (torch.sin(2 * math.pi * 180 * t) + 0.3 * torch.randn(t.numel(), generator=g, dtype=torch.float64))
        out[0, a : a + t.numel()] = (0.3 * x).float()
        out[1, a : a + t.numel()] = (0.25 * x).float()
    return out


def _encoder(kind: str):
    import torch

    from avatar_cascade.models.audio_encoder import AudioEncoder

    if kind == "none":
        return None
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    if kind == "tiny":
        from avatar_cascade.models.audio_encoder import load_bundled_config

        cfg = load_bundled_config("avatar-cascade-tiny-wav2vec2")
        cfg.pop("architectures", None)
        config = Wav2Vec2Config(**cfg)
    else:
        config = Wav2Vec2Config()  # wav2vec2-base sizes: hidden 768, 12 layers, GroupNorm CNN
    torch.manual_seed(0)
    model = Wav2Vec2Model(config).eval().requires_grad_(False)
    return AudioEncoder(model=model, identity=f"bench-{kind}")


def align_case(minutes: float, encoder: str) -> dict:
    import torch

    from avatar_cascade.core.runtime import Runtime
    from avatar_cascade.media import AudioTrack
    from avatar_cascade.media.timeline_plot import render_timeline
    from avatar_cascade.stages.aligner.aligner import align_audio
    from avatar_cascade.stages.aligner.settings import AlignerSettings

    enc = _encoder(encoder)
    audio = AudioTrack(_speech(minutes), SR)
    runtime = Runtime(device=torch.device("cpu"), show_progress=False)
    t0 = time.perf_counter()
    settings = AlignerSettings(fps=FPS, clip_frames=81, snap_seams_frames=8, max_duration_s=None)
    aligned = align_audio(audio, settings, runtime, audio_encoder=enc)
    align_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    render_timeline(aligned)
    plot_s = time.perf_counter() - t1
    tl = aligned.timeline
    feats = aligned.features
    return {
        "align_s": round(align_s, 2),
        "plot_s": round(plot_s, 2),
        "x_realtime": round(minutes * 60 / align_s, 2),
        "frames": tl.num_frames,
        "clips": len(tl.clips),
        "seams_moved": len(tl.snapped_seams),
        "features_mb": 0 if feats is None else round(feats.numel() * 2 / 2**20, 1),
        "params_m": 0 if enc is None else round(sum(p.numel() for p in enc.model.parameters()) / 1e6, 2),
        "threads": torch.get_num_threads(),
    }


CASES = [
    Case("timeline-only-1min", align_case, {"minutes": 1, "encoder": "none"}),
    Case("timeline-only-30min", align_case, {"minutes": 30, "encoder": "none"}),
    Case("tiny-1min", align_case, {"minutes": 1, "encoder": "tiny"}),
    Case("tiny-10min", align_case, {"minutes": 10, "encoder": "tiny"}),
    Case("tiny-30min", align_case, {"minutes": 30, "encoder": "tiny"}),
    Case("base-1min", align_case, {"minutes": 1, "encoder": "base"}),
    Case("base-10min", align_case, {"minutes": 10, "encoder": "base"}),
    Case("base-30min", align_case, {"minutes": 30, "encoder": "base"}),
]

if __name__ == "__main__":
    main(__name__, CASES)

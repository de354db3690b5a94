"""The audio as the Director's model gets it: measured in text, and heard in excerpts.

Every model is told what the Director measures in the track (:class:`AudioSummary`:
duration, per-shot loudness, pauses, a loudness contour). A model that hears
(Qwen2.5-Omni) also gets the real audio, mono and resampled to its feature
extractor's rate (16 kHz), in a bounded number of seconds per pass
(:func:`excerpt_spans`) so a 30-minute track never floods the context:

* global pass: the whole track when it fits the budget, else one excerpt centred in
  each third of the track (beginning, middle, end), budget / 3 seconds each;
* shot pass: the batch's own time span when it fits, else one excerpt centred in each
  shot of the batch, budget / shots seconds each.

No lyrics, words or song structure are analysed: "during the chorus" means nothing
here unless the model hears it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from avatar_cascade.artefacts.storyline import format_time
from avatar_cascade.artefacts.timeline import SubClip, Timeline
from avatar_cascade.core.errors import InputError
from avatar_cascade.models.mllm import AudioExcerpt

MAX_PAUSES_LISTED = 24
GLOBAL_PARTS = 3  # excerpts of a track too long to hear whole


@dataclass
class AudioSummary:
    """What the Director measures in the audio (seconds, dBFS)."""

    duration_s: float
    clip_db: list[float]  # RMS energy of each sub-clip's own audio, dBFS
    pauses: list[tuple[float, float]]  # low-energy spans (start, end), seconds

    def describe(self, timeline: Timeline) -> str:
        """The whole track in a few lines (for the global pass)."""
        n = len(self.clip_db)
        parts = min(10, n)
        chunks = [self.clip_db[k * n // parts : (k + 1) * n // parts] for k in range(parts)]  # none empty
        curve = [sum(c) / len(c) for c in chunks]
        shown = ", ".join(f"{format_time(a)}-{format_time(b)}" for a, b in self.pauses[:MAX_PAUSES_LISTED])
        more = f" (first {MAX_PAUSES_LISTED} listed)" if len(self.pauses) > MAX_PAUSES_LISTED else ""
        return (
            f"duration {format_time(self.duration_s)} ({self.duration_s:.1f} s), {n} shots of about "
            f"{float(timeline.clip_frames / timeline.fps):.1f} s\n"
            f"loudness over time in {parts} equal parts (dBFS): {', '.join(f'{v:.0f}' for v in curve)}\n"
            f"{len(self.pauses)} pauses{more}: {shown or 'none'}"
        )

    def clip_line(self, clip: SubClip, timeline: Timeline, level: str) -> str:
        """One line per shot (for the shot passes)."""
        a, b = shot_span(clip, timeline)
        inside = [f"{format_time(p)}-{format_time(q)}" for p, q in self.pauses if p < b and q > a]
        return (
            f"shot {clip.index}: {format_time(a)}-{format_time(b)}, loudness {self.clip_db[clip.index]:.0f} dBFS "
            f"({level}), pauses: {', '.join(inside) or 'none'}"
        )


def shot_span(clip: SubClip, timeline: Timeline) -> tuple[float, float]:
    """Seconds covered by a sub-clip: from its first frame to the end of its last frame."""
    return float(timeline.frame_time(clip.frame_start)), float(timeline.frame_time(clip.frame_end + 1))


def mono_of(waveform: torch.Tensor) -> torch.Tensor:
    """``[C, T]`` or ``[T]`` -> ``[T]`` float32 on the CPU (channel mean)."""
    if waveform.dim() == 1:
        return waveform.float().cpu()
    return (waveform[0] if len(waveform) == 1 else waveform.float().mean(0)).float().cpu()


def summarize_audio(
    waveform: torch.Tensor, sample_rate: int, timeline: Timeline, window_s: float = 0.05, min_pause_s: float = 0.3
) -> AudioSummary:
    """Measure duration, per-clip RMS energy (dBFS) and pauses (>= ``min_pause_s`` s) of ``waveform`` [C, T]."""
    mono = mono_of(waveform)
    power = mono.square()  # one pass over the audio; everything below reads it
    scale = sample_rate / timeline.sample_rate  # the waveform may be at another rate than the timeline

    def db(mean_square: torch.Tensor) -> torch.Tensor:
        return 10.0 * torch.log10(mean_square.clamp_min(1e-10))

    # owned sample ranges tile the audio: one reduceat sums every clip in a single pass
    bounds = [min(int(c.sample_range[0] * scale), power.numel() - 1) for c in timeline.clips]
    end = max(bounds[-1] + 1, min(int(timeline.clips[-1].sample_range[1] * scale), power.numel()))
    sums = np.add.reduceat(power[:end].numpy(), bounds).astype(np.float64)
    counts = np.maximum(np.diff(np.array(bounds + [end])), 1)
    clip_db = db(torch.from_numpy(sums / counts)).tolist()
    w = max(1, int(window_s * sample_rate))
    n = mono.numel() // w
    pauses: list[tuple[float, float]] = []
    if n:
        win = db(power[: n * w].view(n, w).mean(1))
        threshold = max(-55.0, float(torch.quantile(win, 0.9)) - 30.0)
        quiet = (win < threshold).tolist() + [False]
        start = None
        for k, q in enumerate(quiet):
            if q and start is None:
                start = k
            elif not q and start is not None:
                if (k - start) * w / sample_rate >= min_pause_s:
                    pauses.append((start * w / sample_rate, min(k * w, mono.numel()) / sample_rate))
                start = None
    return AudioSummary(duration_s=mono.numel() / sample_rate, clip_db=clip_db, pauses=pauses)


def check_audio(waveform: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """Accept ``[C, T]``, ``[T]`` or ComfyUI's ``[1, C, T]``; returns ``[C, T]`` or raises InputError."""
    if isinstance(waveform, torch.Tensor) and waveform.dim() == 3:
        waveform = waveform[0]
    if isinstance(waveform, torch.Tensor) and waveform.dim() == 1:
        waveform = waveform[None]
    if not isinstance(waveform, torch.Tensor) or waveform.dim() != 2 or waveform.shape[-1] == 0:
        shape = tuple(waveform.shape) if isinstance(waveform, torch.Tensor) else type(waveform).__name__
        raise InputError(
            "audio",
            shape,
            "the waveform must be [channels, samples] with at least one sample",
            "connect the same audio as the Audio Aligner",
        )
    if not isinstance(sample_rate, int) or sample_rate <= 0:
        raise InputError("sample_rate", sample_rate, "must be a positive whole number of Hz", "pass the audio's rate")
    return waveform


# -- real audio for a model that hears --------------------------------------------------


def _centred(a: float, b: float, length: float) -> tuple[float, float]:
    mid = (a + b) / 2
    return max(a, mid - length / 2), min(b, mid + length / 2)


def _pieces(a: float, b: float, piece_s: float) -> list[tuple[float, float]]:
    n = max(1, int(np.ceil((b - a) / piece_s - 1e-9)))
    return [(a + (b - a) * k / n, a + (b - a) * (k + 1) / n) for k in range(n)]


def excerpt_spans(
    spans: list[tuple[float, float]], budget_s: float, piece_s: float, parts_if_long: int = 1
) -> list[tuple[float, float]]:
    """Which stretches of the track (seconds) a pass hears, at most ``budget_s`` in all.

    Args:
        spans: consecutive spans the pass is about (one per shot, or the whole track).
        budget_s: seconds of audio the pass may hear; 0 hears nothing.
        piece_s: the longest single excerpt the model's feature extractor keeps.
        parts_if_long: when the spans are too long and there is only one, cut it into
            this many equal parts first (the global pass hears beginning, middle and end).

    Returns:
        The whole range ``spans[0][0]..spans[-1][1]`` in pieces of at most ``piece_s``
        when it fits the budget, else one centred excerpt per span of
        ``budget_s / len(spans)`` seconds.
    """
    if budget_s <= 0 or piece_s <= 0 or not spans:
        return []
    a, b = spans[0][0], spans[-1][1]
    if b - a <= budget_s + 1e-9:
        return _pieces(a, b, piece_s)
    if len(spans) == 1 and parts_if_long > 1:
        spans = _pieces(a, b, (b - a) / parts_if_long)
    share = min(budget_s / len(spans), piece_s)
    return [_centred(p, q, share) for p, q in spans]


def cut_excerpts(
    waveform: torch.Tensor, sample_rate: int, spans: list[tuple[float, float]], target_rate: int
) -> list[AudioExcerpt]:
    """Mono excerpts of ``waveform`` [C, T] for ``spans`` (seconds), resampled to ``target_rate`` Hz."""
    from avatar_cascade.media import resample

    mono = mono_of(waveform)
    out = []
    for a, b in spans:
        i, j = int(round(a * sample_rate)), min(int(round(b * sample_rate)), mono.numel())
        if j - i < 1:
            continue
        piece = resample(mono[i:j].contiguous(), sample_rate, target_rate)
        out.append(AudioExcerpt(start_s=a, end_s=b, samples=piece.numpy().astype(np.float32)))
    return out

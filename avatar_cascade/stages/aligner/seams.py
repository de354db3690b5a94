"""Seam placement: move sub-clip seams into pauses, so cuts fall between words.

Units: levels are mean power per output frame in dB relative to full scale
(a full-scale sine is about -3 dB); frames are output-video frame indices.

Rule (documented for artists): every clip stays 4n+1 frames long (at least 5),
so a seam can only move in steps of 4 frames. With a tolerance of ``N`` frames
each interior seam may move to any multiple of 4 within ``N`` frames of its
nominal position ``k * (clip_frames - 1)``; the number of clips never changes,
so the storyline keeps one shot per clip. Clip lengths therefore vary among 4n+1
values between ``clip_frames - 2N`` and ``clip_frames``: ``max_clip_frames``
caps them, by default at ``clip_frames`` itself (Wan's trained 81), so snapping
never makes a clip longer than the model was trained on. The seams are chosen
together (dynamic programming) to minimise the summed seam loudness, measured
over a short window around each seam (``pause_window_s``), plus a small penalty
per frame moved so that seams do not wander for nothing and a penalty per clip
whose length differs from the nominal one (equal lengths batch together).

With a voice-activity detector (Silero VAD, :mod:`avatar_cascade.models.detectors.vad`) the cost of a
seam position is its loudness plus ``SPEECH_PENALTY_DB`` x the mean speech probability over the same
window, so seams go where nobody speaks even when the pause is not quiet (breath, room noise, music
under the voice); loudness alone stays the fallback and breaks ties between equally silent places.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import torch

from avatar_cascade.artefacts.timeline import MIN_CLIP_FRAMES, last_clip_frames
from avatar_cascade.core.errors import InputError

log = logging.getLogger(__name__)

SILENCE_FLOOR_DB = -120.0
#: Penalty per frame a seam moves, in dB: a seam moves only for a real dip in loudness.
SHIFT_PENALTY_DB = 0.1
#: Penalty per clip and per latent frame (4 frames) its length differs from the nominal length, in dB.
LENGTH_PENALTY_DB = 1.0
#: A seam whose level is this far below the track's loud level counts as "in a pause".
PAUSE_DEPTH_DB = 30.0
#: Cost of a seam position whose whole window is speech (probability 1), in dB of loudness.
SPEECH_PENALTY_DB = 60.0
_BLOCK_SAMPLES = 1 << 22


def frame_sample_bounds(num_frames: int, fps: Fraction, sample_rate: int, num_samples: int) -> torch.Tensor:
    """``[num_frames + 1]`` int64: first sample of every frame, then ``num_samples`` (exact, clipped)."""
    f = torch.arange(num_frames + 1, dtype=torch.int64)
    b = (f * (sample_rate * fps.denominator)) // fps.numerator
    b[-1] = num_samples
    return b.clamp(max=num_samples)


def frame_levels_db(mono: torch.Tensor, fps: Fraction, sample_rate: int, num_frames: int) -> torch.Tensor:
    """Mean power of every output frame's own samples, in dB (float64 ``[num_frames]``).

    Frame ``f`` owns samples ``[S(f), S(f + 1))`` with the exact frame-to-sample
    mapping of the timeline (the last frame ends at the end of the audio). Works
    in blocks so a long track needs no second full-size copy.
    """
    total = mono.shape[-1]
    b = frame_sample_bounds(num_frames, fps, sample_rate, total)
    out = torch.empty(num_frames, dtype=torch.float64)
    f0 = 0
    while f0 < num_frames:
        # frames [f0, f1) whose samples fit in one block (at least one frame)
        f1 = int(torch.searchsorted(b, b[f0] + _BLOCK_SAMPLES, right=True)) - 1
        f1 = min(max(f1, f0 + 1), num_frames)
        s0, s1 = int(b[f0]), int(b[f1])
        seg = mono[s0:s1].to(torch.float64).square()
        csum = torch.cat([seg.new_zeros(1), torch.cumsum(seg, 0)])
        rel = b[f0 : f1 + 1] - s0
        sums = csum[rel[1:]] - csum[rel[:-1]]
        counts = (rel[1:] - rel[:-1]).clamp(min=1)
        out[f0:f1] = sums / counts
        f0 = f1
    return 10.0 * torch.log10(out.clamp(min=10 ** (SILENCE_FLOOR_DB / 10)))


def seam_levels_db(frame_db: torch.Tensor, radius_frames: int) -> torch.Tensor:
    """Loudness around every frame: mean power over frames ``[f - r, f + r]`` (clipped), in dB."""
    power = torch.pow(10.0, frame_db / 10.0)
    csum = torch.cat([power.new_zeros(1), torch.cumsum(power, 0)])
    n = power.numel()
    idx = torch.arange(n)
    lo = (idx - radius_frames).clamp(min=0)
    hi = (idx + radius_frames + 1).clamp(max=n)
    mean = (csum[hi] - csum[lo]) / (hi - lo)
    return 10.0 * torch.log10(mean.clamp(min=10 ** (SILENCE_FLOOR_DB / 10)))


def frame_speech(speech, fps: Fraction, num_frames: int) -> torch.Tensor:
    """Speech probability at the middle of every output frame (float64 ``[num_frames]``)."""
    times = (torch.arange(num_frames, dtype=torch.float64) + 0.5) * (fps.denominator / fps.numerator)
    return speech.at(times).double()


def window_mean(values: torch.Tensor, radius_frames: int) -> torch.Tensor:
    """Mean of ``values`` over frames ``[f - r, f + r]`` (clipped) for every frame."""
    csum = torch.cat([values.new_zeros(1), torch.cumsum(values.double(), 0)])
    n = values.numel()
    idx = torch.arange(n)
    lo, hi = (idx - radius_frames).clamp(min=0), (idx + radius_frames + 1).clamp(max=n)
    return (csum[hi] - csum[lo]) / (hi - lo)


def loud_reference_db(frame_db: torch.Tensor) -> float:
    """The track's loud level: the 95th percentile of the frame levels, in dB."""
    return float(torch.quantile(frame_db.float(), 0.95)) if frame_db.numel() else SILENCE_FLOOR_DB


def check_snap_tolerance(tolerance_frames: int) -> int:
    if not isinstance(tolerance_frames, int) or tolerance_frames < 0:
        raise InputError(
            "snap_seams_frames",
            tolerance_frames,
            "must be a whole number of frames >= 0",
            "use 0 (no snapping) or e.g. 8 (seams move up to 8 frames, in steps of 4)",
        )
    return tolerance_frames


@dataclass
class SnapResult:
    """Interior seams after snapping, with the level around each (dB) and the track's loud level."""

    seams: list[int]
    levels_db: list[float]
    reference_db: float
    speech: list[float] | None = None  # mean speech probability around each seam (with a VAD)

    @property
    def in_pause(self) -> list[bool]:
        return [lv < self.reference_db - PAUSE_DEPTH_DB for lv in self.levels_db]


def snap_seams(
    nominal: list[int],
    seam_db: torch.Tensor,
    num_frames: int,
    tolerance_frames: int,
    max_clip_frames: int | None = None,
    shift_penalty_db: float = SHIFT_PENALTY_DB,
    length_penalty_db: float = LENGTH_PENALTY_DB,
) -> list[int]:
    """Choose interior seams near ``nominal`` that sit in the quietest places.

    Args:
        nominal: nominal interior seams (starts of clips 1..K-1), multiples of 4.
        seam_db: loudness around every frame (``[num_frames]`` dB, see :func:`seam_levels_db`).
        num_frames: frames covering the audio.
        tolerance_frames: how far a seam may move, in frames (moves are multiples of 4).
        max_clip_frames: optional cap on every clip length (>= the nominal length).
        shift_penalty_db: cost per frame moved, in dB.
        length_penalty_db: cost per clip and per 4 frames its length differs from the nominal length, in dB.

    Returns:
        The chosen seams: same count, increasing, every clip 4n+1 frames (>= 5).
    """
    check_snap_tolerance(tolerance_frames)
    steps = tolerance_frames // 4
    if not nominal or steps == 0:
        return list(nominal)
    level = seam_db.to(torch.float64).numpy()
    offsets = np.arange(-steps, steps + 1) * 4
    gaps = np.diff(np.array([0, *nominal]))
    if max_clip_frames is None and not length_penalty_db and gaps.min() - 2 * tolerance_frames >= MIN_CLIP_FRAMES - 1:
        # Windows cannot collide: every seam independently takes its cheapest candidate.
        grid = np.array(nominal)[:, None] + offsets[None, :]
        ok = (grid >= 4) & (grid <= num_frames - 2)
        cost = np.where(ok, level[grid.clip(0, num_frames - 1)] + shift_penalty_db * np.abs(offsets)[None, :], np.inf)
        return [int(v) for v in grid[np.arange(len(nominal)), np.argmin(cost, axis=1)]]
    cands, costs = [], []
    for n in nominal:
        c = n + offsets
        c = c[(c >= 4) & (c <= num_frames - 2)]
        cands.append(c)
        costs.append(level[c] + shift_penalty_db * np.abs(c - n))

    def gap_ok(gap: np.ndarray) -> np.ndarray:
        ok = gap >= MIN_CLIP_FRAMES - 1
        if max_clip_frames is not None:
            ok &= gap <= max_clip_frames - 1
        return ok

    stride = int(gaps[0])

    def length_cost(gap: np.ndarray) -> np.ndarray:
        return length_penalty_db * np.abs(gap - stride) / 4

    # Viterbi over seams: best[j] = lowest cost of seams 1..k with seam k at cands[k][j].
    best = np.where(gap_ok(cands[0]), costs[0] + length_cost(cands[0]), np.inf)
    back: list[np.ndarray] = []
    for k in range(1, len(nominal)):
        gap = cands[k][None, :] - cands[k - 1][:, None]
        trans = np.where(gap_ok(gap), best[:, None] + length_cost(gap), np.inf)
        arg = np.argmin(trans, axis=0)
        back.append(arg)
        best = trans[arg, np.arange(len(cands[k]))] + costs[k]
    if max_clip_frames is not None:
        tail = np.array([last_clip_frames(num_frames, int(c)) for c in cands[-1]])
        best = np.where(tail <= max_clip_frames, best, np.inf)
    if not np.isfinite(best).any():  # only reachable with a max_clip_frames below the nominal length
        return list(nominal)
    j = int(np.argmin(best))
    chosen = [int(cands[-1][j])]
    for k in range(len(nominal) - 1, 0, -1):
        j = int(back[k - 1][j])
        chosen.append(int(cands[k - 1][j]))
    return chosen[::-1]


def snap_to_pauses(
    mono: torch.Tensor,
    sample_rate: int,
    fps: Fraction,
    num_frames: int,
    nominal: list[int],
    tolerance_frames: int,
    pause_window_s: float = 0.2,
    max_clip_frames: int | None = None,
    speech=None,
) -> SnapResult:
    """Measure the audio and snap ``nominal`` interior seams to pauses (see the module rule); ``speech`` is a
    :class:`~avatar_cascade.models.detectors.vad.SpeechActivity` (or None: loudness alone)."""
    frame_db = frame_levels_db(mono, fps, sample_rate, num_frames)
    radius = max(0, int(round(float(fps) * pause_window_s / 2)))
    seam_db = seam_levels_db(frame_db, radius)
    cost, near = seam_db, None
    if speech is not None:
        near = window_mean(frame_speech(speech, fps, num_frames), radius)
        cost = seam_db + SPEECH_PENALTY_DB * near
    seams = snap_seams(nominal, cost, num_frames, tolerance_frames, max_clip_frames)
    ref = loud_reference_db(frame_db)
    result = SnapResult(seams=seams, levels_db=[float(seam_db[s]) for s in seams], reference_db=ref)
    if near is not None:
        result.speech = [round(float(near[s]), 3) for s in seams]
    moved = sum(a != b for a, b in zip(seams, nominal))
    log.info(
        "seams: %d of %d moved (tolerance %d frames), %d in pauses",
        moved,
        len(seams),
        tolerance_frames,
        sum(result.in_pause),
    )
    return result

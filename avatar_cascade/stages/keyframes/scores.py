"""Scores of keyframe candidates: blueprint frames near a seam, compared with the reference.

Every score is in [0, 1], higher is better. All are cheap image statistics on
blueprint-resolution ``[N,h,w,3]`` uint8 frames (the reference is resized to the
same size); none uses a downloaded detector, so each measures a *proxy*:

* ``identity``: with a CLIP-vision encoder, the cosine similarity (clamped at 0)
  of the candidate's and the reference's mean CLIP tokens. Without one, the mean
  of a colour-histogram intersection (8 bins per channel) and a structure
  similarity (zero-mean normalised cross-correlation of 16x16 luma thumbnails,
  clamped at 0). The proxy says "same colours and same layout as the reference";
  it cannot tell two similar-looking people apart.
* ``sharpness``: variance of the Laplacian of the luma, squashed by x/(x+0.01).
* ``face``: skin-tone visibility and clarity in the central region (where a
  portrait's face is). Visibility = ratio (smaller/larger) of the fraction of
  skin-coloured pixels (YCbCr rule Cb 77..127, Cr 133..173) in the centre region
  of the candidate vs the reference (1 when the reference shows no skin, e.g.
  a stylised character: then it says nothing). Clarity = Laplacian variance in
  that region relative to the reference's, capped at 1. A hand over the face,
  a turned head or a blurred face lowers it; a detector it is not.
* ``mouth``: likelihood of a closed / neutral mouth. Half audio (1 - RMS energy
  around the candidate's time / the track's 95th-percentile frame RMS: quiet
  => mouth likely closed), half motion (1 - mean absolute luma change of the
  lower-centre region, rows 55-85 %, columns 30-70 %, to the neighbouring
  blueprint frames, / 0.1: a still lower face is likely at rest).
* ``colour``: 1 - mean absolute difference of per-channel mean/std to the reference.
* ``centre``: closeness to the exact seam time (1 at the seam, 0 at the window edge).
* ``diversity``: distance to the previous chosen keyframe (mean absolute
  difference of 32x32 thumbnails / 0.05, capped at 1): near-duplicates in a row
  score 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from avatar_cascade.media.frames import luma
from avatar_cascade.media.image_metrics import (  # noqa: F401  (re-exported: the scores' public names)
    colour_histogram,
    identity_proxy,
    laplacian_var,
    sharpness,
    skin_fraction,
    structure_similarity,
)
from avatar_cascade.models.detectors.measures import clip_embedding, identity_clip  # noqa: F401

DEFAULT_WEIGHTS = {
    "identity": 1.0,
    "sharpness": 0.5,
    "face": 0.5,
    "mouth": 0.5,
    "colour": 0.5,
    "centre": 0.25,
    "diversity": 0.25,
}
SCORE_NAMES = tuple(DEFAULT_WEIGHTS)
MOTION_SCALE = 0.1
DIVERSITY_SCALE = 0.05


def _centre(x: torch.Tensor, top: float, bottom: float, left: float, right: float) -> torch.Tensor:
    """The region ``[top:bottom, left:right]`` (fractions of height/width) of ``[N,H,W,...]``."""
    h, w = x.shape[1], x.shape[2]
    t, b = int(h * top), max(int(h * top) + 1, int(round(h * bottom)))
    lft, r = int(w * left), max(int(w * left) + 1, int(round(w * right)))
    return x[:, t:b, lft:r]


def colour_stats(frames: torch.Tensor) -> torch.Tensor:
    """Per-channel mean and std of ``[N,H,W,3]`` uint8 frames in [0,1]: ``[N, 6]``."""
    x = frames.float().div(255).flatten(1, 2)
    return torch.cat([x.mean(1), x.std(1)], dim=1)


def colour_score(frames: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    ref = colour_stats(reference[None])
    return 1 - (colour_stats(frames) - ref).abs().mean(1).clamp(0, 1)


def face_region(frames: torch.Tensor) -> torch.Tensor:
    """Central region where a portrait's face usually is: rows 10-80 %, columns 20-80 %."""
    return _centre(frames, 0.10, 0.80, 0.20, 0.80)


def face_score(frames: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """(skin visibility + clarity) / 2 in the central region, relative to the reference."""
    f, fr = skin_fraction(face_region(frames)), skin_fraction(face_region(reference[None]))
    if float(fr[0]) < 0.02:
        visibility = torch.ones_like(f)
    else:
        visibility = torch.minimum(f, fr) / torch.maximum(f, fr).clamp_min(1e-6)
    c, cr = laplacian_var(face_region(frames)), laplacian_var(face_region(reference[None]))
    clarity = (c / cr.clamp_min(1e-6)).clamp(0, 1)
    return 0.5 * visibility + 0.5 * clarity


def lower_face_motion(frames: torch.Tensor, before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
    """Mean absolute luma change of the lower-centre region to the neighbour frames: ``[N]`` in [0, 1]."""

    def region(x):
        return luma(_centre(x, 0.55, 0.85, 0.30, 0.70))

    r = region(frames)
    return 0.5 * ((r - region(before)).abs().mean(dim=(1, 2)) + (r - region(after)).abs().mean(dim=(1, 2)))


def diversity_score(frames: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
    """Distance of each frame to the previous chosen keyframe (``[h,w,3]`` uint8), in [0, 1]."""

    def thumb(x):
        return F.interpolate(x.permute(0, 3, 1, 2).float().div(255), size=(32, 32), mode="area")

    d = (thumb(frames) - thumb(previous[None])).abs().mean(dim=(1, 2, 3))
    return (d / DIVERSITY_SCALE).clamp(0, 1)


class AudioEnergy:
    """RMS energy of a mono track around given times, relative to the track's loud frames.

    ``score(times_s)`` is ``1 - rms / p95`` (clamped to [0, 1]) where ``rms`` is measured over
    ``± half_window_s`` around each time and ``p95`` is the 95th percentile of the RMS of
    consecutive 40 ms frames of the whole track (a silent track scores 1 everywhere).
    """

    def __init__(self, waveform: torch.Tensor, sample_rate: int, half_window_s: float = 0.04) -> None:
        self.mono = waveform.float().mean(0) if waveform.ndim == 2 else waveform.float()
        self.sr = int(sample_rate)
        self.half = max(1, int(round(half_window_s * self.sr)))
        hop = max(1, int(0.04 * self.sr))
        n = self.mono.numel() // hop
        if n:
            frame_rms = self.mono[: n * hop].view(n, hop).pow(2).mean(1).sqrt()
            self.loud = float(torch.quantile(frame_rms, 0.95)) if n > 1 else float(frame_rms[0])
        else:
            self.loud = 0.0

    def score(self, times_s: list[float]) -> torch.Tensor:
        out = []
        for t in times_s:
            c = int(round(t * self.sr))
            seg = self.mono[max(0, c - self.half) : max(0, c + self.half)]
            rms = float(seg.pow(2).mean().sqrt()) if seg.numel() else 0.0
            out.append(1.0 if self.loud <= 1e-6 else 1.0 - min(1.0, rms / self.loud))
        return torch.tensor(out)


def mouth_score(energy: torch.Tensor, motion: torch.Tensor) -> torch.Tensor:
    """(audio-quiet score + lower-face stillness score) / 2."""
    return 0.5 * energy + 0.5 * (1 - (motion / MOTION_SCALE).clamp(0, 1))


def check_weights(weights: dict | None) -> dict[str, float]:
    """Default weights updated with ``weights``; unknown names or negative values raise."""
    from avatar_cascade.core.errors import InputError

    out = dict(DEFAULT_WEIGHTS)
    for name, value in (weights or {}).items():
        if name not in DEFAULT_WEIGHTS:
            raise InputError("weights", name, "is not a keyframe score", f"use some of {', '.join(SCORE_NAMES)}")
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value <= 100:
            raise InputError("weights", {name: value}, "weights must be numbers from 0 to 100", "use e.g. 0.5")
        out[name] = float(value)
    return out

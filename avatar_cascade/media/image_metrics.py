"""Image statistics shared by the keyframe scores, the refiner's quality gate and the quality report.

All take ``[N, H, W, 3]`` uint8 frames (torch) and return ``[N]`` float tensors:

* :func:`sharpness` — variance of the Laplacian of the luma, squashed by ``x / (x + 0.01)``;
* :func:`identity_proxy` — the labelled fallback for identity: (colour-histogram intersection, 8 bins per
  channel + zero-mean NCC of 16x16 luma thumbnails) / 2. It says "same colours and layout as the
  reference", it cannot tell two people apart;
* :func:`skin_fraction` — fraction of skin-coloured pixels (YCbCr rule Cb 77..127, Cr 133..173);
* :func:`mean_lab` / :func:`delta_e` — CIELAB (D65) mean colour and the CIE76 colour difference ΔE*ab of
  each frame's mean colour to the reference's (1 ≈ just noticeable, > 5 clearly visible);
* :func:`frame_jumps` / :func:`seam_ratio` — mean absolute luma change between consecutive 64 px thumbnails,
  and the change across a boundary divided by the median change around it (1 = as smooth as the motion
  around it; a hard cut is many times more).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from avatar_cascade.media.frames import luma

HIST_BINS = 8
SKIN_CB = (77, 127)
SKIN_CR = (133, 173)
THUMB = 64


def laplacian_var(frames: torch.Tensor) -> torch.Tensor:
    """Variance of the Laplacian of the luma of ``[N,H,W,3]`` uint8 frames: ``[N]``."""
    k = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])[None, None]
    lap = F.conv2d(luma(frames)[:, None], k, padding=1)[:, :, 1:-1, 1:-1]
    return lap.var(dim=(1, 2, 3))


def sharpness(frames: torch.Tensor) -> torch.Tensor:
    """Laplacian variance squashed to [0, 1)."""
    v = laplacian_var(frames)
    return v / (v + 0.01)


def colour_histogram(frames: torch.Tensor, bins: int = HIST_BINS) -> torch.Tensor:
    """Joint RGB histogram ``[N, bins**3]``, normalised to sum 1."""
    q = frames.long().div(256 // bins, rounding_mode="floor").clamp(max=bins - 1)
    idx = (q[..., 0] * bins + q[..., 1]) * bins + q[..., 2]
    hist = torch.zeros(frames.shape[0], bins**3)
    hist.scatter_add_(1, idx.flatten(1), torch.ones(idx.flatten(1).shape))
    return hist / hist.sum(1, keepdim=True)


def structure_similarity(frames: torch.Tensor, reference: torch.Tensor, size: int = 16) -> torch.Tensor:
    """Zero-mean NCC of ``size``x``size`` luma thumbnails with the reference ``[H,W,3]``, clamped to [0, 1]."""

    def thumb(x):
        t = F.interpolate(luma(x)[:, None], size=(size, size), mode="area").flatten(1)
        t = t - t.mean(1, keepdim=True)
        return t / t.norm(dim=1, keepdim=True).clamp_min(1e-6)

    return (thumb(frames) * thumb(reference[None])).sum(1).clamp(0, 1)


def identity_proxy(frames: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Image-statistics identity proxy: (histogram intersection + structure similarity) / 2."""
    hist = torch.minimum(colour_histogram(frames), colour_histogram(reference[None])).sum(1)
    return 0.5 * hist + 0.5 * structure_similarity(frames, reference)


def skin_fraction(frames: torch.Tensor) -> torch.Tensor:
    """Fraction of skin-coloured pixels (YCbCr rule) of ``[N,H,W,3]`` uint8 frames: ``[N]``."""
    x = frames.float()
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    cb = 128 - 0.168736 * r - 0.331264 * g + 0.5 * b
    cr = 128 + 0.5 * r - 0.418688 * g - 0.081312 * b
    skin = (cb >= SKIN_CB[0]) & (cb <= SKIN_CB[1]) & (cr >= SKIN_CR[0]) & (cr <= SKIN_CR[1])
    return skin.float().flatten(1).mean(1)


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB ``[..., 3]`` in [0, 1] -> CIELAB (D65 white) ``[..., 3]`` (L in 0..100)."""
    lin = torch.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    m = torch.tensor(
        [[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750], [0.0193339, 0.1191920, 0.9503041]]
    )
    xyz = lin @ m.T / torch.tensor([0.95047, 1.0, 1.08883])
    f = torch.where(xyz > (6 / 29) ** 3, xyz.clamp_min(1e-12) ** (1 / 3), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return torch.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


def mean_lab(frames: torch.Tensor) -> torch.Tensor:
    """Mean CIELAB colour of each ``[N,H,W,3]`` uint8 frame: ``[N, 3]``."""
    return rgb_to_lab(frames.float().div(255)).flatten(1, 2).mean(1)


def delta_e(frames: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """CIE76 ΔE*ab between each frame's mean Lab colour and the reference's (``[H,W,3]`` uint8): ``[N]``."""
    return (mean_lab(frames) - mean_lab(reference[None])).norm(dim=1)


def shrink(frames: torch.Tensor, size: int = THUMB) -> torch.Tensor:
    """``[N,H,W,3]`` uint8 frames area-averaged to ``[N,size,size,3]`` uint8 (cheap colour / motion statistics)."""
    x = F.interpolate(frames.permute(0, 3, 1, 2).float(), size=(size, size), mode="area")
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)


def thumbnails(frames: torch.Tensor, size: int = THUMB) -> torch.Tensor:
    """Luma thumbnails ``[N, size, size]`` in [0, 1]."""
    return F.interpolate(luma(frames)[:, None], size=(size, size), mode="area")[:, 0]


def frame_jumps(thumbs: torch.Tensor) -> torch.Tensor:
    """Mean absolute change between consecutive thumbnails ``[N, s, s]``: ``[N - 1]`` (jump ``i`` = i -> i+1)."""
    return (thumbs[1:] - thumbs[:-1]).abs().mean(dim=(1, 2))


def seam_ratio(jumps: torch.Tensor, boundary: int, radius: int = 4) -> float:
    """Jump ``boundary`` divided by the median of the other jumps within ``radius`` of it (floor 1e-3)."""
    lo, hi = max(0, boundary - radius), min(jumps.numel(), boundary + radius + 1)
    around = torch.cat([jumps[lo:boundary], jumps[boundary + 1 : hi]])
    base = float(around.median()) if around.numel() else 0.0
    return float(jumps[boundary]) / max(base, 1e-3)

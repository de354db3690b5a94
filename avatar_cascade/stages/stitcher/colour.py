"""Colour matching of sub-clips to their keyframes (cancels colour drift); CIE Lab distances.

A sub-clip starts and ends on keyframes, so its colours should stay close to
theirs; generation drift shows as a colour cast, a contrast or saturation
change that grows towards the middle of the clip. For every frame ``t``:

1. measure the mean and the 3x3 covariance of its RGB colours (on a copy at most
   ``STATS_SIDE`` pixels on its long side);
2. the target moments are the first keyframe's moved linearly to the last
   keyframe's across the clip (``u = (t - a) / (b - a)`` between the keyframe
   positions ``a`` and ``b``, clamped; at mid-clip the mean of both);
3. the affine colour map that carries the frame's moments onto the target is the
   Monge-Kantorovich linear map ``A`` (``A C A = C*``, ``A`` symmetric) plus the
   mean shift: ``rgb' = mu* + A (rgb - mu)``. It undoes any affine drift (casts,
   per-channel gains, contrast) exactly and saturation / gamma drift closely;
   ``strength`` blends it with the identity;
4. the maps are smoothed over ``smooth_frames`` (default ~T/16) with a window
   that shrinks to a single frame at the keyframes, and applied to full-resolution frames a few at
   a time (one 3x4 matrix product per pixel).

Errors are measured as CIE76 ``delta E`` in Lab (D65, sRGB): :func:`delta_e`.

Own code, not a library: image libraries (scikit-image ``match_histograms``, colour-transfer
packages) match one image to one reference; this needs the moments of two keyframes ramped
across a clip, maps smoothed over time, and batches of frames on the GPU.
"""

from __future__ import annotations

import torch

STATS_SIDE = 96
_RGB2XYZ = torch.tensor(
    [[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750], [0.0193339, 0.1191920, 0.9503041]]
)
_WHITE = torch.tensor([0.95047, 1.0, 1.08883])
_EPS, _KAPPA = 216 / 24389, 24389 / 27


def srgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """``[..., 3]`` sRGB in 0..1 -> CIE Lab (L in 0..100)."""
    rgb = rgb.float().clamp(0, 1)
    lin = torch.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    xyz = lin @ _RGB2XYZ.T.to(lin.device) / _WHITE.to(lin.device)
    f = torch.where(xyz > _EPS, xyz.clamp_min(1e-12) ** (1 / 3), (_KAPPA * xyz + 16) / 116)
    return torch.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


def lab_to_srgb(lab: torch.Tensor) -> torch.Tensor:
    """CIE Lab ``[..., 3]`` -> sRGB in 0..1 (clamped)."""
    fy = (lab[..., 0] + 16) / 116
    f = torch.stack([fy + lab[..., 1] / 500, fy, fy - lab[..., 2] / 200], -1)
    xyz = torch.where(f**3 > _EPS, f**3, (116 * f - 16) / _KAPPA) * _WHITE.to(lab.device)
    lin = (xyz @ torch.linalg.inv(_RGB2XYZ).T.to(lab.device)).clamp(0, 1)
    return torch.where(lin <= 0.0031308, lin * 12.92, 1.055 * lin.clamp_min(1e-12) ** (1 / 2.4) - 0.055).clamp(0, 1)


def delta_e(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean CIE76 delta E between uint8 images ``[..., H, W, 3]`` (one value per leading index)."""
    d = (srgb_to_lab(a.float() / 255) - srgb_to_lab(b.float() / 255)).norm(dim=-1)
    return d.mean(dim=(-2, -1))


def small(frames: torch.Tensor, side: int = STATS_SIDE) -> torch.Tensor:
    """``[N, H, W, 3]`` uint8 -> float 0..1 pixels of a strided subsample (long side at most ~``side``)."""
    step = max(1, -(-max(frames.shape[1:3]) // side))
    return frames[:, ::step, ::step].float() / 255


def rgb_moments(pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean ``[N, 3]`` and covariance ``[N, 3, 3]`` of ``[N, P, 3]`` colours."""
    mu = pixels.mean(1)
    xc = pixels - mu[:, None]
    cov = xc.transpose(1, 2) @ xc / max(1, pixels.shape[1] - 1)
    return mu, cov + 1e-6 * torch.eye(3)


def _sqrtm(s: torch.Tensor) -> torch.Tensor:
    e, v = torch.linalg.eigh(s)
    return v @ torch.diag_embed(e.clamp_min(1e-10).sqrt()) @ v.transpose(-1, -2)


def mkl_map(cov_src: torch.Tensor, cov_dst: torch.Tensor) -> torch.Tensor:
    """The symmetric linear map ``A`` with ``A cov_src A = cov_dst`` (Monge-Kantorovich), batched ``[..., 3, 3]``."""
    r = _sqrtm(cov_src)
    ri = torch.linalg.inv(r)
    return ri @ _sqrtm(r @ cov_dst @ r) @ ri


def _ramp_smooth(maps: torch.Tensor, frames: int, a: int, b: int) -> torch.Tensor:
    """Centred moving average of per-frame maps whose radius shrinks to 0 at the keyframes ``a`` and ``b``."""
    r = frames // 2
    if r < 1:
        return maps
    out = maps.clone()
    t_max = maps.shape[0] - 1
    for t in range(maps.shape[0]):
        k = min(r, abs(t - a), abs(t - b), t, t_max - t)
        if k > 0:
            out[t] = maps[t - k : t + k + 1].mean(0)
    return out


def clip_transforms(
    frames: torch.Tensor,
    first_key: torch.Tensor,
    last_key: torch.Tensor,
    strength: float = 1.0,
    key_offsets: tuple[int, int] | None = None,
    smooth_frames: int | None = None,
) -> torch.Tensor:
    """Affine colour maps ``[T, 4, 3]`` (``rgb' = [rgb, 1] @ M``, rgb in 0..1) matching a clip to its keyframes.

    Args:
        frames: the clip, ``[T, H, W, 3]`` uint8.
        first_key / last_key: its keyframes ``[H', W', 3]`` uint8 (any size).
        strength: 0 = identity, 1 = full match of mean and covariance.
        key_offsets: frame positions of the two keyframes in the clip (default first and last frame).
        smooth_frames: moving-average width of the maps (frames; the window shrinks to one frame at
            the keyframes, so frames equal to a keyframe stay untouched); None = about ``T / 16``
            (5 for an 81-frame clip, none below 32 frames, where drift can change fast).
    """
    t = frames.shape[0]
    if smooth_frames is None:
        smooth_frames = max(1, (t // 16) | 1)
    a, b = key_offsets if key_offsets is not None else (0, t - 1)
    mu, cov = rgb_moments(small(frames).flatten(1, 2))
    kmu, kcov = rgb_moments(small(torch.stack([first_key, last_key])).flatten(1, 2))
    u = ((torch.arange(t, dtype=torch.float32) - a) / max(1, b - a)).clamp(0, 1)
    tmu = kmu[0] + u[:, None] * (kmu[1] - kmu[0])
    tcov = kcov[0] + u[:, None, None] * (kcov[1] - kcov[0])
    lin = mkl_map(cov, tcov)  # [T, 3, 3], symmetric
    eye = torch.eye(3).expand_as(lin)
    lin = eye + strength * (lin - eye)
    shift = strength * (tmu - mu) + mu - (mu[:, None] @ lin)[:, 0]
    maps = torch.cat([lin.transpose(1, 2), shift[:, None]], 1)
    return _ramp_smooth(maps, smooth_frames, a, b)


def apply_transforms(
    frames: torch.Tensor, maps: torch.Tensor, chunk: int = 4, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Apply per-frame affine maps ``[T, 4, 3]`` to ``[T, H, W, 3]`` uint8 frames (on ``device``, a few at a time)."""
    out = torch.empty_like(frames)
    eye = torch.eye(4, 3)
    n = frames.shape[1] * frames.shape[2]
    x = torch.empty(n, 3, device=device)  # reused buffers: no fresh pages per frame
    y = torch.empty(n, 3, device=device)
    for i in range(frames.shape[0]):
        m = maps[i]
        if torch.equal(m, eye):
            out[i] = frames[i]
            continue
        x.copy_(frames[i].reshape(-1, 3))
        torch.addmm(m[3].to(device) * 255, x, m[:3].to(device), out=y)
        out[i].copy_(y.round_().clamp_(0, 255).view(frames.shape[1:]))
    return out


def match_clip_colour(
    frames: torch.Tensor,
    first_key: torch.Tensor,
    last_key: torch.Tensor,
    strength: float = 1.0,
    key_offsets: tuple[int, int] | None = None,
    smooth_frames: int | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """``frames`` ``[T, H, W, 3]`` uint8 with their colour drift toward the keyframes removed (see module doc)."""
    if strength <= 0:
        return frames
    maps = clip_transforms(frames, first_key, last_key, strength, key_offsets, smooth_frames)
    return apply_transforms(frames, maps, device=device)

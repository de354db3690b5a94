"""Keyframe Extractor: one keyframe per seam, taken from the blueprint.

For every seam of the timeline, candidate blueprint frames within
``search_radius_s`` of the seam time are scored and the best is kept, then
lifted to the refine resolution (resize + colour matching to the reference).
The first seam uses the reference image itself, so the video opens on the
artist's picture.

Scores (each in roughly [0, 1], higher is better; all kept in the artefact):

* ``sharpness``: variance of the Laplacian of the luma, squashed by x/(x+c).
* ``colour``: 1 - mean absolute difference of per-channel mean/std to the
  reference (a cheap identity/colour-consistency proxy until an image encoder
  is used).
* ``centre``: closeness to the exact seam time.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import torch
import torch.nn.functional as F

from .audio_aligner import AlignedAudio
from .blueprint import Blueprint
from .errors import InputError
from .runtime import Runtime
from .sampling import check_resolution

log = logging.getLogger(__name__)

DEFAULT_WEIGHTS = {"sharpness": 1.0, "colour": 1.0, "centre": 0.5}


@dataclass
class Keyframes:
    """The ``AVATAR_KEYFRAMES`` artefact.

    Attributes:
        images: ``[S, H, W, 3]`` uint8 keyframes at the refine resolution, one per seam.
        frame_indices: output frame index of every seam.
        source_indices: blueprint frame each keyframe came from (None = given image).
        scores: per-seam score dicts of the chosen frame.
    """

    images: torch.Tensor
    frame_indices: list[int]
    source_indices: list[int | None]
    scores: list[dict] = field(default_factory=list)

    @property
    def width(self) -> int:
        return int(self.images.shape[2])

    @property
    def height(self) -> int:
        return int(self.images.shape[1])

    def as_model_frames(self) -> torch.Tensor:
        """``[S, 3, H, W]`` in [-1, 1]."""
        return self.images.permute(0, 3, 1, 2).float().div(127.5).sub(1)

    def save(self, folder: Path) -> None:
        from PIL import Image

        kdir = folder / "keyframes"
        kdir.mkdir(parents=True, exist_ok=True)
        for i, img in enumerate(self.images):
            Image.fromarray(img.numpy()).save(kdir / f"keyframe_{i:05d}.png")
        meta = {"frame_indices": self.frame_indices, "source_indices": self.source_indices, "scores": self.scores}
        (folder / "keyframes.json").write_text(json.dumps(meta, indent=1))


def sharpness(frames: torch.Tensor) -> torch.Tensor:
    """Laplacian variance of the luma of ``[N,H,W,3]`` uint8 frames, squashed to [0,1)."""
    x = frames.float().div(255)
    luma = (0.299 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2])[:, None]
    k = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])[None, None]
    lap = F.conv2d(luma, k, padding=1)
    v = lap.var(dim=(1, 2, 3))
    return v / (v + 0.01)


def colour_stats(frames: torch.Tensor) -> torch.Tensor:
    """Per-channel mean and std of ``[N,H,W,3]`` uint8 frames in [0,1]: ``[N, 6]``."""
    x = frames.float().div(255).flatten(1, 2)
    return torch.cat([x.mean(1), x.std(1)], dim=1)


def colour_score(frames: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    ref = colour_stats(reference[None])
    return 1 - (colour_stats(frames) - ref).abs().mean(1).clamp(0, 1)


def resize_uint8(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bicubic, antialiased resize of ``[N,H,W,3]`` uint8 frames."""
    x = frames.permute(0, 3, 1, 2).float()
    if x.shape[-2:] != (height, width):
        x = F.interpolate(x, size=(height, width), mode="bicubic", align_corners=False, antialias=True)
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)


def match_colour(frames: torch.Tensor, reference: torch.Tensor, strength: float = 1.0) -> torch.Tensor:
    """Per-channel mean/std transfer of ``[N,H,W,3]`` uint8 frames toward ``reference`` ``[H,W,3]`` uint8."""
    if strength <= 0:
        return frames
    x = frames.float()
    ref = reference.float().flatten(0, 1)
    m, s = x.mean(dim=(1, 2), keepdim=True), x.std(dim=(1, 2), keepdim=True).clamp_min(1e-3)
    rm, rs = ref.mean(0), ref.std(0).clamp_min(1e-3)
    y = (x - m) / s * rs + rm
    return (x + strength * (y - x)).round().clamp(0, 255).to(torch.uint8)


def reference_uint8(reference: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Reference ``[H,W,3]`` float 0..1 -> ``[height,width,3]`` uint8."""
    ref = (reference.clamp(0, 1) * 255).round().to(torch.uint8)
    return resize_uint8(ref[None], height, width)[0]


def extract_keyframes(
    blueprint: Blueprint,
    aligned: AlignedAudio,
    reference: torch.Tensor,
    width: int,
    height: int,
    runtime: Runtime,
    search_radius_s: float = 0.25,
    weights: dict[str, float] | None = None,
    colour_match: float = 1.0,
) -> Keyframes:
    """Pick and lift one keyframe per seam.

    Args:
        blueprint: the low-res blueprint.
        aligned: timeline (seams) and audio.
        reference: the reference image ``[H,W,3]`` float 0..1.
        width / height: refine resolution (multiples of 16).
        search_radius_s: candidates lie within this many seconds of the seam.
        weights: score weights (keys of ``DEFAULT_WEIGHTS``).
        colour_match: 0..1 strength of colour matching to the reference.
    """
    check_resolution(width, height)
    if search_radius_s < 0:
        raise InputError("search_radius_s", search_radius_s, "must be >= 0", "use 0.25")
    w = dict(DEFAULT_WEIGHTS, **(weights or {}))
    tl = aligned.timeline
    ref_full = reference_uint8(reference, height, width)
    ref_small = reference_uint8(reference, blueprint.frames.shape[1], blueprint.frames.shape[2])
    radius = int(Fraction(search_radius_s).limit_denominator(1000) * blueprint.fps)

    images, sources, scores = [ref_full], [None], [{"source": "reference"}]
    seams = tl.seams
    bar = runtime.progress(len(seams), "keyframes")
    bar.update(1)
    for f in seams[1:]:
        runtime.check_interrupt()
        centre = blueprint.index_at(Fraction(f) / tl.fps)
        lo, hi = max(0, centre - radius), min(len(blueprint.frames) - 1, centre + radius)
        cand = blueprint.frames[lo : hi + 1]
        sharp = sharpness(cand)
        col = colour_score(cand, ref_small)
        dist = torch.tensor([abs(lo + i - centre) for i in range(len(cand))], dtype=torch.float32)
        cen = 1 - dist / (radius + 1)
        total = w["sharpness"] * sharp + w["colour"] * col + w["centre"] * cen
        best = int(total.argmax())
        lifted = resize_uint8(cand[best : best + 1], height, width)
        lifted = match_colour(lifted, ref_full, colour_match)[0]
        images.append(lifted)
        sources.append(lo + best)
        scores.append(
            {
                "sharpness": float(sharp[best]),
                "colour": float(col[best]),
                "centre": float(cen[best]),
                "total": float(total[best]),
                "candidates": len(cand),
            }
        )
        bar.update(1)
    bar.close()
    kf = Keyframes(images=torch.stack(images), frame_indices=list(seams), source_indices=sources, scores=scores)
    runtime.emit_preview("keyframes", kf.images)
    return kf


def keyframes_from_images(images: torch.Tensor, frame_indices: list[int], width: int, height: int) -> Keyframes:
    """Keyframes from artist images ``[S,H,W,3]`` float 0..1 (ToonCrafter-style in-betweening)."""
    if images.ndim != 4 or images.shape[0] < 2:
        raise InputError("images", tuple(images.shape), "needs a batch of at least two keyframes", "batch 2+ images")
    u8 = (images[..., :3].clamp(0, 1) * 255).round().to(torch.uint8)
    return Keyframes(
        images=resize_uint8(u8, height, width),
        frame_indices=list(frame_indices),
        source_indices=[None] * len(frame_indices),
        scores=[{"source": "image"}] * len(frame_indices),
    )

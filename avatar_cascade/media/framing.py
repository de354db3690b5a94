"""Reference framing: the reference (and every frame made from it) is never stretched.

Three ways to fit an image of one aspect into a video of another (``FRAMINGS``):

* ``"bucket"`` (default): the *output size* follows the image. Among the sizes a model takes
  (both sides multiples of ``multiple``) of about the requested area, the one whose aspect is
  nearest the image's is used (InfiniteTalk's aspect buckets do the same); the small rest is
  centre-cropped. A 9:16 portrait asked at 832x480 renders at 464x816 (about the same pixels).
* ``"crop"``: exactly the requested size; the image is scaled to cover it and centre-cropped.
* ``"pad"``: exactly the requested size; the image is scaled to fit inside it and the rest
  padded with the image's mean border colour.

All three scale both axes by one factor, so a circle stays a circle.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from avatar_cascade.core.errors import InputError

FRAMINGS = ("bucket", "crop", "pad")


def framing_setting():
    """The ``framing`` setting of the stages that frame the reference (blueprint, keyframes)."""
    from avatar_cascade.core.settings import setting

    return setting(
        "bucket", tooltip="How the reference fills the frame, never stretched: bucket = the size follows the "
        "image's aspect at about width x height pixels; crop = exactly width x height, centre-cropped; pad = "
        "exactly width x height, padded.", choices=FRAMINGS,
    )  # fmt: skip


def check_framing(name: str, value: str) -> None:
    if value not in FRAMINGS:
        raise InputError(name, value, "is not a known framing", f"use one of {', '.join(FRAMINGS)}")


def bucket_size(aspect: float, width: int, height: int, multiple: int = 16) -> tuple[int, int]:
    """The ``(w, h)``, sides multiples of ``multiple``, of about ``width * height`` pixels (never more than
    ``multiple`` rows / columns over) whose ``w / h`` is nearest ``aspect`` (ties: the larger area)."""
    if not aspect > 0 or not math.isfinite(aspect):
        raise ValueError(f"aspect must be a positive number, got {aspect}")
    area = width * height
    best: tuple[float, int, int, int] | None = None

    def near(x: float) -> set[int]:
        return {max(multiple, int(x // multiple) * multiple), max(multiple, int(-(-x // multiple)) * multiple)}

    for h in range(multiple, 4096 + 1, multiple):
        for w in near(area / h) | near(aspect * h):
            if w > 4096 or w * h > area * 1.05:
                continue
            err = abs(math.log((w / h) / aspect)) + 0.25 * abs(math.log(w * h / area))
            cand = (round(err, 9), -w * h, w, h)
            if best is None or cand < best:
                best = cand
    assert best is not None
    return best[2], best[3]


@dataclass(frozen=True)
class Framing:
    """How a source of ``source`` (w, h) fills ``size`` (w, h): ``mode`` and the kept source box."""

    mode: str
    source: tuple[int, int]
    size: tuple[int, int]
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 of the source region kept (crop) or used (pad)

    def describe(self) -> str:
        sw, sh = self.source
        w, h = self.size
        x0, y0, x1, y1 = self.box
        kept = f"{x1 - x0}x{y1 - y0} of {sw}x{sh} kept" if self.mode != "pad" else f"padded to {w}x{h}"
        return f"framing {self.mode}: {sw}x{sh} (aspect {sw / sh:.3f}) -> {w}x{h} (aspect {w / h:.3f}), {kept}"

    def to_dict(self) -> dict:
        return {"mode": self.mode, "source": list(self.source), "size": list(self.size), "box": list(self.box)}


def output_size(mode: str, source_wh: tuple[int, int], width: int, height: int, multiple: int = 16) -> tuple[int, int]:
    """The frame size a reference of ``source_wh`` renders at when ``width x height`` is asked."""
    check_framing("framing", mode)
    if mode == "bucket":
        return bucket_size(source_wh[0] / source_wh[1], width, height, multiple)
    return width, height


def plan_framing(mode: str, source_wh: tuple[int, int], size: tuple[int, int]) -> Framing:
    """The crop box (bucket / crop) or the fitted box (pad) of a ``source_wh`` image in ``size``."""
    sw, sh = source_wh
    w, h = size
    if mode == "pad":
        return Framing(mode, (sw, sh), (w, h), (0, 0, sw, sh))
    scale = max(w / sw, h / sh)  # cover
    cw, ch = min(sw, round(w / scale)), min(sh, round(h / scale))
    x0, y0 = (sw - cw) // 2, (sh - ch) // 2
    return Framing(mode, (sw, sh), (w, h), (x0, y0, x0 + cw, y0 + ch))


def _resize(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    if x.shape[-2:] == (h, w):
        return x
    return F.interpolate(x, size=(h, w), mode="bicubic", align_corners=False, antialias=True)


def fit_frames(frames: torch.Tensor, width: int, height: int, mode: str = "crop") -> torch.Tensor:
    """``[N,H,W,3]`` uint8 frames framed to ``width x height`` without stretching (``mode`` as above;
    ``"bucket"`` crops like ``"crop"``: the size is already chosen)."""
    n, sh, sw = frames.shape[:3]
    fr = plan_framing("pad" if mode == "pad" else "crop", (sw, sh), (width, height))
    x = frames.permute(0, 3, 1, 2).float()
    if fr.mode == "pad":
        scale = min(width / sw, height / sh)
        iw, ih = max(1, round(sw * scale)), max(1, round(sh * scale))
        inner = _resize(x, ih, iw)
        border = torch.cat([x[..., 0, :], x[..., -1, :], x[..., :, 0], x[..., :, -1]], dim=-1).mean(-1)
        out = border[..., None, None].expand(n, 3, height, width).clone()
        oy, ox = (height - ih) // 2, (width - iw) // 2
        out[..., oy : oy + ih, ox : ox + iw] = inner
    else:
        x0, y0, x1, y1 = fr.box
        out = _resize(x[..., y0:y1, x0:x1], height, width)
    return out.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)


def frame_reference(reference: torch.Tensor, width: int, height: int, mode: str) -> torch.Tensor:
    """Reference ``[H,W,3]`` float 0..1 -> ``[height,width,3]`` uint8, framed (never stretched)."""
    ref = (reference.clamp(0, 1) * 255).round().to(torch.uint8)
    return fit_frames(ref[None], width, height, mode)[0]


def reference_framing(reference: torch.Tensor, width: int, height: int, mode: str) -> Framing:
    """The :class:`Framing` record of the reference at ``width x height``."""
    h, w = reference.shape[:2]
    return plan_framing("pad" if mode == "pad" else mode, (w, h), (width, height))

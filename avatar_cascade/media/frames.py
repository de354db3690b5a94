"""Operations on uint8 RGB frames shared by the blueprint and keyframe stages.

Frames are ``[N, H, W, 3]`` uint8 tensors on CPU (a single frame is ``[H, W, 3]``);
"model space" is ``[3, H, W]`` float in [-1, 1], what the VAE takes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def resize_uint8(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bicubic, antialiased resize of ``[N,H,W,3]`` uint8 frames."""
    x = frames.permute(0, 3, 1, 2).float()
    if x.shape[-2:] != (height, width):
        x = F.interpolate(x, size=(height, width), mode="bicubic", align_corners=False, antialias=True)
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)


def match_colour(frames: torch.Tensor, reference: torch.Tensor, strength: float = 1.0) -> torch.Tensor:
    """Per-channel mean/std transfer of ``[N,H,W,3]`` uint8 frames toward ``reference`` ``[H,W,3]`` uint8.

    ``strength`` 0..1 blends between the input (0) and the full transfer (1).
    Each frame is matched on its own statistics.
    """
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


def to_model_space(frames: torch.Tensor) -> torch.Tensor:
    """``[N,H,W,3]`` uint8 -> ``[N,3,H,W]`` float in [-1, 1]."""
    return frames.permute(0, 3, 1, 2).float().div(127.5).sub(1)


def luma(frames: torch.Tensor) -> torch.Tensor:
    """Rec.601 luma of ``[N,H,W,3]`` uint8 frames: ``[N,H,W]`` float in [0, 1]."""
    x = frames.float().div(255)
    return 0.299 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2]


def image_to_model_space(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``[H,W,3]`` float 0..1 (any size) -> ``[3,height,width]`` in [-1,1], resized (bicubic, antialiased)."""
    import torch.nn.functional as F

    x = image.permute(2, 0, 1)[None].float()
    if x.shape[-2:] != (height, width):
        x = F.interpolate(x, size=(height, width), mode="bicubic", align_corners=False, antialias=True)
    return x[0].clamp(0, 1) * 2 - 1

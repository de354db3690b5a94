"""Composite several guidance layers into the one control video VACE reads.

Champ feeds depth, normal, semantic map and skeleton to separate guidance encoders; Wan VACE
takes a single control video, so the layers are stacked in order: each later layer is drawn
*over* the earlier ones where it has content (any channel above ``threshold``: a skeleton's limbs,
a line drawing's ink) and lets them show through where it is black, or mixed with them by
``opacity``. Depth / normal / semantic maps from any ComfyUI preprocessor go first (full
frames), skeletons and line art last.
"""

from __future__ import annotations

import torch

from avatar_cascade.core.errors import InputError


def composite_layers(layers: list[torch.Tensor], threshold: int = 8, opacity: float = 1.0) -> torch.Tensor:
    """``[N, H, W, 3]`` uint8 layers (same shape; a 1-frame layer is held for all frames) -> one ``[N,H,W,3]``.

    Layer 0 is the background; every later layer replaces it where any of its channels exceeds
    ``threshold`` (0..255), blended by ``opacity`` (1 = replace).
    """
    if not layers:
        raise InputError("layers", 0, "no guidance layer to composite", "connect at least one control layer")
    n = max(len(x) for x in layers)
    shape = tuple(layers[0].shape[1:])
    for i, x in enumerate(layers):
        if x.dtype != torch.uint8 or x.ndim != 4 or tuple(x.shape[1:]) != shape or len(x) not in (1, n):
            raise InputError(
                f"layer_{i + 1}",
                tuple(x.shape),
                f"every layer must be uint8 [N or 1, {shape[0]}, {shape[1]}, 3] like the first",
                "resize the guidance layers to one size and length",
            )
    if not 0.0 <= opacity <= 1.0:
        raise InputError("opacity", opacity, "must be between 0 and 1", "use 1.0")
    out = layers[0].expand(n, *shape).float().clone()
    for x in layers[1:]:
        x = x.expand(n, *shape).float()
        where = (x > threshold).any(dim=-1, keepdim=True)
        out = torch.where(where, out * (1 - opacity) + x * opacity, out)
    return out.round().clamp(0, 255).to(torch.uint8)

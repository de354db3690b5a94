"""The tiny Wan VACE DiT of the demo models, and the writers' side of the VACE key layouts.

The tiny VACE is ``WanVACETransformer3DModel`` at the tiny demo DiT's widths (2 heads x 12,
2 blocks, text_dim 32, so the tiny InfiniteTalk adapter fits it too) with the real control
branch: 96 control channels (16 inactive + 16 reactive latents + 64 folded mask) and a VACE
block after each of its two blocks. It is written in the ORIGINAL Wan VACE key layout
(``vace_blocks.0.before_proj``, ``vace_blocks.1.after_proj``...), so the real conversion
path (diffusers' converter) is what loads it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from avatar_cascade.demo.layouts import dit_to_original_layout
from avatar_cascade.models.wan_dit import load_bundled_config, to_diffusers_layout

TINY_VACE_VARIANT = "avatar-cascade-tiny-wan-vace"
TINY_COMFY_VACE_VARIANT = "avatar-cascade-tiny-wan-vace-comfy"  # the sizes ComfyUI's UNETLoader accepts
_VACE = "vace_blocks."


def vace_to_original_layout(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """diffusers VACE keys -> original Wan VACE keys (what the official release and ComfyUI files use).

    The main DiT keys map as for every Wan DiT; a VACE block maps like a DiT block plus
    ``proj_in -> before_proj`` and ``proj_out -> after_proj``.
    """
    base = {k: v for k, v in state_dict.items() if not k.startswith(_VACE)}
    blocks = {"blocks." + k[len(_VACE) :]: v for k, v in state_dict.items() if k.startswith(_VACE)}
    out = dit_to_original_layout(base)
    for key, value in dit_to_original_layout(blocks).items():
        key = key.replace(".proj_in.", ".before_proj.").replace(".proj_out.", ".after_proj.")
        out[_VACE + key[len("blocks.") :]] = value
    back = to_diffusers_layout({k: None for k in out})
    if set(back) != set(state_dict):
        raise RuntimeError(f"Wan VACE key inversion does not round-trip: {sorted(set(back) ^ set(state_dict))[:5]}")
    return out


def tiny_vace_state_dict(seed: int = 0, variant: str = TINY_VACE_VARIANT) -> dict[str, torch.Tensor]:
    """The tiny Wan VACE DiT (in 16, control 96, VACE blocks at layers 0 and 1) in the ORIGINAL layout."""
    from diffusers import WanVACETransformer3DModel

    cfg = {k: v for k, v in load_bundled_config(variant).items() if not k.startswith("_")}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 11)
        model = WanVACETransformer3DModel.from_config(cfg)
    return vace_to_original_layout(model.state_dict())

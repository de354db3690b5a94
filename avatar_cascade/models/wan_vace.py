"""Wan 2.1 VACE DiTs (1.3B, 14B) from one safetensors file into ``diffusers.WanVACETransformer3DModel``.

VACE is a Wan 2.1 T2V DiT (16 input channels) plus a control branch: ``vace_patch_embedding``
(96 input channels: 16 inactive + 16 reactive latent channels and the 8x8-folded pixel mask)
and ``vace_blocks``, whose hints are added after the main blocks at ``vace_layers``
(every 2nd block of the 1.3B, every 5th of the 14B).

The same three key layouts as the other Wan DiTs are read: the original release
(``vace_blocks.0.before_proj.weight``, ``vace_blocks.0.self_attn.q.weight``), ComfyUI's
repackaged files (``wan2.1_vace_14B_fp16.safetensors``: the same under ``model.diffusion_model.``
or ``diffusion_model.``) and diffusers (``vace_blocks.0.proj_in.weight``,
``vace_blocks.0.attn1.to_q.weight``). The original and ComfyUI keys go through diffusers'
own ``convert_wan_transformer_to_diffusers`` (which maps ``before_proj``/``after_proj``) and
the result is loaded strictly. The ``vace_layers`` positions are not stored in the weights:
they are evenly spaced over the blocks (``range(0, num_layers, num_layers // vace_blocks)``),
as ComfyUI's ``VaceWanModel`` assumes and both releases use.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from avatar_cascade.core.errors import ModelFileError
from avatar_cascade.models.files import (
    dequantize,
    file_identity,
    read_safetensors,
    read_safetensors_header,
    storage_dtype,
    strict_load,
    strip_prefix,
)
from avatar_cascade.models.wan_dit import (
    _PREFIXES,
    FAMILY_LOADERS,
    WanDiT,
    derived_config,
    load_bundled_config,  # noqa: F401 (re-exported: the VACE configs are read by name)
    match_bundled,
    to_diffusers_layout,
)

log = logging.getLogger(__name__)

VACE_VARIANTS = (
    "wan2.1-vace-1.3b",
    "wan2.1-vace-14b",
    "avatar-cascade-tiny-wan-vace",
    "avatar-cascade-tiny-wan-vace-comfy",
)
VACE_MARKERS = ("vace_patch_embedding.", "vace_blocks.")
CUSTOM_VACE = "wan-vace-custom"  # a VACE file no bundled config matches: its config derived from the shapes


def is_vace_keys(keys) -> bool:
    """True when a state dict (any layout, any prefix) holds a VACE control branch."""
    return any(m in k for k in keys for m in VACE_MARKERS)


def is_vace(dit: Any) -> bool:
    """True for a :class:`WanDiT` handle (or transformer) with a VACE control branch."""
    module = getattr(dit, "transformer", dit)
    return hasattr(module, "vace_blocks")


@dataclass(frozen=True)
class VaceSignature:
    dim: int
    num_layers: int
    ffn_dim: int
    text_dim: int
    in_channels: int
    vace_in_channels: int
    vace_blocks: int


def _count(sd: Mapping[str, Any], prefix: str) -> int:
    return len({int(m.group(1)) for k in sd if (m := re.match(re.escape(prefix) + r"(\d+)\.", k))})


def vace_signature(shapes: Mapping[str, tuple[int, ...]], input_name: str = "dit_name", path: object = "<weights>"):
    """What identifies a VACE file: widths, block counts and control channels (from key -> shape)."""
    sd = to_diffusers_layout(strip_prefix(shapes, _PREFIXES))
    try:
        patch = sd["patch_embedding.weight"]
        return VaceSignature(
            dim=patch[0],
            num_layers=_count(sd, "blocks."),
            ffn_dim=sd["blocks.0.ffn.net.0.proj.weight"][0],
            text_dim=sd["condition_embedder.text_embedder.linear_1.weight"][1],
            in_channels=patch[1],
            vace_in_channels=sd["vace_patch_embedding.weight"][1],
            vace_blocks=_count(sd, "vace_blocks."),
        )
    except (KeyError, IndexError, TypeError) as err:
        raise ModelFileError(
            input_name, path, f"this Wan VACE file lacks an expected weight ({err})", "re-download the file"
        ) from err


def _config_signature(cfg: Mapping[str, Any]) -> VaceSignature:
    return VaceSignature(
        dim=cfg["num_attention_heads"] * cfg["attention_head_dim"],
        num_layers=cfg["num_layers"],
        ffn_dim=cfg["ffn_dim"],
        text_dim=cfg["text_dim"],
        in_channels=cfg["in_channels"],
        vace_in_channels=cfg["vace_in_channels"],
        vace_blocks=len(cfg["vace_layers"]),
    )


def vace_variant_of_config(config: Mapping[str, Any]) -> str:
    """The bundled VACE variant whose config has the sizes of ``config`` (diffusers field names), else custom."""
    found = match_bundled(_config_signature(config), VACE_VARIANTS, _config_signature)
    return found[0] if found else CUSTOM_VACE


def match_vace(shapes: Mapping[str, tuple[int, ...]], input_name: str = "dit_name", path: object = "<weights>"):
    """``(variant, diffusers config)`` of a VACE key -> shape table in any supported layout."""
    sig = vace_signature(shapes, input_name, path)
    found = match_bundled(sig, VACE_VARIANTS, _config_signature)
    if found:
        return found
    if sig.dim % 128 == 0 and sig.vace_blocks and sig.num_layers % sig.vace_blocks == 0:
        cfg = derived_config(
            "wan2.1-vace-14b",
            sig.dim,
            path,
            sig,
            num_layers=sig.num_layers,
            ffn_dim=sig.ffn_dim,
            text_dim=sig.text_dim,
            in_channels=sig.in_channels,
            vace_in_channels=sig.vace_in_channels,
            vace_layers=list(range(0, sig.num_layers, sig.num_layers // sig.vace_blocks)),
        )
        return CUSTOM_VACE, cfg
    raise ModelFileError(
        input_name,
        path,
        f"unknown Wan VACE variant ({sig}); supported: {', '.join(VACE_VARIANTS)}",
        "use Wan2.1-VACE-1.3B or Wan2.1-VACE-14B (original, ComfyUI-repackaged or diffusers file)",
    )


def vace_model_from_config(config: Mapping[str, Any]):
    """An empty (meta device) ``WanVACETransformer3DModel`` of ``config``."""
    from accelerate import init_empty_weights
    from diffusers import WanVACETransformer3DModel

    cfg = {k: v for k, v in config.items() if not k.startswith("_")}
    with init_empty_weights():
        return WanVACETransformer3DModel.from_config(cfg)


def load_wan_vace(path: str | Path, input_name: str = "dit_name", dtype: torch.dtype | None = None) -> WanDiT:
    """Load a Wan VACE DiT single file on CPU as a :class:`WanDiT` handle (strict; fp32-only modules kept
    in float32 as diffusers' ``from_pretrained`` does)."""
    path = Path(path)
    shapes, _ = read_safetensors_header(path, input_name)
    variant, config = match_vace(shapes, input_name, path)
    state_dict, _ = read_safetensors(path, input_name)
    dtype = dtype or storage_dtype(state_dict)
    state_dict = to_diffusers_layout(dequantize(strip_prefix(state_dict, _PREFIXES), dtype))
    transformer = vace_model_from_config(config)
    keep = list(getattr(transformer, "_keep_in_fp32_modules", None) or [])
    state_dict = {
        k: v.to(torch.float32 if any(m in k.split(".") for m in keep) else dtype) if v.is_floating_point() else v
        for k, v in state_dict.items()
    }
    strict_load(transformer, state_dict, input_name, path, f"the {variant} Wan VACE DiT")
    transformer.eval().requires_grad_(False)
    log.info("loaded Wan VACE DiT %s (%s, %s weights) from %s", variant, dtype, len(state_dict), path.name)
    return WanDiT(transformer=transformer, variant=variant, identity=file_identity(path), path=path)


FAMILY_LOADERS[VACE_MARKERS[0]] = load_wan_vace  # load_wan_dit hands VACE files to load_wan_vace

"""Writers' side of the Wan key layouts: diffusers keys -> the original Wan keys.

The loaders (:mod:`avatar_cascade.models.wan_dit`, :mod:`avatar_cascade.models.wan_vae`) only read: any
layout -> diffusers. The demo and the tests write tiny models in the *original* layout (what the
official release and ComfyUI's repackaged files use), so the real conversion path is what they load.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from avatar_cascade.models.wan_dit import FLF_POS_DIFFUSERS, FLF_POS_ORIGINAL, to_diffusers_layout

# diffusers key -> original Wan key; the inverse of diffusers' convert_wan_transformer_to_diffusers.
_DIT_TO_ORIGINAL = (
    ("condition_embedder.time_embedder.linear_1.", "time_embedding.0."),
    ("condition_embedder.time_embedder.linear_2.", "time_embedding.2."),
    ("condition_embedder.text_embedder.linear_1.", "text_embedding.0."),
    ("condition_embedder.text_embedder.linear_2.", "text_embedding.2."),
    ("condition_embedder.time_proj.", "time_projection.1."),
    ("condition_embedder.image_embedder.norm1.", "img_emb.proj.0."),
    ("condition_embedder.image_embedder.ff.net.0.proj.", "img_emb.proj.1."),
    ("condition_embedder.image_embedder.ff.net.2.", "img_emb.proj.3."),
    ("condition_embedder.image_embedder.norm2.", "img_emb.proj.4."),
    (".attn1.", ".self_attn."),
    (".attn2.", ".cross_attn."),
    (".to_out.0.", ".o."),
    (".to_q.", ".q."),
    (".to_k.", ".k."),
    (".to_v.", ".v."),
    (".add_k_proj.", ".k_img."),
    (".add_v_proj.", ".v_img."),
    (".norm_added_k.", ".norm_k_img."),
    (".ffn.net.0.proj.", ".ffn.0."),
    (".ffn.net.2.", ".ffn.2."),
)


def dit_to_original_layout(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """diffusers keys -> original Wan keys (what the official release and ComfyUI files use)."""
    out: dict[str, Any] = {}
    for key, value in state_dict.items():
        new = key
        if new == FLF_POS_DIFFUSERS:
            new = FLF_POS_ORIGINAL
        for old, repl in _DIT_TO_ORIGINAL:
            new = new.replace(old, repl)
        if new.startswith("blocks."):
            new = re.sub(r"^(blocks\.\d+)\.scale_shift_table$", r"\1.modulation", new)
            new = new.replace(".norm2.", ".norm@.").replace(".norm3.", ".norm2.").replace(".norm@.", ".norm3.")
        elif new == "scale_shift_table":
            new = "head.modulation"
        elif new.startswith("proj_out."):
            new = "head.head." + new[len("proj_out.") :]
        out[new] = value
    back = to_diffusers_layout({k: None for k in out})
    if set(back) != set(state_dict):
        raise RuntimeError(f"Wan key inversion does not round-trip: {sorted(set(back) ^ set(state_dict))[:5]}")
    return out


_RESNET_TO_ORIGINAL = {
    "norm1.gamma": "residual.0.gamma",
    "conv1.weight": "residual.2.weight",
    "conv1.bias": "residual.2.bias",
    "norm2.gamma": "residual.3.gamma",
    "conv2.weight": "residual.6.weight",
    "conv2.bias": "residual.6.bias",
    "conv_shortcut.weight": "shortcut.weight",
    "conv_shortcut.bias": "shortcut.bias",
}


_FIXED_TO_ORIGINAL = {
    "quant_conv.": "conv1.",
    "post_quant_conv.": "conv2.",
    "encoder.conv_in.": "encoder.conv1.",
    "decoder.conv_in.": "decoder.conv1.",
    "encoder.norm_out.gamma": "encoder.head.0.gamma",
    "decoder.norm_out.gamma": "decoder.head.0.gamma",
    "encoder.conv_out.": "encoder.head.2.",
    "decoder.conv_out.": "decoder.head.2.",
}


def vae_to_original_layout(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """diffusers keys -> original Wan 2.1 VAE keys (the inverse of diffusers' ``convert_wan_vae_to_diffusers``)."""
    out: dict[str, Any] = {}
    for key, value in state_dict.items():
        new = key
        if m := re.match(r"^(encoder|decoder)\.mid_block\.resnets\.(\d)\.(.+)$", key):
            new = f"{m[1]}.middle.{2 * int(m[2])}.{_RESNET_TO_ORIGINAL[m[3]]}"
        elif m := re.match(r"^(encoder|decoder)\.mid_block\.attentions\.0\.(.+)$", key):
            new = f"{m[1]}.middle.1.{m[2]}"
        elif m := re.match(r"^encoder\.down_blocks\.(\d+)\.(.+)$", key):
            new = f"encoder.downsamples.{m[1]}.{_RESNET_TO_ORIGINAL.get(m[2], m[2])}"
        elif m := re.match(r"^decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)$", key):
            new = f"decoder.upsamples.{4 * int(m[1]) + int(m[2])}.{_RESNET_TO_ORIGINAL[m[3]]}"
        elif m := re.match(r"^decoder\.up_blocks\.(\d+)\.upsamplers\.0\.(.+)$", key):
            new = f"decoder.upsamples.{4 * int(m[1]) + 3}.{m[2]}"
        else:
            for old, repl in _FIXED_TO_ORIGINAL.items():
                if key.startswith(old):
                    new = repl + key[len(old) :]
                    break
        out[new] = value
    from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers

    back = convert_wan_vae_to_diffusers({k: None for k in out})
    if set(back) != set(state_dict):
        raise RuntimeError(f"Wan VAE key inversion does not round-trip: {sorted(set(back) ^ set(state_dict))[:5]}")
    return out

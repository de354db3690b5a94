"""How a loaded Wan DiT runs on a device: attention kernel and diffusers group offloading.

Attention goes through diffusers' attention dispatcher (``set_attention_backend``):
``sdpa`` is torch's scaled-dot-product attention (diffusers' ``native``; on a GPU torch
picks its flash / memory-efficient kernel itself), ``flash`` needs the ``flash_attn``
package, ``sage`` the ``sageattention`` package (8-bit QK: faster, slightly different
numbers), and ``auto`` takes ``flash`` when it is installed and the device is a CUDA GPU,
else ``sdpa``. CPU always runs ``sdpa``.

Low-VRAM mode uses diffusers group offloading (``enable_group_offload``): ``block`` keeps
one transformer block on the GPU at a time (prefetched on a side stream), ``leaf`` one
layer at a time (least memory, slowest). Offloading only makes sense on a CUDA device; on
CPU it is recorded and ignored.
"""

from __future__ import annotations

import dataclasses

import torch

from avatar_cascade.models.attention import check_attention, resolve_attention, set_attention
from avatar_cascade.models.offload import base_module, check_offload, enable_offload
from avatar_cascade.models.wan_dit import WanDiT


def configure_dit(
    dit: WanDiT, attention: str = "auto", offload: str = "none", device: torch.device | None = None
) -> WanDiT:
    """A handle with the attention choice and offload mode; offloading is switched on now when
    ``device`` is a CUDA device (so model placement never moves the whole DiT onto the GPU)."""
    check_attention(attention)
    check_offload(offload)
    if device is not None and offload != "none":
        for _, module in dit.experts():
            enable_offload(module, offload, device)
    return dataclasses.replace(dit, attention=attention, offload=offload)


def prepare_dit(dit: WanDiT, device: torch.device, loras: bool = True) -> None:
    """Make the shared modules compute what ``dit`` describes on ``device``: attention kernel,
    offloading and (with ``loras``) the handle's LoRA adapters and strengths. Called at the start
    of every sampling run; ``loras=False`` leaves the adapters as the last LoRA node set them
    (for callers that pass a bare transformer, which carries no LoRA stack)."""
    from avatar_cascade.models.lora import activate_loras

    if dit.native:  # ComfyUI places, patches and runs it (nodes/comfy_native.py)
        return
    kernel = resolve_attention(dit.attention, device)
    for _, module in dit.experts():
        module = base_module(module)
        if dit.offload != "none":
            enable_offload(module, dit.offload, device)
        set_attention(module, kernel)
    if loras:
        activate_loras(dit)

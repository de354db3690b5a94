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
import importlib.util
import logging

import torch

from ..errors import InputError
from .wan_dit import WanDiT

log = logging.getLogger(__name__)

ATTENTION_CHOICES = ("auto", "sdpa", "flash", "sage")
OFFLOAD_CHOICES = ("none", "block", "leaf")
_BACKENDS = {"sdpa": "native", "flash": "flash", "sage": "sage"}
_PACKAGES = {"flash": "flash_attn", "sage": "sageattention"}


def check_attention(name: str) -> str:
    if name not in ATTENTION_CHOICES:
        raise InputError("attention", name, "is not a known attention kernel", f"choose {', '.join(ATTENTION_CHOICES)}")
    return name


def check_offload(name: str) -> str:
    if name not in OFFLOAD_CHOICES:
        raise InputError("offload", name, "is not a known offload mode", f"choose {', '.join(OFFLOAD_CHOICES)}")
    return name


def _installed(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


def resolve_attention(name: str, device: torch.device) -> str:
    """The kernel that will run: ``"sdpa" | "flash" | "sage"`` for ``name`` on ``device``."""
    check_attention(name)
    if device.type != "cuda":
        if name in _PACKAGES:
            log.warning("attention '%s' needs a CUDA GPU; running SDPA on %s", name, device)
        return "sdpa"
    if name == "auto":
        return "flash" if _installed(_PACKAGES["flash"]) else "sdpa"
    if name in _PACKAGES and not _installed(_PACKAGES[name]):
        raise InputError(
            "attention",
            name,
            f"needs the '{_PACKAGES[name]}' package, which is not installed",
            f"install {_PACKAGES[name]} into ComfyUI's Python, or choose 'sdpa'",
        )
    return name


def set_attention(transformer: torch.nn.Module, kernel: str) -> None:
    """Point every attention processor of ``transformer`` at ``kernel`` (``"sdpa" | "flash" | "sage"``).

    diffusers' ``set_attention_backend`` also changes the process-wide default backend;
    that default is restored so other models (and CPU runs) keep SDPA.
    """
    if getattr(transformer, "_avatar_attention", "sdpa") == kernel:
        return
    from diffusers.models.attention_dispatch import _AttentionBackendRegistry

    previous = _AttentionBackendRegistry._active_backend
    try:
        if kernel == "sdpa":
            transformer.reset_attention_backend()
        else:
            transformer.set_attention_backend(_BACKENDS[kernel])
    finally:
        _AttentionBackendRegistry._active_backend = previous
    transformer._avatar_attention = kernel
    log.info("attention kernel: %s", kernel)


def is_group_offloaded(module: torch.nn.Module) -> bool:
    """True when diffusers group offloading manages ``module``'s placement (do not ``.to()`` it)."""
    try:
        from diffusers.hooks.group_offloading import _is_group_offload_enabled
    except ImportError:  # pragma: no cover - older diffusers
        return False
    return _is_group_offload_enabled(module)


def enable_offload(transformer: torch.nn.Module, mode: str, onload_device: torch.device) -> bool:
    """Enable group offloading (``"block"`` or ``"leaf"``) onto ``onload_device``; False when not applied."""
    check_offload(mode)
    if mode == "none" or is_group_offloaded(transformer):
        return False
    if onload_device.type != "cuda":
        log.info("offload '%s' ignored on %s (only useful on a CUDA GPU)", mode, onload_device)
        return False
    kwargs = {"num_blocks_per_group": 1} if mode == "block" else {}
    transformer.enable_group_offload(
        onload_device=onload_device,
        offload_device=torch.device("cpu"),
        offload_type="block_level" if mode == "block" else "leaf_level",
        use_stream=True,
        **kwargs,
    )
    log.info("group offloading (%s level) onto %s", mode, onload_device)
    return True


def reapply_offload(transformer: torch.nn.Module) -> None:
    """Re-apply group offloading after modules changed (LoRA layers injected or removed)."""
    if is_group_offloaded(transformer):
        from diffusers.hooks.group_offloading import _maybe_remove_and_reapply_group_offloading

        _maybe_remove_and_reapply_group_offloading(transformer)


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


def prepare_dit(dit: WanDiT, device: torch.device) -> None:
    """Make the shared modules compute what ``dit`` describes on ``device``: attention kernel,
    offloading, LoRA adapters and strengths. Called at the start of every sampling run."""
    from .lora import activate_loras

    kernel = resolve_attention(dit.attention, device)
    for _, module in dit.experts():
        if dit.offload != "none":
            enable_offload(module, dit.offload, device)
        set_attention(module, kernel)
    activate_loras(dit)

"""models.offload."""

from __future__ import annotations

import logging

import torch

from avatar_cascade.core.errors import InputError

log = logging.getLogger(__name__)

OFFLOAD_CHOICES = ("none", "block", "leaf")


def check_offload(name: str) -> str:
    if name not in OFFLOAD_CHOICES:
        raise InputError("offload", name, "is not a known offload mode", f"choose {', '.join(OFFLOAD_CHOICES)}")
    return name


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
    # block: pre-pinned CPU copies for fast prefetch; leaf (the least-memory mode): pin on the fly to spare RAM
    kwargs = {"num_blocks_per_group": 1} if mode == "block" else {"low_cpu_mem_usage": True}
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


def base_module(module: torch.nn.Module) -> torch.nn.Module:
    """The DiT inside wrappers that keep it as ``.inner`` (e.g. negative-frame guidance)."""
    while isinstance(getattr(module, "_modules", {}).get("inner"), torch.nn.Module):
        module = module._modules["inner"]
    return module

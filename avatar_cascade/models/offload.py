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


# -- streamed weights: ComfyUI may load the pack's models partially ---------------------------------------------


def _input_device(args: tuple, kwargs: dict) -> torch.device | None:
    for x in (*args, *kwargs.values()):
        if isinstance(x, torch.Tensor) and x.is_floating_point():
            return x.device
    return None


def _fetch_weights(module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
    """Before the module runs: its own parameters that sit on another device than its input (left offloaded by
    a partial load) are copied there for this call; parameters already there are not touched."""
    device = _input_device(args, kwargs)
    if device is None:
        return
    params = module._parameters
    moved = [(name, p) for name, p in params.items() if p is not None and p.device != device]
    for name, p in moved:  # a copy stands in for the call; the Parameter object itself is kept untouched
        params[name] = torch.nn.Parameter(p.detach().to(device, non_blocking=True), requires_grad=False)
    object.__setattr__(module, "_avatar_streamed", moved)


def _drop_weights(module: torch.nn.Module, *_: object) -> None:
    """After the module ran: its own Parameters (on their offloaded storage) are back; the copies are freed."""
    for name, p in getattr(module, "_avatar_streamed", ()):
        module._parameters[name] = p
    object.__setattr__(module, "_avatar_streamed", ())


def make_streamable(module: torch.nn.Module) -> int:
    """Let ComfyUI load ``module`` partially (its low-VRAM loading): every submodule with parameters of its own
    is flagged ``comfy_cast_weights`` (what ComfyUI's partial load looks for) and, when it runs on inputs on
    another device than its weights, copies them there for that call only, as ComfyUI's cast layers do. Fully
    loaded modules copy nothing. Returns the number of modules prepared (0 when prepared before, or when
    diffusers group offloading places the module itself)."""
    if getattr(module, "_avatar_streamable", False) or is_group_offloaded(module):
        return 0
    n = 0
    for m in module.modules():
        if not any(True for _ in m.parameters(recurse=False)):
            continue
        if not hasattr(m, "comfy_cast_weights"):
            m.comfy_cast_weights = False
        m.register_forward_pre_hook(_fetch_weights, with_kwargs=True)
        m.register_forward_hook(_drop_weights)
        n += 1
    object.__setattr__(module, "_avatar_streamable", True)
    return n


def largest_weight(module: torch.nn.Module) -> torch.Tensor:
    """The module's largest parameter: where inputs go and in which dtype. Under a partial load ComfyUI keeps
    the largest layers on the GPU and leaves small ones offloaded, so the first parameter could be on the CPU."""
    return max(module.parameters(), key=lambda p: p.numel() * p.element_size())

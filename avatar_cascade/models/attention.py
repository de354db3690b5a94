"""models.attention."""

from __future__ import annotations

import importlib.util
import logging

import torch

from avatar_cascade.core.errors import InputError

log = logging.getLogger(__name__)

ATTENTION_CHOICES = ("auto", "sdpa", "flash", "sage")
_BACKENDS = {"sdpa": "native", "flash": "flash", "sage": "sage"}
_PACKAGES = {"flash": "flash_attn", "sage": "sageattention"}


def check_attention(name: str) -> str:
    if name not in ATTENTION_CHOICES:
        raise InputError("attention", name, "is not a known attention kernel", f"choose {', '.join(ATTENTION_CHOICES)}")
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

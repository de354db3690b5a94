"""Attention kernel of a Wan DiT: the choice, its check, and diffusers' attention backends."""

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

    Uses the model's own ``set_attention_backend`` (diffusers' documented way to choose a
    model's backend): the choice sits on the model's processors, so every forward of this
    model uses it, on any thread, with no context to enter around the forward. The method
    also makes ``kernel`` the process-wide default; calling it inside diffusers' public
    ``attention_backend`` context manager puts the previous default back on exit, so other
    models (and CPU runs) keep theirs.
    """
    if getattr(transformer, "_avatar_attention", "sdpa") == kernel:
        return
    from diffusers import attention_backend

    with attention_backend(_BACKENDS["sdpa"]):  # restores the process-wide default on exit
        if kernel == "sdpa":
            transformer.reset_attention_backend()
        else:
            transformer.set_attention_backend(_BACKENDS[kernel])
    transformer._avatar_attention = kernel
    log.info("attention kernel: %s", kernel)

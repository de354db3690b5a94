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
import os

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


def base_module(module: torch.nn.Module) -> torch.nn.Module:
    """The DiT inside wrappers that keep it as ``.inner`` (e.g. negative-frame guidance)."""
    while isinstance(getattr(module, "_modules", {}).get("inner"), torch.nn.Module):
        module = module._modules["inner"]
    return module


def prepare_dit(dit: WanDiT, device: torch.device, loras: bool = True) -> None:
    """Make the shared modules compute what ``dit`` describes on ``device``: attention kernel,
    offloading and (with ``loras``) the handle's LoRA adapters and strengths. Called at the start
    of every sampling run; ``loras=False`` leaves the adapters as the last LoRA node set them
    (for callers that pass a bare transformer, which carries no LoRA stack)."""
    from .lora import activate_loras

    kernel = resolve_attention(dit.attention, device)
    for _, module in dit.experts():
        module = base_module(module)
        if dit.offload != "none":
            enable_offload(module, dit.offload, device)
        set_attention(module, kernel)
    if loras:
        activate_loras(dit)


# ------------------------------------------------------------ memory


def latent_tokens(dit: WanDiT, frames: int, height: int, width: int) -> int:
    """DiT tokens of one clip: latent frames x (h / patch) x (w / patch) (Wan VAE: 4x time, 8x space;
    Wan 2.2 TI2V-5B: 16x space)."""
    cfg = dit.transformer.config
    spatial = 16 if cfg.in_channels == 48 else 8
    p_t, p_h, p_w = cfg.patch_size
    return ((frames - 1) // 4 + 1) // p_t * (height // spatial // p_h) * (width // spatial // p_w)


def activation_bytes_per_row(dit: WanDiT, frames: int, height: int, width: int) -> int:
    """Peak activation memory of one forward row (one clip, one guidance branch), in bytes.

    Per token inside a block (no autograd): self-attention holds the hidden state, q/k/v,
    rotary copies and the attention output in the compute dtype plus two float32 temporaries
    (~``dim * (9b + 8)`` bytes); the feed-forward holds its ``ffn_dim`` activation twice
    (~``dim * (3b + 8) + 2 * ffn_dim * b``). The larger of the two, x1.25 for allocator slack.
    """
    cfg = dit.transformer.config
    dim = cfg.num_attention_heads * cfg.attention_head_dim
    b = next(dit.transformer.parameters()).dtype.itemsize
    per_token = max(dim * (9 * b + 8), dim * (3 * b + 8) + 2 * cfg.ffn_dim * b)
    return int(latent_tokens(dit, frames, height, width) * per_token * 1.25)


def _weight_bytes(module: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


def estimate_batch_size(
    dit: WanDiT,
    frames: int,
    height: int,
    width: int,
    free_bytes: int,
    rows_per_clip: int = 2,
    max_batch: int = 64,
    weights_resident: bool | None = None,
) -> int:
    """Clips per forward pass that fit in ``free_bytes`` of device memory (at least 1).

    Args:
        dit: the DiT handle (weights, LoRAs, A14B experts and offload mode are counted).
        frames / height / width: clip length in pixel frames and size in pixels.
        free_bytes: free device memory (see :func:`free_memory_bytes`).
        rows_per_clip: forward rows per clip: 1 without CFG, 2 with CFG, 3 with audio CFG.
        weights_resident: weights already on the device (not to be subtracted again);
            None = look where the parameters are.
    """
    experts = [m for _, m in dit.experts()]
    if weights_resident is None:
        weights_resident = all(next(m.parameters()).device.type != "cpu" for m in experts)
    weights = 0
    if not weights_resident:
        weights = sum(_weight_bytes(m) for m in experts)
        if dit.offload != "none":  # group offloading keeps about one block (and its prefetch) on the device
            weights = weights * 3 // max(1, dit.transformer.config.num_layers)
    reserve = max(1 << 30, free_bytes // 20)  # VAE workspace, allocator fragmentation
    per_clip = activation_bytes_per_row(dit, frames, height, width) * max(1, rows_per_clip)
    fits = (free_bytes - weights - reserve) // max(1, per_clip)
    if fits < 1:
        log.warning(
            "one clip needs ~%.1f GiB beyond %.1f GiB of weights but only %.1f GiB are free; trying batch 1",
            per_clip / 2**30,
            weights / 2**30,
            free_bytes / 2**30,
        )
    return int(max(1, min(max_batch, fits)))


def free_memory_bytes(device: torch.device) -> int:
    """Free memory on ``device`` in bytes: CUDA free + torch's cached-but-unused blocks; CPU available RAM."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))

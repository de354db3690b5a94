"""models.dit_memory."""

from __future__ import annotations

import logging
import os

import torch

from avatar_cascade.models.wan_dit import WanDiT

log = logging.getLogger(__name__)

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
    b = (getattr(dit.transformer, "block_dtype", None) or next(dit.transformer.parameters()).dtype).itemsize
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
    if dit.native:  # ComfyUI places (and may partially load) a native model's weights itself
        weights_resident = True
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

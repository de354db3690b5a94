"""sampling.memory."""

from __future__ import annotations

from typing import Any

from avatar_cascade.core.runtime import Runtime
from avatar_cascade.sampling.loop import as_dit


def estimate_batch_size(
    dit: Any, frames: int, height: int, width: int, free_bytes: int, rows_per_clip: int = 2, max_batch: int = 64
) -> int:
    """Clips per forward pass that fit in ``free_bytes`` of device memory (at least 1).

    Weights (unless already on the device; one block's worth with group offloading) plus,
    per clip, ``rows_per_clip`` (2 with CFG, 3 with audio CFG) forward rows of activations
    estimated from the latent token count and the DiT's width (see
    :func:`avatar_cascade.models.dit_runtime.activation_bytes_per_row`).
    """
    from avatar_cascade.models.dit_memory import estimate_batch_size as estimate

    return estimate(as_dit(dit), frames, height, width, free_bytes, rows_per_clip=rows_per_clip, max_batch=max_batch)


def free_memory_bytes(runtime: Runtime) -> int:
    """Free memory of ``runtime.device`` in bytes: ComfyUI's own figure inside ComfyUI (``runtime.free_memory``),
    else CUDA free + torch's unused cache, or available RAM on CPU."""
    from avatar_cascade.models.dit_memory import free_memory_bytes as free

    if runtime.free_memory is not None:
        return int(runtime.free_memory(runtime.device))
    return free(runtime.device)


def auto_batch_size(
    runtime: Runtime,
    num_clips: int,
    dit=None,
    frames: int = 81,
    height: int = 480,
    width: int = 832,
    rows_per_clip: int = 2,
) -> int:
    """Clips (or blueprint windows) per forward pass when not given: 2 on CPU; on CUDA estimated from free
    memory (an out-of-memory error halves it)."""
    if runtime.device.type != "cuda":
        return max(1, min(2, num_clips))
    est = estimate_batch_size(dit, frames, height, width, free_memory_bytes(runtime), rows_per_clip=rows_per_clip)
    return max(1, min(num_clips, est))

"""Resident weight bytes of an fp8 Wan DiT: kept fp8 (the pack's loader now) against dequantized (before).

A Wan 2.1 I2V 14B-shaped DiT (dim 5120, 40 heads, FFN 13824, text 4096, in 36, CLIP image embedder) with
``blocks`` blocks (few, to fit a CPU box; the per-block figures scale to 40), random weights, saved as
Comfy-Org's ``*_fp8_e4m3fn.safetensors`` are (every weight matrix fp8, the rest bf16), loaded twice:

* ``kept_bytes``: ``load_wan_dit`` (fp8 Linear weights stay fp8, cast per layer);
* ``dequantized_bytes``: ``load_wan_dit(keep_fp8=False)`` (fp8 -> bf16, the old behaviour);

with ``file_bytes`` the file's size, ``peak_rss_mb`` the process's peak RSS after both loads, and the
40-block projection of each. ComfyUI's own loader (UNETLoader) keeps fp8 weights in fp8 with manual-cast ops
on a GPU; on CPU it picks float32. The VRAM of a forward on a GPU (the issue's 14B comparison through the
native path vs the pack's loader) needs a GPU: not measured here.

Run: ``python -m benchmarks.bench_fp8_memory [--only NAME]``.
"""

from __future__ import annotations

import resource

from benchmarks.harness import Case, main

FULL_BLOCKS = 40


def fp8_memory(blocks: int = 1) -> dict:
    import tempfile
    from pathlib import Path

    import torch
    from accelerate import init_empty_weights
    from diffusers import WanTransformer3DModel
    from safetensors.torch import save_file

    from avatar_cascade.demo.layouts import dit_to_original_layout
    from avatar_cascade.models.cast import resident_bytes
    from avatar_cascade.models.wan_dit import load_bundled_config, load_wan_dit

    cfg = dict(load_bundled_config("wan2.1-i2v-14b"), num_layers=blocks)
    with init_empty_weights():
        shapes = WanTransformer3DModel.from_config(cfg).state_dict()
    gen = torch.Generator().manual_seed(0)
    sd = {}
    for k, v in shapes.items():
        t = torch.randn(v.shape, generator=gen, dtype=torch.float32) * 0.02
        sd[k] = t.to(torch.float8_e4m3fn) if v.ndim == 2 else t.to(torch.bfloat16)
        del t
    sd = dit_to_original_layout(sd)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "wan2.1_i2v_14B_shaped_fp8_e4m3fn.safetensors"
        save_file({f"model.diffusion_model.{k}": v.contiguous() for k, v in sd.items()}, str(path))
        del sd
        file_bytes = path.stat().st_size
        kept = resident_bytes(load_wan_dit(path).transformer)
        old = resident_bytes(load_wan_dit(path, keep_fp8=False).transformer)
    per_block = {"kept": kept, "dequantized": old, "file": file_bytes}
    return {
        "blocks": blocks,
        "file_bytes": file_bytes,
        "kept_bytes": kept,
        "dequantized_bytes": old,
        "kept_over_file": kept / file_bytes,
        "dequantized_over_file": old / file_bytes,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "note": f"x{FULL_BLOCKS / blocks:g} for the full 14B blocks (embeddings once): {per_block}",
    }


CASES = [Case("wan21_i2v_14b_shaped_1_block", fp8_memory, {"blocks": 1})]

if __name__ == "__main__":
    main(__name__, CASES)

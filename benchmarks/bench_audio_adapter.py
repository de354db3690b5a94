"""Extra cost of InfiniteTalk-style audio conditioning per denoising step.

One "step" is one DiT forward over the guidance rows (3 rows per clip with audio CFG:
cond, drop_text, uncond). Each case times the same forward without the adapter and inside
``audio_context`` and reports the overhead; ``proj_ms`` is the audio projection alone.

* ``tiny_cpu``: the tiny demo DiT (2 blocks, width 24) with the tiny adapter, on CPU.
* ``wan1.3b_width_2blocks_cpu``: the same at the real 1.3B width (1536, ffn 8960) but 2 blocks,
  one row, 33 frames at 128x128 (576 tokens), float32 on CPU: the per-block overhead at a real width.
* ``wan1.3b_shape_gpu``: a Wan 2.1 1.3B-shaped DiT (width 1536, 30 blocks, random bf16
  weights) with a random adapter of InfiniteTalk's sizes (12 x 768 features, 32 tokens),
  81 frames at 480x832 (32,760 tokens per row), 3 rows. Skipped without CUDA.

    python -m benchmarks.bench_audio_adapter [--only tiny]
"""

from __future__ import annotations

import time

from benchmarks.harness import Case, main


def _time(fn, repeats: int, sync) -> float:
    fn()  # warm-up
    sync()
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync()
    return (time.perf_counter() - t0) / repeats * 1000.0


def _measure(transformer, adapter, x, text, audio, repeats: int, sync) -> dict:
    import torch

    t = torch.full((x.shape[0],), 700.0, device=x.device)

    def forward():
        with torch.no_grad():
            transformer(hidden_states=x, timestep=t, encoder_hidden_states=text, return_dict=False)

    def adapted():
        with adapter.audio_context(audio):
            forward()

    def proj():
        with torch.no_grad():
            adapter.module.audio_proj(adapter.prepare_audio(audio))

    base_ms = _time(forward, repeats, sync)
    audio_ms = _time(adapted, repeats, sync)
    return {
        "base_ms": base_ms,
        "audio_ms": audio_ms,
        "overhead_pct": 100.0 * (audio_ms / base_ms - 1.0),
        "proj_ms": _time(proj, repeats, sync),
        "adapter_params_m": sum(p.numel() for p in adapter.module.parameters()) / 1e6,
    }


def tiny_cpu(rows: int = 3, latent_frames: int = 6, size: int = 16, repeats: int = 20) -> dict:
    """Tiny DiT on CPU: ``rows`` forward rows, ``latent_frames`` x (size/2)^2 tokens per row."""
    import tempfile
    from pathlib import Path

    import torch
    from safetensors.torch import save_file

    from avatar_cascade.demo.models import tiny_dit_state_dict
    from avatar_cascade.demo.tiny_weights import write_tiny_audio_adapter
    from avatar_cascade.models.audio_adapter import load_audio_adapter
    from avatar_cascade.models.wan_dit import load_bundled_config, load_wan_dit

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        dit_path = Path(tmp) / "dit.safetensors"
        save_file({k: v.contiguous() for k, v in tiny_dit_state_dict(0).items()}, str(dit_path))
        dit = load_wan_dit(dit_path)
        ad_path = write_tiny_audio_adapter(Path(tmp) / "ad.safetensors", load_bundled_config("avatar-cascade-tiny-wan"))
        adapter = load_audio_adapter(ad_path, dit)
    handle = adapter.attach(dit)
    frames = (latent_frames - 1) * 4 + 1
    x = torch.randn(rows, 36, latent_frames, size, size)
    text = torch.randn(rows, 16, 32)
    audio = torch.randn(rows, frames, 5, 3, 32)
    out = _measure(dit.transformer, handle.audio_adapter, x, text, audio, repeats, lambda: None)
    return {**out, "tokens_per_row": latent_frames * (size // 2) ** 2}


def wan13b_shape(
    rows: int = 3,
    frames: int = 81,
    height: int = 480,
    width: int = 832,
    repeats: int = 3,
    layers: int | None = None,
    device: str = "cuda",
) -> dict:
    """Wan-1.3B-shaped DiT (``layers`` blocks, default all 30) with an InfiniteTalk-sized random adapter.

    bf16 on CUDA, float32 on CPU.
    """
    import torch
    from diffusers import WanTransformer3DModel

    from avatar_cascade.models.audio_adapter import AudioAdapter, AudioAdapterModule
    from avatar_cascade.models.audio_proj import AudioAdapterConfig
    from avatar_cascade.models.wan_dit import WanDiT, load_bundled_config

    dev = torch.device(device)
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    if dev.type == "cpu":
        torch.set_num_threads(1)
    cfg = {**load_bundled_config("wan2.1-t2v-1.3b"), "in_channels": 36}
    cfg["num_layers"] = layers or cfg["num_layers"]
    with torch.device(dev):
        transformer = WanTransformer3DModel.from_config(cfg).to(dtype).eval()
        dim = cfg["num_attention_heads"] * cfg["attention_head_dim"]
        config = AudioAdapterConfig(dim=dim, num_layers=cfg["num_layers"], num_heads=cfg["num_attention_heads"])
        module = AudioAdapterModule(config).to(dtype).eval()
    dit = WanDiT(transformer=transformer, variant="wan2.1-t2v-1.3b", identity="", path=None)
    handle = AudioAdapter(module).attach(dit)
    t_lat = (frames - 1) // 4 + 1
    x = torch.randn(rows, 36, t_lat, height // 8, width // 8, device=dev, dtype=dtype)
    text = torch.randn(rows, 512, cfg["text_dim"], device=dev, dtype=dtype)
    audio = torch.randn(rows, frames, 5, 12, 768, device=dev, dtype=dtype)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    out = _measure(transformer, handle.audio_adapter, x, text, audio, repeats, sync)
    return {**out, "tokens_per_row": t_lat * (height // 16) * (width // 16), "blocks": cfg["num_layers"]}


CASES = [
    Case("tiny_cpu", tiny_cpu),
    Case(
        "wan1.3b_width_2blocks_cpu",
        wan13b_shape,
        {"rows": 1, "frames": 33, "height": 128, "width": 128, "repeats": 2, "layers": 2, "device": "cpu"},
    ),
    Case("wan1.3b_shape_gpu", wan13b_shape, {"device": "cuda"}, needs_gpu=True),
]

if __name__ == "__main__":
    main(__spec__.name if __spec__ else __name__, CASES)  # "-m" runs name the module __main__

"""DiT sampler core: step time, time outside the transformer, batch throughput, VRAM, model FLOP utilisation.

CPU cases run the tiny DiT (bundled ``avatar-cascade-tiny-wan`` config, random weights) through
``sample_clips`` and time the transformer forwards with hooks, so the share of each step
spent outside the DiT (scheduler, guidance arithmetic, LoRA activation, copies) is visible.
GPU cases (skipped without CUDA) build a Wan-1.3B-shaped I2V DiT (1.3B config with 36 input
channels, random bf16 weights) at 480p x 81 frames and compare our per-step time with
diffusers' ``WanImageToVideoPipeline`` on the same module and settings, then measure
clips-per-batch throughput for 1..8 clips, peak VRAM and model FLOP utilisation (FLOPs
counted analytically, :func:`forward_flops`).

Run: ``python -m benchmarks.bench_dit [--only NAME]``.
"""

from __future__ import annotations

import os
import statistics
import time

import torch

from benchmarks.harness import Case, main

PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12, "4090": 165e12}


def forward_flops(config, tokens: int, text_tokens: int = 512, image_tokens: int = 0) -> float:
    """Matmul FLOPs of one DiT forward row (2 per multiply-add): per block, self-attention projections
    (4 d^2 per token) and scores (QK^T, PV: 2 N^2 d), cross-attention (q, o per token; k, v per text and
    image token; scores against text + image tokens), feed-forward (2 d f per token); plus patch
    embedding and head."""
    d = config.num_attention_heads * config.attention_head_dim
    f, n = config.ffn_dim, config.num_layers
    ctx = text_tokens + image_tokens
    per_block = (
        2 * tokens * 4 * d * d  # self-attn q, k, v, o
        + 2 * 2 * tokens * tokens * d  # QK^T and PV
        + 2 * tokens * 2 * d * d  # cross-attn q, o
        + 2 * ctx * 2 * d * d  # cross-attn k, v (text + image)
        + 2 * 2 * tokens * ctx * d  # cross-attn scores
        + 2 * tokens * 2 * d * f  # feed-forward
    )
    patch = 2 * tokens * d * config.in_channels * 4 + 2 * tokens * d * config.out_channels * 4
    return float(n * per_block + patch)


def _tokens(frames: int, height: int, width: int) -> int:
    return ((frames - 1) // 4 + 1) * (height // 16) * (width // 16)


def _requests(n: int, frames: int, text_dim: int, text_tokens: int):
    from avatar_cascade.sampling.conditioning import ClipRequest

    g = torch.Generator().manual_seed(0)
    return [
        ClipRequest(
            num_frames=frames,
            known={},
            prompt_embeds=torch.randn(text_tokens, text_dim, generator=g),
            negative_embeds=torch.randn(text_tokens, text_dim, generator=g),
            seed=i,
        )
        for i in range(n)
    ]


def _condition(n: int, frames: int, height: int, width: int) -> torch.Tensor:
    lat = (frames - 1) // 4 + 1
    return torch.randn(n, 20, lat, height // 8, width // 8, generator=torch.Generator().manual_seed(1))


class _ForwardTimer:
    """Wall time spent inside a module's forward (synchronised on CUDA)."""

    def __init__(self, module: torch.nn.Module, cuda: bool) -> None:
        self.total, self.calls, self._t0, self.cuda = 0.0, 0, 0.0, cuda
        self.handles = [module.register_forward_pre_hook(self._pre), module.register_forward_hook(self._post)]

    def _sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def _pre(self, *_):
        self._sync()
        self._t0 = time.perf_counter()

    def _post(self, *_):
        self._sync()
        self.total += time.perf_counter() - self._t0
        self.calls += 1

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def cpu_tiny(frames: int = 17, size: int = 64, clips: int = 2, steps: int = 8, lora: bool = False) -> dict:
    """Tiny DiT on CPU: per-step time and the share of it outside the transformer forward."""
    from diffusers import WanTransformer3DModel

    from avatar_cascade.core.runtime import Runtime
    from avatar_cascade.models.wan_dit import WanDiT, load_bundled_config
    from avatar_cascade.sampling.loop import sample_clips
    from avatar_cascade.sampling.settings import SamplerSettings

    torch.set_num_threads(1)  # tiny matmuls: threads only add contention
    cfg = load_bundled_config("avatar-cascade-tiny-wan")
    torch.manual_seed(0)
    dit = WanDiT(WanTransformer3DModel.from_config(cfg).eval(), "avatar-cascade-tiny-wan", "bench", None)
    if lora:
        dit = _with_tiny_lora(dit)
    rt = Runtime(device=torch.device("cpu"), show_progress=False)
    reqs, cond = _requests(clips, frames, cfg["text_dim"], 32), _condition(clips, frames, size, size)
    s = SamplerSettings(steps=steps, guidance=5.0, shift=3.0)
    sample_clips(dit, cond, reqs, SamplerSettings(steps=1), rt)  # warm-up
    timer = _ForwardTimer(dit.transformer, cuda=False)
    t0 = time.perf_counter()
    sample_clips(dit, cond, reqs, s, rt)
    total = time.perf_counter() - t0
    timer.remove()
    return {
        "load_avg_1min": os.getloadavg()[0],  # other processes on this machine skew CPU timings
        "tokens_per_clip": _tokens(frames, size, size),
        "step_ms": 1000 * total / steps,
        "dit_forward_ms": 1000 * timer.total / max(1, timer.calls),
        "outside_dit_share": 1 - timer.total / total,
    }


def _with_tiny_lora(dit):
    import tempfile
    from pathlib import Path

    from safetensors.torch import save_file

    from avatar_cascade.demo.layouts import dit_to_original_layout as to_original_layout
    from avatar_cascade.models.lora import apply_loras, lora_spec

    g = torch.Generator().manual_seed(0)
    sd = {}
    for k, v in to_original_layout(dit.transformer.state_dict()).items():
        if k.startswith("blocks.") and k.endswith(".weight") and v.ndim == 2:
            sd[f"diffusion_model.{k[:-7]}.lora_A.weight"] = torch.randn(4, v.shape[1], generator=g) * 0.1
            sd[f"diffusion_model.{k[:-7]}.lora_B.weight"] = torch.randn(v.shape[0], 4, generator=g) * 0.1
    path = Path(tempfile.mkdtemp()) / "bench_lora.safetensors"
    save_file(sd, str(path))
    return apply_loras(dit, [lora_spec(path, 0.8)])


def _gpu_dit():
    from diffusers import WanTransformer3DModel

    from avatar_cascade.models.wan_dit import WanDiT, load_bundled_config

    cfg = load_bundled_config("wan2.1-t2v-1.3b") | {"in_channels": 36}
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = WanTransformer3DModel.from_config(cfg)
    model = model.to(torch.bfloat16).eval().requires_grad_(False)
    return WanDiT(model, "wan-1.3b-shaped-i2v", "bench", None)


def _peak_flops() -> float | None:
    name = torch.cuda.get_device_name(0)
    return next((v for k, v in PEAK_BF16_FLOPS.items() if k in name), None)


def _ours(dit, clips: int, frames: int, height: int, width: int, steps: int) -> dict:
    from avatar_cascade.core.runtime import Runtime
    from avatar_cascade.sampling.loop import sample_clips
    from avatar_cascade.sampling.settings import SamplerSettings

    rt = Runtime(device=torch.device("cuda"), show_progress=False)
    reqs = _requests(clips, frames, dit.transformer.config.text_dim, 512)
    cond = _condition(clips, frames, height, width)
    s = SamplerSettings(steps=steps, guidance=5.0, shift=3.0)
    sample_clips(dit, cond, reqs, SamplerSettings(steps=1, guidance=5.0), rt)  # warm-up
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    stamps = [time.perf_counter()]

    def on_step(i, n, latents):
        torch.cuda.synchronize()
        stamps.append(time.perf_counter())

    timer = _ForwardTimer(dit.transformer, cuda=True)
    sample_clips(dit, cond, reqs, s, rt, on_step=on_step)
    timer.remove()
    step = statistics.median(b - a for a, b in zip(stamps, stamps[1:]))
    total = stamps[-1] - stamps[0]
    flops = 2 * clips * forward_flops(dit.transformer.config, _tokens(frames, height, width))
    peak = _peak_flops()
    return {
        "step_s": step,
        "step_s_per_clip": step / clips,
        "outside_dit_share": 1 - timer.total / total,
        "tflops_per_s": flops / step / 1e12,
        "mfu": flops / step / peak if peak else None,
        "peak_vram_gb": torch.cuda.max_memory_allocated() / 2**30,
    }


def gpu_ours_vs_diffusers(frames: int = 81, height: int = 480, width: int = 832, steps: int = 6) -> dict:
    """Wan-1.3B-shaped I2V DiT, one clip, CFG 5: our per-step time vs ``WanImageToVideoPipeline``'s."""
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanImageToVideoPipeline
    from PIL import Image

    from avatar_cascade.models.wan_vae import load_bundled_config as vae_config

    dit = _gpu_dit()
    ours = _ours(dit, 1, frames, height, width, steps)

    with torch.device("cuda"):
        vae = AutoencoderKLWan.from_config(vae_config("wan2.1-vae"))
    vae = vae.to(torch.bfloat16).eval()
    scheduler = UniPCMultistepScheduler(
        num_train_timesteps=1000, prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0
    )
    pipe = WanImageToVideoPipeline(
        tokenizer=None, text_encoder=None, vae=vae, scheduler=scheduler, transformer=dit.transformer
    )
    g = torch.Generator().manual_seed(0)
    text = torch.randn(1, 512, dit.transformer.config.text_dim, generator=g).to("cuda", torch.bfloat16)
    image = Image.new("RGB", (width, height), (128, 100, 90))
    stamps: list[float] = []

    def on_step_end(pipeline, i, t, kwargs):
        torch.cuda.synchronize()
        stamps.append(time.perf_counter())
        return kwargs

    def run(n_steps):
        stamps.clear()
        with torch.no_grad():
            pipe(
                image=image,
                prompt_embeds=text,
                negative_prompt_embeds=-text,
                height=height,
                width=width,
                num_frames=frames,
                num_inference_steps=n_steps,
                guidance_scale=5.0,
                output_type="latent",
                callback_on_step_end=on_step_end,
            )

    run(2)  # warm-up
    torch.cuda.reset_peak_memory_stats()
    run(steps)
    theirs = statistics.median(b - a for a, b in zip(stamps, stamps[1:]))
    return {
        **{f"ours_{k}": v for k, v in ours.items()},
        "diffusers_step_s": theirs,
        "diffusers_peak_vram_gb": torch.cuda.max_memory_allocated() / 2**30,
        "speedup_vs_diffusers": theirs / ours["step_s"],
    }


def gpu_batch(clips: int = 1, frames: int = 81, height: int = 480, width: int = 832, steps: int = 4) -> dict:
    """Clips per batch: per-step time, per-clip time, peak VRAM and MFU, plus what the estimate would choose."""
    from avatar_cascade.sampling.memory import estimate_batch_size

    dit = _gpu_dit()
    free, total = torch.cuda.mem_get_info()
    chosen = estimate_batch_size(dit, frames, height, width, free)
    return {
        **_ours(dit, clips, frames, height, width, steps),
        "estimate_for_free_memory": chosen,
        "gpu_total_gb": total / 2**30,
    }


CASES = [
    Case("cpu_tiny_2clips_17f_64px", cpu_tiny, {"frames": 17, "size": 64, "clips": 2, "steps": 8}),
    Case("cpu_tiny_2clips_17f_64px_lora", cpu_tiny, {"frames": 17, "size": 64, "clips": 2, "steps": 8, "lora": True}),
    Case("cpu_tiny_1clip_33f_128px", cpu_tiny, {"frames": 33, "size": 128, "clips": 1, "steps": 4}),
    Case("gpu_1.3b_480p81_ours_vs_diffusers", gpu_ours_vs_diffusers, {}, needs_gpu=True),
    *[Case(f"gpu_1.3b_480p81_batch{n}", gpu_batch, {"clips": n}, needs_gpu=True) for n in (1, 2, 4, 8)],
]

if __name__ == "__main__":
    main(__name__, CASES)

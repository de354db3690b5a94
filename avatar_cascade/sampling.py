"""Sampler core shared by the blueprint sampler and the first-last-frame refiner.

Flow-matching sampling of a Wan DiT over a *batch of clips*, each with its own
first/last frame, prompt, negative prompt and seed. Conditioning follows the
Wan I2V / FLF2V layout used by diffusers' ``WanImageToVideoPipeline``: the DiT
input is ``concat([noisy latents (16), mask (4), condition latents (16)])``
where the condition video holds the known frames and zeros elsewhere.

Each clip's noise comes from its own CPU generator seeded with the clip seed,
so a clip renders the same whether it is sampled alone or inside a batch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from .errors import InputError
from .runtime import Runtime

log = logging.getLogger(__name__)

SCHEDULERS = ("unipc", "euler", "dpm++")
MAX_SEED = 2**63 - 1


@dataclass(frozen=True)
class SamplerSettings:
    """Denoising settings.

    Attributes:
        steps: number of denoising steps.
        guidance: text classifier-free guidance scale (1.0 = off: one forward per step).
        shift: flow-matching timestep shift (Wan: 3.0 at 480p, 5.0 at 720p).
        scheduler: one of ``SCHEDULERS``.
    """

    steps: int = 30
    guidance: float = 5.0
    shift: float = 5.0
    scheduler: str = "unipc"

    def check(self) -> SamplerSettings:
        if self.scheduler not in SCHEDULERS:
            raise InputError(
                "scheduler", self.scheduler, "is not a known sampler", f"choose one of {', '.join(SCHEDULERS)}"
            )
        if not 1 <= self.steps <= 1000:
            raise InputError(
                "steps", self.steps, "must be between 1 and 1000", "use 20-40 for full quality, 4-8 for drafts"
            )
        if not 0.0 <= self.guidance <= 30.0:
            raise InputError("guidance", self.guidance, "must be between 0 and 30", "use 4-6 for Wan")
        if not 0.0 < self.shift <= 50.0:
            raise InputError("shift", self.shift, "must be in (0, 50]", "use 3.0 at 480p, 5.0 at 720p")
        return self


def check_seed(seed: int, input_name: str = "seed") -> int:
    if not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise InputError(input_name, seed, f"must be an integer in [0, {MAX_SEED}]", "pick a non-negative 63-bit seed")
    return seed


def make_scheduler(settings: SamplerSettings):
    """A fresh diffusers flow-matching scheduler for one sampling run."""
    from diffusers import DPMSolverMultistepScheduler, FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler

    settings.check()
    if settings.scheduler == "unipc":
        return UniPCMultistepScheduler(
            num_train_timesteps=1000, prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=settings.shift
        )
    if settings.scheduler == "dpm++":
        return DPMSolverMultistepScheduler(
            num_train_timesteps=1000,
            prediction_type="flow_prediction",
            use_flow_sigmas=True,
            flow_shift=settings.shift,
            algorithm_type="dpmsolver++",
        )
    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=settings.shift)


@dataclass
class ClipRequest:
    """One clip to sample.

    Attributes:
        num_frames: clip length in pixel frames (4n+1).
        first_frame: ``[3,H,W]`` in [-1,1], or None.
        last_frame: ``[3,H,W]`` in [-1,1], or None.
        prompt_embeds: ``[L,D]`` text embedding.
        negative_embeds: ``[L,D]`` negative text embedding.
        seed: noise seed of this clip.
    """

    num_frames: int
    first_frame: torch.Tensor | None
    last_frame: torch.Tensor | None
    prompt_embeds: torch.Tensor
    negative_embeds: torch.Tensor
    seed: int


def derive_seed(run_seed: int, index: int, salt: int = 0) -> int:
    """Seed of clip ``index`` derived from the run seed (stable, 63-bit)."""
    import hashlib

    h = hashlib.sha256(f"{run_seed}:{index}:{salt}".encode()).digest()
    return int.from_bytes(h[:8], "little") & MAX_SEED


def build_condition_video(
    requests: Sequence[ClipRequest], height: int, width: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel condition videos ``[B,3,T,H,W]`` and frame masks ``[B,T]`` (1 = known frame)."""
    n = requests[0].num_frames
    video = torch.zeros(len(requests), 3, n, height, width)
    known = torch.zeros(len(requests), n)
    for b, r in enumerate(requests):
        if r.first_frame is not None:
            video[b, :, 0] = r.first_frame
            known[b, 0] = 1
        if r.last_frame is not None:
            video[b, :, n - 1] = r.last_frame
            known[b, n - 1] = 1
    return video, known


def latent_mask(known: torch.Tensor, latent_hw: tuple[int, int], temporal: int = 4) -> torch.Tensor:
    """Wan's 4-channel latent mask ``[B,4,T_lat,h,w]`` from a per-frame mask ``[B,T]``.

    The first pixel frame is repeated ``temporal`` times so the mask folds into
    latent frames of ``temporal`` pixel frames each (as diffusers' Wan I2V does).
    """
    b, _ = known.shape
    h, w = latent_hw
    first = known[:, :1].repeat_interleave(temporal, dim=1)
    m = torch.cat([first, known[:, 1:]], dim=1)  # [B, T+temporal-1]
    m = m.view(b, -1, temporal)  # [B, T_lat, temporal]
    m = m.permute(0, 2, 1)[..., None, None].expand(b, temporal, m.shape[1], h, w)
    return m.contiguous()


def encode_condition(vae, requests: Sequence[ClipRequest], height: int, width: int, runtime: Runtime) -> torch.Tensor:
    """VAE-encode the clips' condition videos: returns ``[B, 4 + z, T_lat, h, w]``."""
    video, known = build_condition_video(requests, height, width)
    param = next(vae.vae.parameters())
    with torch.no_grad():
        lat = vae.encode(video.to(param.device, param.dtype)).float()
    mask = latent_mask(known, lat.shape[-2:], vae.temporal_factor).to(lat.device)
    return torch.cat([mask, lat], dim=1)


def initial_noise(requests: Sequence[ClipRequest], shape: tuple[int, ...]) -> torch.Tensor:
    """Per-clip noise, each from its own CPU generator (device independent)."""
    out = []
    for r in requests:
        g = torch.Generator("cpu").manual_seed(r.seed)
        out.append(torch.randn(shape, generator=g, dtype=torch.float32))
    return torch.stack(out)


StepCallback = Callable[[int, int, torch.Tensor], None]


def sample_clips(
    transformer: torch.nn.Module,
    condition: torch.Tensor,
    requests: Sequence[ClipRequest],
    settings: SamplerSettings,
    runtime: Runtime,
    desc: str = "sampling",
    on_step: StepCallback | None = None,
) -> torch.Tensor:
    """Denoise a batch of clips; returns clean latents ``[B, z, T_lat, h, w]`` (float32).

    Args:
        transformer: a diffusers ``WanTransformer3DModel`` placed on ``runtime.device``.
        condition: ``[B, 4 + z, T_lat, h, w]`` from :func:`encode_condition`.
        requests: one :class:`ClipRequest` per batch row (same ``num_frames``).
        settings: steps / guidance / shift / scheduler.
        runtime: device, dtype, progress and interrupt hooks.
        on_step: called as ``on_step(step, total, latents)`` after every step
            (latent previews).
    """
    settings.check()
    if len({r.num_frames for r in requests}) != 1:
        raise ValueError("sample_clips needs clips of one length per batch")
    device = runtime.device
    dtype = next(transformer.parameters()).dtype
    z = condition.shape[1] - 4
    shape = (z, *condition.shape[2:])
    latents = initial_noise(requests, shape).to(device)
    condition = condition.to(device, dtype)
    pos = torch.stack([r.prompt_embeds for r in requests]).to(device, dtype)
    neg = torch.stack([r.negative_embeds for r in requests]).to(device, dtype)
    use_cfg = settings.guidance != 1.0

    scheduler = make_scheduler(settings)
    scheduler.set_timesteps(settings.steps, device=device)
    timesteps = scheduler.timesteps
    bar = runtime.progress(len(timesteps), desc)
    try:
        for i, t in enumerate(timesteps):
            runtime.check_interrupt()
            x = torch.cat([latents.to(dtype), condition], dim=1)
            with torch.no_grad():
                if use_cfg:
                    out = transformer(
                        hidden_states=torch.cat([x, x]),
                        timestep=t.expand(2 * x.shape[0]).to(device),
                        encoder_hidden_states=torch.cat([pos, neg]),
                        return_dict=False,
                    )[0].float()
                    cond, uncond = out.chunk(2)
                    pred = uncond + settings.guidance * (cond - uncond)
                else:
                    pred = transformer(
                        hidden_states=x,
                        timestep=t.expand(x.shape[0]).to(device),
                        encoder_hidden_states=pos,
                        return_dict=False,
                    )[0].float()
            latents = scheduler.step(pred, t, latents, return_dict=False)[0]
            bar.update(1)
            if on_step is not None:
                on_step(i, len(timesteps), latents)
    finally:
        bar.close()
    return latents.float()


def decode_to_uint8(vae, latents: torch.Tensor) -> torch.Tensor:
    """Decode latents ``[B,z,T_lat,h,w]`` to frames ``[B,T,H,W,3]`` uint8 on CPU."""
    param = next(vae.vae.parameters())
    with torch.no_grad():
        video = vae.decode(latents.to(param.device, param.dtype)).float()
    video = ((video.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return video.permute(0, 2, 3, 4, 1).cpu()


def image_to_model_space(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``[H,W,3]`` float 0..1 (any size) -> ``[3,height,width]`` in [-1,1], resized (bicubic, antialiased)."""
    import torch.nn.functional as F

    x = image.permute(2, 0, 1)[None].float()
    if x.shape[-2:] != (height, width):
        x = F.interpolate(x, size=(height, width), mode="bicubic", align_corners=False, antialias=True)
    return x[0].clamp(0, 1) * 2 - 1


def check_resolution(width: int, height: int, prefix: str = "") -> tuple[int, int]:
    """Width/height must be multiples of 16 (VAE x8, DiT patch x2)."""
    for name, v in ((f"{prefix}width", width), (f"{prefix}height", height)):
        if not isinstance(v, int) or v < 16 or v % 16 or v > 4096:
            fixed = max(16, min(4096, (int(v) // 16) * 16)) if isinstance(v, (int, float)) else 480
            raise InputError(name, v, "must be a multiple of 16 between 16 and 4096", f"use {fixed}")
    return width, height

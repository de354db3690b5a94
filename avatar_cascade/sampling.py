"""Sampler core shared by the blueprint sampler and the first-last-frame refiner.

Flow-matching sampling of a Wan DiT over a *batch of clips*, each with its own
first/last frame, prompt, negative prompt and seed. Conditioning follows the
Wan I2V / FLF2V layout used by diffusers' ``WanImageToVideoPipeline``: the DiT
input is ``concat([noisy latents (16), mask (4), condition latents (16)])``
where the condition video holds the known frames and zeros elsewhere.

Each clip's noise comes from its own CPU generator seeded with the clip seed,
so a clip renders the same whether it is sampled alone or inside a batch.

The model is a :class:`~avatar_cascade.models.wan_dit.WanDiT` handle (a bare
transformer is accepted too): a Wan 2.2 A14B pair switches from the high-noise to
the low-noise expert at ``boundary_ratio`` (as diffusers does); Wan 2.1 I2V/FLF2V
DiTs get CLIP-vision tokens of the known frames; a DiT with an ``audio_adapter``
gets each clip's audio window and InfiniteTalk's three-branch guidance.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

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
        guidance_2: text guidance of a Wan 2.2 A14B low-noise expert (None = ``guidance``).
        audio_guidance: audio guidance scale of InfiniteTalk's three-branch CFG, used when the
            DiT has an audio adapter and the clips carry audio (1.0 = plain CFG with audio in
            both branches; InfiniteTalk's default 4.0).
    """

    steps: int = 30
    guidance: float = 5.0
    shift: float = 5.0
    scheduler: str = "unipc"
    guidance_2: float | None = None
    audio_guidance: float = 4.0

    def check(self) -> SamplerSettings:
        if self.scheduler not in SCHEDULERS:
            raise InputError(
                "scheduler", self.scheduler, "is not a known sampler", f"choose one of {', '.join(SCHEDULERS)}"
            )
        if not 1 <= self.steps <= 1000:
            raise InputError(
                "steps", self.steps, "must be between 1 and 1000", "use 20-40 for full quality, 4-8 for drafts"
            )
        for name, value in (("guidance", self.guidance), ("guidance_2", self.guidance_2)):
            if value is not None and not 0.0 <= value <= 30.0:
                raise InputError(name, value, "must be between 0 and 30", "use 4-6 for Wan (1.0 with distill LoRAs)")
        if not 0.0 <= self.audio_guidance <= 30.0:
            raise InputError("audio_guidance", self.audio_guidance, "must be between 0 and 30", "use 3-5")
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
        audio: the clip's windowed audio features ``[F, W, L, D]`` (frames, window, encoder
            layers, width) for a DiT with an audio adapter, or None.
    """

    num_frames: int
    first_frame: torch.Tensor | None
    last_frame: torch.Tensor | None
    prompt_embeds: torch.Tensor
    negative_embeds: torch.Tensor
    seed: int
    audio: torch.Tensor | None = field(default=None, repr=False)


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
TEXT_TOKENS_WITH_IMAGE = 512  # diffusers' Wan attention splits image tokens off a 512-token text context


def as_dit(model: Any):
    """A :class:`WanDiT` handle for ``model`` (a handle, or a bare ``WanTransformer3DModel``)."""
    from .models.wan_dit import WanDiT

    if isinstance(model, WanDiT):
        return model
    return WanDiT(transformer=model, variant="unknown", identity="", path=None)


def _fit_text(embeds: torch.Tensor, length: int) -> torch.Tensor:
    """``[B,L,D]`` padded with zeros (UMT5 pads with zeros past the prompt) or cut to ``length`` tokens."""
    if embeds.shape[1] >= length:
        return embeds[:, :length]
    return torch.nn.functional.pad(embeds, (0, 0, 0, length - embeds.shape[1]))


Branch = tuple[str, bool, bool]  # (name, prompt (else negative), audio (else silent audio))


def _branches(settings: SamplerSettings, expert: str, with_audio: bool) -> tuple[float, tuple[Branch, ...]]:
    """Text guidance of this step's expert and the guidance branches to run."""
    g = settings.guidance_2 if expert == "low_noise" and settings.guidance_2 is not None else settings.guidance
    if with_audio:
        from .models.audio_guidance import guidance_branches

        return g, guidance_branches(g, settings.audio_guidance)
    if g == 1.0:
        return g, (("cond", True, True),)
    return g, (("cond", True, True), ("drop_text", False, True))


def _denoise_step(module, x, t, pos, neg, img, audio, adapter, g, ag, branches) -> torch.Tensor:
    """One guided prediction: every branch is a block of rows of one batched forward.

    Without audio: ``drop_text + g * (cond - drop_text)`` (plain CFG; ``cond`` alone when g = 1).
    With audio (InfiniteTalk): cond = (prompt, audio), drop_text = (negative, audio), uncond =
    (negative, silent audio), combined by ``audio_guidance.combine_guidance``
    (``uncond + g * (cond - drop_text) + ag * (drop_text - uncond)``).
    """
    b, rows = x.shape[0], len(branches)
    text = torch.cat([pos if with_text else neg for _, with_text, _ in branches])
    kwargs = {}
    if img is not None:
        kwargs["encoder_hidden_states_image"] = torch.cat([img] * rows)
    audio_rows = None
    if audio is not None:
        audio_rows = torch.cat([audio if with_audio else torch.zeros_like(audio) for _, _, with_audio in branches])
    context = adapter.audio_context(audio_rows) if adapter is not None else contextlib.nullcontext()
    with context, torch.no_grad():
        out = module(
            hidden_states=torch.cat([x] * rows),
            timestep=t.expand(rows * b).to(x.device),
            encoder_hidden_states=text,
            return_dict=False,
            **kwargs,
        )[0].float()
    preds = dict(zip([name for name, _, _ in branches], out.chunk(rows)))
    if audio is not None:
        from .models.audio_guidance import combine_guidance

        return combine_guidance(preds, g, ag)
    if "drop_text" in preds:
        return preds["drop_text"] + g * (preds["cond"] - preds["drop_text"])
    return preds["cond"]


def _dtype(module: torch.nn.Module) -> torch.dtype:
    return next(module.parameters()).dtype


def sample_clips(
    transformer: Any,
    condition: torch.Tensor,
    requests: Sequence[ClipRequest],
    settings: SamplerSettings,
    runtime: Runtime,
    desc: str = "sampling",
    on_step: StepCallback | None = None,
    image_encoder=None,
    image_embeds: torch.Tensor | None = None,
) -> torch.Tensor:
    """Denoise a batch of clips; returns clean latents ``[B, z, T_lat, h, w]`` (float32).

    Args:
        transformer: the DiT: a ``WanDiT`` handle (its LoRA stack, A14B experts, audio adapter and
            attention kernel are honoured) or a bare diffusers ``WanTransformer3DModel`` (then the
            LoRA adapters stay as the last LoRA node set them); placed on ``runtime.device`` by
            the caller (``runtime.use_models(*dit.modules())``).
        condition: ``[B, 4 + z, T_lat, h, w]`` from :func:`encode_condition`.
        requests: one :class:`ClipRequest` per batch row (same ``num_frames``).
        settings: steps / guidance / shift / scheduler / expert and audio guidance.
        runtime: device, dtype, progress and interrupt hooks.
        on_step: called as ``on_step(step, total, latents)`` after every step (latent previews).
        image_encoder: a ``CLIPVision`` handle; needed by Wan 2.1 I2V / FLF2V DiTs (image embedder),
            which get the penultimate CLIP tokens of each clip's first (and last) frame.
        image_embeds: precomputed tokens ``[B, n*T, D]`` instead of ``image_encoder``.
    """
    from .models.clip_vision import frame_tokens, wan_image_rows
    from .models.dit_runtime import prepare_dit
    from .models.wan_dit import WanDiT

    settings.check()
    dit = as_dit(transformer)
    if len({r.num_frames for r in requests}) != 1:
        raise ValueError("sample_clips needs clips of one length per batch")
    device = runtime.device
    prepare_dit(dit, device, loras=isinstance(transformer, WanDiT))
    z = condition.shape[1] - 4
    latents = initial_noise(requests, (z, *condition.shape[2:])).to(device)
    pos = torch.stack([r.prompt_embeds for r in requests])
    neg = torch.stack([r.negative_embeds for r in requests])
    img = None
    if dit.has_image_embedder:
        if image_embeds is None and image_encoder is None:
            raise InputError(
                "clip_vision",
                None,
                f"this DiT ({dit.variant}) is a Wan 2.1 image-to-video model that also needs CLIP-vision tokens",
                "connect a CLIP Vision loader with clip_vision_h.safetensors",
            )
        img = image_embeds
        if img is None:
            frames = [(r.first_frame, r.last_frame) for r in requests]
            with runtime.use_models(image_encoder.model):
                img = frame_tokens(image_encoder, frames)
        pos, neg = _fit_text(pos, TEXT_TOKENS_WITH_IMAGE), _fit_text(neg, TEXT_TOKENS_WITH_IMAGE)
    adapter = dit.audio_adapter
    audio = None
    if adapter is not None and any(r.audio is not None for r in requests):
        ref = next(r.audio for r in requests if r.audio is not None)
        audio = torch.stack([r.audio if r.audio is not None else torch.zeros_like(ref) for r in requests])

    scheduler = make_scheduler(settings)
    scheduler.set_timesteps(settings.steps, device=device)
    timesteps = scheduler.timesteps
    bar = runtime.progress(len(timesteps), desc)
    current = None
    try:
        for i, t in enumerate(timesteps):
            runtime.check_interrupt()
            expert, module = dit.expert_at(float(t))
            if expert != current:
                if current is not None:
                    log.info("step %d (t=%.0f): switching to the %s expert", i, float(t), expert)
                current = expert
                dtype = _dtype(module)
                cond_x = condition.to(device, dtype)
                pos_d, neg_d = pos.to(device, dtype), neg.to(device, dtype)
                audio_d = audio.to(device, dtype) if audio is not None else None
                img_d = img.to(device, dtype) if img is not None else None
            g, branches = _branches(settings, expert, audio is not None)
            x = torch.cat([latents.to(dtype), cond_x], dim=1)
            with wan_image_rows(module, img_d) as img_rows:
                pred = _denoise_step(
                    module, x, t, pos_d, neg_d, img_rows, audio_d, adapter, g, settings.audio_guidance, branches
                )
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


def estimate_batch_size(
    dit: Any, frames: int, height: int, width: int, free_bytes: int, rows_per_clip: int = 2, max_batch: int = 64
) -> int:
    """Clips per forward pass that fit in ``free_bytes`` of device memory (at least 1).

    Weights (unless already on the device; one block's worth with group offloading) plus,
    per clip, ``rows_per_clip`` (2 with CFG, 3 with audio CFG) forward rows of activations
    estimated from the latent token count and the DiT's width (see
    :func:`avatar_cascade.models.dit_runtime.activation_bytes_per_row`).
    """
    from .models.dit_runtime import estimate_batch_size as estimate

    return estimate(as_dit(dit), frames, height, width, free_bytes, rows_per_clip=rows_per_clip, max_batch=max_batch)


def free_memory_bytes(runtime: Runtime) -> int:
    """Free memory of ``runtime.device`` in bytes (CUDA: free + torch's unused cache; CPU: available RAM)."""
    from .models.dit_runtime import free_memory_bytes as free

    return free(runtime.device)

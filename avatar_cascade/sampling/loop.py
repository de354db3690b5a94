"""The one denoising loop: blueprint windows, refiner sub-clips and the keyframe lift.

Flow-matching sampling of a Wan DiT over a *batch of clips*, each with its own
known frames, prompt, negative prompt and seed. Conditioning follows the
Wan I2V / FLF2V layout used by diffusers' ``WanImageToVideoPipeline``: the DiT
input is ``concat([noisy latents (16), mask (4), condition latents (16)])``
where the condition video holds the known frames and zeros elsewhere.

Each clip's noise comes from its own CPU generator seeded with the clip seed,
so a clip renders the same whether it is sampled alone or inside a batch. A run
starts from that noise (all steps), or from clean latents noised to the level of a
later step (``start_step`` / ``initial_latents``: img2img, the keyframe lift).

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
from dataclasses import dataclass
from typing import Any

import torch

from avatar_cascade.core.errors import InputError
from avatar_cascade.core.runtime import Runtime
from avatar_cascade.sampling.conditioning import ClipRequest
from avatar_cascade.sampling.settings import SamplerSettings, make_scheduler
from avatar_cascade.sampling.vace import prepend_reference_frames

log = logging.getLogger(__name__)


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
    from avatar_cascade.models.wan_dit import WanDiT

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
        from avatar_cascade.models.audio_guidance import guidance_branches

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
    if getattr(module, "takes_branches", False):  # a native ComfyUI model: which rows are cond / uncond
        kwargs["branches"] = tuple(name for name, _, _ in branches)
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
        from avatar_cascade.models.audio_guidance import combine_guidance

        return combine_guidance(preds, g, ag)
    if "drop_text" in preds:
        return preds["drop_text"] + g * (preds["cond"] - preds["drop_text"])
    return preds["cond"]


def _dtype(module: torch.nn.Module) -> torch.dtype:
    """The dtype the DiT's inputs are given in: what the loader set (a native ComfyUI model casts them itself:
    float32), else that of the patch embedding (not the first parameter: diffusers keeps some in float32)."""
    given = getattr(module, "compute_dtype", None)
    if given is not None:
        return given
    patch = getattr(module, "patch_embedding", None)
    return patch.weight.dtype if patch is not None else next(module.parameters()).dtype


@dataclass
class _Inputs:
    """What the forwards of one run read besides the latents (moved to each expert's device and dtype)."""

    condition: torch.Tensor
    pos: torch.Tensor
    neg: torch.Tensor
    img: torch.Tensor | None
    audio: torch.Tensor | None

    def to(self, device: torch.device, dtype: torch.dtype) -> _Inputs:
        parts = (self.condition, self.pos, self.neg, self.img, self.audio)
        return _Inputs(*(None if x is None else x.to(device, dtype) for x in parts))


def _image_tokens(dit, requests: Sequence[ClipRequest], runtime: Runtime, image_encoder, image_embeds):
    """CLIP-vision tokens ``[B, n*T, D]`` of the clips' first (and last) known frame; None for a DiT without
    an image embedder."""
    from avatar_cascade.models.clip_vision import frame_tokens

    if not dit.has_image_embedder:
        return None
    if image_embeds is not None:
        return image_embeds
    if image_encoder is None:
        raise InputError(
            "clip_vision",
            None,
            f"this DiT ({dit.variant}) is a Wan 2.1 image-to-video model that also needs CLIP-vision tokens",
            "connect a CLIP Vision loader with clip_vision_h.safetensors",
        )
    with runtime.use_models(*image_encoder.modules()):
        return frame_tokens(image_encoder, [(r.first_frame, r.last_frame) for r in requests])


def _inputs(dit, condition, requests, runtime, image_encoder, image_embeds, adapter) -> _Inputs:
    """Text embeddings (padded to 512 tokens next to image tokens), image tokens and audio windows."""
    pos = torch.stack([r.prompt_embeds for r in requests])
    neg = torch.stack([r.negative_embeds for r in requests])
    img = _image_tokens(dit, requests, runtime, image_encoder, image_embeds)
    if img is not None:
        pos, neg = _fit_text(pos, TEXT_TOKENS_WITH_IMAGE), _fit_text(neg, TEXT_TOKENS_WITH_IMAGE)
    audio = None
    if adapter is not None and any(r.audio is not None for r in requests):
        ref = next(r.audio for r in requests if r.audio is not None)
        audio = torch.stack([r.audio if r.audio is not None else torch.zeros_like(ref) for r in requests])
    return _Inputs(condition, pos, neg, img, audio)


def start_latents(
    scheduler,
    requests: Sequence[ClipRequest],
    shape: tuple[int, ...],
    start_step: int = 0,
    initial_latents: torch.Tensor | None = None,
) -> torch.Tensor:
    """The latents a run starts from (float32, CPU): each clip's seeded noise ``[B, *shape]``, or, with
    ``initial_latents`` (img2img), those clean latents noised to the level of step ``start_step``:
    ``(1 - sigma) * x0 + sigma * noise`` with ``sigma = scheduler.sigmas[start_step]``.

    ``scheduler`` has its timesteps set; with initial latents it is told to begin at ``start_step``.
    """
    noise = initial_noise(requests, shape)
    if initial_latents is None:
        return noise
    scheduler.set_begin_index(start_step)
    sigma = float(scheduler.sigmas[start_step])
    return (1 - sigma) * initial_latents.float().cpu() + sigma * noise


def _check_run(requests, condition, settings: SamplerSettings, start_step: int, initial_latents) -> None:
    if len({r.num_frames for r in requests}) != 1:
        raise ValueError("sample_clips needs clips of one length per batch")
    if not 0 <= start_step < settings.steps:
        raise ValueError(f"start_step {start_step} must be 0 to steps - 1 ({settings.steps - 1})")
    if start_step and initial_latents is None:
        raise ValueError("start_step > 0 needs initial_latents (the clean latents to noise to that step)")
    shape = (len(requests), condition.shape[1] - 4, *condition.shape[2:])
    if initial_latents is not None and tuple(initial_latents.shape) != shape:
        raise ValueError(f"initial_latents are {tuple(initial_latents.shape)}, the condition needs {shape}")


def clean_first_latent(condition: torch.Tensor, lead: int = 0) -> tuple[torch.Tensor, torch.Tensor, int] | None:
    """InfiniteTalk's pinned first latent frame: ``(rows, clean latents [B,z,1,h,w], latent frame)`` for the
    clips whose pixel frame 0 is known (the Wan VAE is causal: latent frame 0 encodes pixel frame 0 alone, so
    the condition latents hold its clean latent), or None when no clip has a known first frame. ``lead``:
    latent frames in front of the clip (VACE reference frames)."""
    rows = condition[:, 0, lead, 0, 0] > 0.5
    if not bool(rows.any()):
        return None
    return rows, condition[:, 4:, lead : lead + 1], lead


def _pin_first(latents: torch.Tensor, pinned) -> torch.Tensor:
    if pinned is None:
        return latents
    rows, clean, at = pinned
    out = latents.clone()
    out[rows, :, at : at + 1] = clean[rows].to(out.device, out.dtype)
    return out


def _run_steps(dit, scheduler, latents, inputs: _Inputs, adapter, settings, runtime, start_step, desc, on_step,
               lead: int = 0):  # fmt: skip
    """The denoising loop from ``start_step``: expert switching, guidance, hooks; clean latents (float32).

    With an audio adapter and audio (InfiniteTalk), the latent frame of a known first frame is replaced by
    its clean latent before every forward and after every step, as InfiniteTalk's ``multitalk.py`` does
    (``latent[:, :cur_motion_frames_latent_num] = latent_motion_frames``).
    """
    from avatar_cascade.models.clip_vision import wan_image_rows

    pinned = clean_first_latent(inputs.condition, lead) if adapter is not None and inputs.audio is not None else None
    timesteps = scheduler.timesteps[start_step:]
    bar = runtime.progress(len(timesteps), desc)
    current = None
    try:
        for i, t in enumerate(timesteps):
            runtime.check_interrupt()
            expert, module = dit.expert_at(float(t))
            if expert != current:
                if current is not None:
                    log.info("step %d (t=%.0f): switching to the %s expert", start_step + i, float(t), expert)
                current, dtype = expert, _dtype(module)
                here = inputs.to(runtime.device, dtype)
            g, branches = _branches(settings, expert, here.audio is not None)
            latents = _pin_first(latents, pinned)
            x = torch.cat([latents.to(dtype), here.condition], dim=1)
            ag = settings.audio_guidance
            with wan_image_rows(module, here.img) as img_rows:
                pred = _denoise_step(module, x, t, here.pos, here.neg, img_rows, here.audio, adapter, g, ag, branches)
            latents = _pin_first(scheduler.step(pred, t, latents, return_dict=False)[0], pinned)
            bar.update(1)
            if on_step is not None:
                on_step(i, len(timesteps), latents)
    finally:
        bar.close()
    return latents.float()


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
    *,
    start_step: int = 0,
    initial_latents: torch.Tensor | None = None,
    use_audio_adapter: bool = True,
    reference_frames: int = 0,
) -> torch.Tensor:
    """Denoise a batch of clips; returns clean latents ``[B, z, T_lat, h, w]`` (float32).

    Args:
        transformer: the DiT: a ``WanDiT`` handle (its LoRA stack, A14B experts, audio adapter and
            attention kernel are honoured) or a bare diffusers ``WanTransformer3DModel`` (then the
            LoRA adapters stay as the last LoRA node set them); placed on ``runtime.device`` by
            the caller (``runtime.use_models(*dit.modules())``).
        condition: ``[B, 4 + z, T_lat, h, w]`` from :func:`~.conditioning.encode_condition`.
        requests: one :class:`ClipRequest` per batch row (same ``num_frames``).
        settings: steps / guidance / shift / scheduler / expert and audio guidance.
        runtime: device, dtype, progress and interrupt hooks.
        on_step: called as ``on_step(step, total, latents)`` after every step run (latent previews).
        image_encoder: a ``CLIPVision`` handle; needed by Wan 2.1 I2V / FLF2V DiTs (image embedder),
            which get the penultimate CLIP tokens of each clip's first (and last) known frame.
        image_embeds: precomputed tokens ``[B, n*T, D]`` instead of ``image_encoder``.
        start_step: first step of the ``settings.steps`` schedule to run (0 = all of them).
        initial_latents: clean latents ``[B, z, T_lat, h, w]`` to start from (img2img): noised to
            step ``start_step``'s level with each clip's seeded noise (see :func:`start_latents`);
            None = pure noise (then ``start_step`` must be 0).
        use_audio_adapter: False runs the DiT without its audio adapter (no audio context at all).
        reference_frames: latent frames in front of the clip (VACE reference images, whose context the caller
            feeds): the noise gets them (the condition zeros there), they are denoised with the clip, hear
            silence (audio adapter) and are dropped from the result (:mod:`.vace`).
    """
    from avatar_cascade.models.dit_runtime import prepare_dit
    from avatar_cascade.models.wan_dit import WanDiT

    dit = as_dit(transformer)
    settings.check()
    if not settings.resolved:  # direct callers; the stages resolve (and key) their settings themselves
        from avatar_cascade.sampling.settings import resolve_sampler

        h, w = (8 * n for n in condition.shape[-2:])
        settings = resolve_sampler(settings, dit, w, h, with_audio=use_audio_adapter and dit.audio_adapter is not None)
    _check_run(requests, condition, settings, start_step, initial_latents)
    if reference_frames and initial_latents is not None:
        raise ValueError("reference_frames and initial_latents do not go together")
    condition = prepend_reference_frames(condition, reference_frames)
    prepare_dit(dit, runtime.device, loras=isinstance(transformer, WanDiT))
    adapter = dit.audio_adapter if use_audio_adapter else None
    inputs = _inputs(dit, condition, requests, runtime, image_encoder, image_embeds, adapter)
    scheduler = make_scheduler(settings)
    scheduler.set_timesteps(settings.steps, device=runtime.device)
    shape = (condition.shape[1] - 4, *condition.shape[2:])
    latents = start_latents(scheduler, requests, shape, start_step, initial_latents).to(runtime.device)
    rows = 3 if inputs.audio is not None else 2  # the most guidance branches one forward batches
    silent = adapter.silent_lead(reference_frames) if adapter and reference_frames else contextlib.nullcontext()
    with dit.sampling_session((rows * len(requests), condition.shape[1] + shape[0], *shape[1:])), silent:
        lat = _run_steps(dit, scheduler, latents, inputs, adapter, settings, runtime, start_step, desc, on_step,
                         reference_frames)  # fmt: skip
    return lat[:, :, reference_frames:]

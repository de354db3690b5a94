"""Lifting keyframes to the refine resolution with a short DiT refinement anchored on the reference.

A blueprint frame resized to the refine resolution is soft. With
``denoise`` > 0 each lifted keyframe gets an img2img pass through the same Wan
I2V DiT the refiner uses:

1. a 5-frame clip is built: frame 0 is the reference, frames 1-4 (one latent
   frame) the resized keyframe; it is VAE-encoded (``x0``);
2. ``x0`` is noised to the flow-matching level of step ``steps - n`` where
   ``n = max(1, round(steps * denoise))``: ``x = (1 - sigma) x0 + sigma * noise``
   (noise from a CPU generator seeded per seam, so the result is device independent);
3. the last ``n`` steps of the normal schedule are run with the I2V condition
   "frame 0 = reference" (mask + latents; for Wan 2.1 I2V/FLF2V DiTs also the
   reference's CLIP-vision tokens), the shot's prompt and classifier-free guidance;
4. the last decoded frame is the lifted keyframe.

The reference conditions the clip, so detail and identity are pulled toward it
while the pose and expression of the keyframe (kept by the partial noise) stay.
``denoise`` 0 turns it off (the default); 0.2-0.4 refines, 1.0 replaces the
keyframe with a new frame.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch

from avatar_cascade.core.errors import InputError
from avatar_cascade.core.runtime import Runtime
from avatar_cascade.core.seeds import check_seed, derive_seed
from avatar_cascade.media.frames import image_to_model_space, to_model_space
from avatar_cascade.sampling.conditioning import ClipRequest, decode_to_uint8, encode_condition
from avatar_cascade.sampling.loop import TEXT_TOKENS_WITH_IMAGE, as_dit
from avatar_cascade.sampling.prompts import PromptBank
from avatar_cascade.sampling.settings import SamplerSettings, make_scheduler

log = logging.getLogger(__name__)

LIFT_FRAMES = 5
LIFT_SALT = 3


@dataclass(frozen=True)
class LiftSettings:
    """Keyframe refinement: ``denoise`` 0..1 (0 = off), the full-schedule sampler, seed, batch size."""

    denoise: float = 0.0
    sampler: SamplerSettings = field(default_factory=lambda: SamplerSettings(steps=20, guidance=5.0, shift=5.0))
    seed: int = 0
    batch_size: int = 2

    @property
    def enabled(self) -> bool:
        return self.denoise > 0

    @property
    def steps_run(self) -> int:
        """Denoising steps actually run (the last ones of the schedule)."""
        return max(1, round(self.sampler.steps * self.denoise)) if self.enabled else 0

    def check(self) -> LiftSettings:
        if not 0.0 <= self.denoise <= 1.0:
            raise InputError("lift_denoise", self.denoise, "must be between 0 and 1", "use 0 (off) or 0.2-0.4")
        if not 1 <= self.batch_size <= 64:
            raise InputError("lift_batch_size", self.batch_size, "must be 1 to 64", "use 2")
        check_seed(self.seed)
        self.sampler.check()
        return self

    def key_parts(self) -> dict:
        if not self.enabled:
            return {"denoise": 0.0}
        return {"denoise": self.denoise, "sampler": vars(self.sampler), "seed": self.seed, "frames": LIFT_FRAMES}


def _fit_text(embeds: torch.Tensor, length: int) -> torch.Tensor:
    if embeds.shape[1] >= length:
        return embeds[:, :length]
    return torch.nn.functional.pad(embeds, (0, 0, 0, length - embeds.shape[1]))


def _predict(module, x, t, pos, neg, img, guidance: float) -> torch.Tensor:
    """Guided velocity: ``uncond + g * (cond - uncond)`` in one batched forward (cond alone at g = 1)."""
    from avatar_cascade.models.clip_vision import wan_image_rows

    rows = 1 if guidance == 1.0 else 2
    text = pos if rows == 1 else torch.cat([pos, neg])
    with wan_image_rows(module, img) as img_rows, torch.no_grad():
        kwargs = {} if img_rows is None else {"encoder_hidden_states_image": torch.cat([img_rows] * rows)}
        out = module(
            hidden_states=torch.cat([x] * rows),
            timestep=t.expand(rows * x.shape[0]).to(x.device),
            encoder_hidden_states=text,
            return_dict=False,
            **kwargs,
        )[0].float()
    if rows == 1:
        return out
    cond, uncond = out.chunk(2)
    return uncond + guidance * (cond - uncond)


def partial_denoise(dit, x0, condition, pos, neg, img, settings: LiftSettings, seeds: list[int], runtime: Runtime):
    """Noise clean latents ``x0`` ``[B,z,T,h,w]`` to the level of the last ``steps_run`` steps and denoise them."""
    from avatar_cascade.models.dit_runtime import prepare_dit

    device = runtime.device
    prepare_dit(dit, device)
    sch = make_scheduler(settings.sampler)
    sch.set_timesteps(settings.sampler.steps, device=device)
    start = settings.sampler.steps - settings.steps_run
    timesteps = sch.timesteps[start:]
    if hasattr(sch, "set_begin_index"):
        sch.set_begin_index(start)
    sigma = float(sch.sigmas[start])
    noise = torch.stack([torch.randn(x0.shape[1:], generator=torch.Generator("cpu").manual_seed(s)) for s in seeds])
    x = ((1 - sigma) * x0.float().cpu() + sigma * noise).to(device)
    current = None
    for t in timesteps:
        runtime.check_interrupt()
        expert, module = dit.expert_at(float(t))
        if expert != current:
            current, dtype = expert, next(module.parameters()).dtype
            cond_d, pos_d, neg_d = condition.to(device, dtype), pos.to(device, dtype), neg.to(device, dtype)
            img_d = img.to(device, dtype) if img is not None else None
        g = settings.sampler.guidance
        if expert == "low_noise" and settings.sampler.guidance_2 is not None:
            g = settings.sampler.guidance_2
        pred = _predict(module, torch.cat([x.to(dtype), cond_d], dim=1), t, pos_d, neg_d, img_d, g)
        x = sch.step(pred, t, x, return_dict=False)[0]
    return x.float()


def lift_keyframes(
    images: torch.Tensor,
    seam_indices: list[int],
    prompts: list[tuple[str, str]],
    reference: torch.Tensor,
    dit,
    vae,
    text_encoder,
    settings: LiftSettings,
    runtime: Runtime,
    image_encoder=None,
) -> torch.Tensor:
    """Refine keyframes ``[S,H,W,3]`` uint8 (already at the refine size); returns the same shape.

    Args:
        images: resized keyframes to refine.
        seam_indices: seam number of each image (its noise seed is derived from it).
        prompts: ``(prompt, negative)`` of each image (the shot that starts at the seam).
        reference: the reference image ``[H,W,3]`` float 0..1 (any size).
        dit / vae / text_encoder: loaded handles (the refiner's).
        settings: denoise strength, sampler, seed, batch size.
        image_encoder: CLIP-vision handle, needed by Wan 2.1 I2V/FLF2V DiTs.
    """
    settings.check()
    if not settings.enabled or len(images) == 0:
        return images
    dit = as_dit(dit)
    s, h, w = images.shape[:3]
    ref = image_to_model_space(reference, h, w)
    bank = PromptBank(text_encoder, runtime)
    bank.encode_all([p for p, _ in prompts] + [n for _, n in prompts])
    img = None
    if dit.has_image_embedder:
        if image_encoder is None:
            raise InputError(
                "clip_vision",
                None,
                f"lifting keyframes with this DiT ({dit.variant}) needs CLIP-vision tokens",
                "connect a CLIP Vision loader, or set lift_denoise to 0",
            )
        from avatar_cascade.models.clip_vision import frame_tokens

        with runtime.use_models(image_encoder.model):
            img = frame_tokens(image_encoder, [(ref, None)])
    out = images.clone()
    bar = runtime.progress(s, "lift keyframes")
    try:
        with runtime.use_models(*dit.modules(), vae.vae):
            for lo in range(0, s, settings.batch_size):
                hi = min(s, lo + settings.batch_size)
                kf = to_model_space(images[lo:hi])
                video = torch.cat([ref[None, :, None].expand(hi - lo, -1, 1, -1, -1)] + [kf[:, :, None]] * 4, dim=2)
                param = next(vae.vae.parameters())
                with torch.no_grad():
                    x0 = vae.encode(video.to(param.device, param.dtype)).float()
                reqs = [
                    ClipRequest(LIFT_FRAMES, ref, None, bank.get(prompts[i][0]), bank.get(prompts[i][1]), 0)
                    for i in range(lo, hi)
                ]
                cond = encode_condition(vae, reqs, h, w, runtime)
                pos = torch.stack([r.prompt_embeds for r in reqs])
                neg = torch.stack([r.negative_embeds for r in reqs])
                img_b = None
                if img is not None:
                    pos, neg = _fit_text(pos, TEXT_TOKENS_WITH_IMAGE), _fit_text(neg, TEXT_TOKENS_WITH_IMAGE)
                    img_b = img.expand(hi - lo, -1, -1)
                seeds = [derive_seed(settings.seed, seam_indices[i], salt=LIFT_SALT) for i in range(lo, hi)]
                lat = partial_denoise(dit, x0, cond, pos, neg, img_b, settings, seeds, runtime)
                out[lo:hi] = decode_to_uint8(vae, lat)[:, -1]
                bar.update(hi - lo)
    finally:
        bar.close()
    log.info("lifted %d keyframes (%d of %d steps each)", s, settings.steps_run, settings.sampler.steps)
    return out

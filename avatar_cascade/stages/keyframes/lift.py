"""Lifting keyframes to the refine resolution with a short DiT refinement anchored on the reference.

A blueprint frame resized to the refine resolution is soft. With
``denoise`` > 0 each lifted keyframe gets an img2img pass through the same Wan
I2V DiT the refiner uses:

1. a 5-frame clip is built: frame 0 is the reference, frames 1-4 (one latent
   frame) the resized keyframe; it is VAE-encoded (``x0``);
2. the sampler's loop (:func:`~avatar_cascade.sampling.loop.sample_clips` with
   ``start_step = steps - n``, ``n = max(1, round(steps * denoise))``, and
   ``initial_latents = x0``) noises ``x0`` to the flow-matching level of that step,
   ``x = (1 - sigma) x0 + sigma * noise`` (noise from a CPU generator seeded per
   seam, so the result is device independent), and runs the last ``n`` steps of the
   normal schedule with the I2V condition "frame 0 = reference" (mask + latents; for
   Wan 2.1 I2V/FLF2V DiTs also the reference's CLIP-vision tokens), the shot's
   prompt and classifier-free guidance; a DiT's audio adapter is left out (a still
   frame, no speech);
3. the last decoded frame is the lifted keyframe.

The reference conditions the clip, so detail and identity are pulled toward it
while the pose and expression of the keyframe (kept by the partial noise) stay.
``denoise`` 0 turns it off; 0.2-0.4 (default 0.3) refines, 1.0 replaces the
keyframe with a new frame. The sampler's ``auto`` values come from the DiT family's preset
(without the audio adapter: a still frame), its negative prompt is added to each shot's.
"""

from __future__ import annotations

import logging

import torch

from avatar_cascade.core.errors import InputError
from avatar_cascade.core.runtime import Runtime
from avatar_cascade.core.seeds import derive_seed
from avatar_cascade.media.frames import to_model_space
from avatar_cascade.media.framing import frame_reference
from avatar_cascade.models.handle import WanModels, modules_of
from avatar_cascade.sampling.conditioning import ClipRequest, decode_to_uint8, encode_condition, encode_video
from avatar_cascade.sampling.loop import as_dit, sample_clips
from avatar_cascade.sampling.prompts import PromptBank
from avatar_cascade.sampling.settings import resolve_sampler, with_negative
from avatar_cascade.stages.keyframes.settings import LIFT_FRAMES, LiftSettings

log = logging.getLogger(__name__)

LIFT_SALT = 3


def lift_clip(reference: torch.Tensor, keyframes: torch.Tensor) -> torch.Tensor:
    """The clips keyframes are refined in: ``[S,3,5,H,W]`` in [-1,1], frame 0 the reference
    (``[3,H,W]`` in [-1,1]), frames 1-4 (one latent frame) the keyframe (``[S,H,W,3]`` uint8)."""
    kf = to_model_space(keyframes)
    return torch.cat([reference[None, :, None].expand(len(kf), -1, 1, -1, -1)] + [kf[:, :, None]] * 4, dim=2)


def _reference_tokens(dit, image_encoder, reference: torch.Tensor, runtime: Runtime) -> torch.Tensor | None:
    """CLIP-vision tokens ``[1, T, D]`` of the reference for a DiT with an image embedder, else None."""
    if not dit.has_image_embedder:
        return None
    if image_encoder is None:
        raise InputError(
            "clip_vision",
            None,
            f"lifting keyframes with this DiT ({dit.variant}) needs CLIP-vision tokens",
            "connect a CLIP Vision loader, or set lift_denoise to 0",
        )
    from avatar_cascade.models.clip_vision import frame_tokens

    with runtime.use_models(*image_encoder.modules()):
        return frame_tokens(image_encoder, [(reference, None)])


def lift_keyframes(
    images: torch.Tensor,
    seam_indices: list[int],
    prompts: list[tuple[str, str]],
    reference: torch.Tensor,
    models: WanModels,
    settings: LiftSettings,
    runtime: Runtime,
    *,
    framing: str = "bucket",
) -> torch.Tensor:
    """Refine keyframes ``[S,H,W,3]`` uint8 (already at the refine size); returns the same shape.

    Args:
        images: resized keyframes to refine.
        seam_indices: seam number of each image (its noise seed is derived from it).
        prompts: ``(prompt, negative)`` of each image (the shot that starts at the seam).
        reference: the reference image ``[H,W,3]`` float 0..1 (any size).
        models: the refiner's DiT (its audio adapter is left out), VAE and text encoder; the image
            encoder (CLIP vision) is needed by Wan 2.1 I2V/FLF2V DiTs and not used by others.
        settings: denoise strength, sampler, seed, batch size.
        runtime: device and hooks (one progress step per keyframe).
        framing: how the reference is framed at the keyframes' size (never stretched).
    """
    settings.check()
    if not settings.enabled or len(images) == 0:
        return images
    dit, vae = as_dit(models.dit), models.vae
    s, h, w = images.shape[:3]
    ref = to_model_space(frame_reference(reference, w, h, framing)[None])[0]
    sampler = resolve_sampler(settings.sampler, dit, w, h, with_audio=False)
    negatives = [with_negative(n, sampler) for _, n in prompts]
    bank = PromptBank(models.text_encoder, runtime)
    bank.encode_all([p for p, _ in prompts] + negatives)
    img = _reference_tokens(dit, models.image_encoder, ref, runtime)
    steps_run = settings.steps_run_of(sampler)
    start = sampler.steps - steps_run
    out = images.clone()
    bar = runtime.progress(s, "lift keyframes")
    try:
        with runtime.use_models(*modules_of(dit, vae)):
            for lo in range(0, s, settings.batch_size):
                hi = min(s, lo + settings.batch_size)
                reqs = [
                    ClipRequest(
                        num_frames=LIFT_FRAMES,
                        known={0: ref},
                        prompt_embeds=bank.get(prompts[i][0]),
                        negative_embeds=bank.get(negatives[i]),
                        seed=derive_seed(settings.seed, seam_indices[i], salt=LIFT_SALT),
                    )
                    for i in range(lo, hi)
                ]
                x0 = encode_video(vae, lift_clip(ref, images[lo:hi]))
                lat = sample_clips(
                    dit,
                    encode_condition(vae, reqs, h, w),
                    reqs,
                    sampler,
                    runtime,
                    desc=f"lift keyframes {lo}-{hi - 1}",
                    image_embeds=None if img is None else img.expand(hi - lo, -1, -1),
                    start_step=start,
                    initial_latents=x0,
                    use_audio_adapter=False,
                )
                out[lo:hi] = decode_to_uint8(vae, lat)[:, -1]
                bar.update(hi - lo)
    finally:
        bar.close()
    log.info("lifted %d keyframes (%d of %d steps each)", s, steps_run, sampler.steps)
    return out

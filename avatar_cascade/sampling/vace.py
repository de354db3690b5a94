"""sampling.vace: the Wan VACE control context of a batch of clips, and the hook that feeds it to the DiT.

VACE (Wan 2.1 VACE 1.3B / 14B) reads one control video per clip next to the noisy latents:

* ``frames`` ``[B,3,T,H,W]`` in [-1, 1] (0 = grey, "nothing"): the control layers (pose,
  depth, line art...) and, at the known frames, the frames themselves;
* ``masks`` ``[B,T,H,W]`` in [0, 1]: 1 where the DiT generates (guided by the control), 0 where
  the frame is known (a keyframe: kept).

The context is what Wan's ``vace_encode_frames`` / ``vace_encode_masks`` (and ComfyUI's
``WanVaceToVideo``) build: ``concat([E(frames * (1 - m)), E(frames * m), fold(m)])`` with ``E`` the
VAE encoder (16 + 16 channels) and ``fold`` the 8x8 pixel mask folded into 64 channels and
resampled to the latent frames (``nearest-exact``): ``[B, 96, T_lat, h, w]``.

The DiT is called by the one sampling loop exactly as for the other Wan DiTs; :func:`vace_control`
installs a forward pre-hook on the VACE transformer(s) for the duration of a run that (1) keeps the
first ``in_channels`` (16: the noisy latents) of the loop's concat input, since VACE takes known
frames through its control branch and not as concat channels, and (2) passes the context (tiled to
the guidance rows of the batched forward) as ``control_hidden_states`` with the given strength.

**Reference images** (VACE's ``reference_images`` / ``src_ref_images``; e.g. the avatar's reference) enter
as extra latent frames *in front of* the clip (:func:`reference_context`, :func:`prepend_reference_frames`),
with the arithmetic of diffusers' ``WanVACEPipeline`` (``pipelines/wan/pipeline_wan_vace.py``:
``preprocess_conditions``, ``prepare_video_latents``, ``prepare_masks``, ``__call__``) and of Wan's
``vace/models/wan/wan_vace.py`` (``vace_encode_frames`` / ``vace_encode_masks``):

* each image is fitted *inside* the frame (``scale = min(H / h, W / w)``, ``int(h * scale) x int(w *
  scale)``, bilinear, ``align_corners=False``), centred on a white canvas (1.0 in [-1, 1]);
* each is VAE-encoded alone as a one-frame video: one latent frame ``r``; its context frame is
  ``concat([r, zeros_like(r)])`` (inactive = the reference, reactive = 0) and its 64 mask channels are
  0; the reference frames are prepended to the context in the given order (Wan's
  ``torch.cat([*ref_latent, latent], dim=1)``; diffusers prepends them one by one, which reverses a list
  of several);
* the noise latent gets as many latent frames more (diffusers: ``num_frames + num_reference_images *
  vae_scale_factor_temporal`` pixel frames), denoised with the clip, and they are cut off
  (``latents[:, :, num_reference_images:]``) before decoding, so the clip keeps its frame count.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch

VAE_STRIDE = 8  # Wan 2.1 VAE: 8x spatial (the mask folds 8x8 pixels into 64 channels)


def fold_masks(masks: torch.Tensor, latent_frames: int, stride: int = VAE_STRIDE) -> torch.Tensor:
    """Per-pixel masks ``[B,T,H,W]`` -> VACE's mask channels ``[B, stride*stride, T_lat, H/stride, W/stride]``."""
    b, t, h, w = masks.shape
    hm, wm = h // stride, w // stride
    m = masks.float().view(b, t, hm, stride, wm, stride)
    m = m.permute(0, 3, 5, 1, 2, 4).reshape(b, stride * stride, t, hm, wm)
    return torch.nn.functional.interpolate(m, size=(latent_frames, hm, wm), mode="nearest-exact")


def vace_context(
    vae, frames: torch.Tensor, masks: torch.Tensor, references: torch.Tensor | None = None
) -> torch.Tensor:
    """The VACE control context ``[B, 96, R + T_lat, h, w]`` (float32) of control videos and masks.

    Args:
        vae: a ``WanVAE`` handle (``encode`` takes ``[B,3,T,H,W]`` in [-1,1]).
        frames: ``[B,3,T,H,W]`` in [-1, 1].
        masks: ``[B,T,H,W]`` in [0, 1] (1 = generate, 0 = known frame).
        references: ``[B, R, 3, H, W]`` in [-1, 1] (fitted by :func:`fit_reference`): R reference latent frames
            in front (:func:`reference_context`); None (or R = 0): none.
    """
    from avatar_cascade.sampling.conditioning import encode_video

    if frames.shape[0] != masks.shape[0] or tuple(frames.shape[2:]) != tuple(masks.shape[1:]):
        raise ValueError(f"control frames {tuple(frames.shape)} and masks {tuple(masks.shape)} do not match")
    m = masks[:, None].float()
    inactive = encode_video(vae, frames.float() * (1 - m))
    reactive = encode_video(vae, frames.float() * m)
    folded = fold_masks(masks, inactive.shape[2]).to(inactive.device)
    context = torch.cat([inactive, reactive, folded], dim=1)
    if references is None or references.shape[1] == 0:
        return context
    return torch.cat([reference_context(vae, references).to(context.device), context], dim=2)


def fit_reference(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """A reference image ``[H, W, 3]`` uint8 fitted inside ``width x height`` on white: ``[3, height, width]`` in
    [-1, 1] (diffusers ``WanVACEPipeline.preprocess_conditions``: scale ``min(height / H, width / W)``, the
    size truncated to ints, bilinear without corner alignment, centred)."""
    img = image.permute(2, 0, 1).float()[None] / 127.5 - 1.0
    h, w = image.shape[:2]
    scale = min(height / h, width / w)
    nh, nw = int(h * scale), int(w * scale)
    resized = torch.nn.functional.interpolate(img, size=(nh, nw), mode="bilinear", align_corners=False)[0]
    canvas = torch.ones(3, height, width)
    top, left = (height - nh) // 2, (width - nw) // 2
    canvas[:, top : top + nh, left : left + nw] = resized
    return canvas


def reference_context(vae, references: torch.Tensor, stride: int = VAE_STRIDE) -> torch.Tensor:
    """The context frames ``[B, 96, R, h, w]`` of reference images ``[B, R, 3, H, W]`` in [-1, 1]: each encoded
    alone as a one-frame video (latent ``r``), as ``concat([r, 0, mask 0])`` (inactive, reactive, 64 mask
    channels), in the given order."""
    from avatar_cascade.sampling.conditioning import encode_video

    b, r, c, h, w = references.shape
    lat = encode_video(vae, references.float().reshape(b * r, c, 1, h, w))  # [B*R, z, 1, h', w']
    lat = lat.reshape(b, r, *lat.shape[1:])[:, :, :, 0].transpose(1, 2)  # [B, z, R, h', w']
    masks = torch.zeros(b, stride * stride, r, *lat.shape[-2:], device=lat.device, dtype=lat.dtype)
    return torch.cat([lat, torch.zeros_like(lat), masks], dim=1)


def prepend_reference_frames(condition: torch.Tensor, count: int) -> torch.Tensor:
    """The sampling loop's condition ``[B, C, T_lat, h, w]`` with ``count`` zero latent frames in front, so the
    noise latent gets one more latent frame per reference image (their condition channels are never read: the
    control hook keeps only the noisy latents; the mask 0 there pins no frame)."""
    if count == 0:
        return condition
    pad = torch.zeros(*condition.shape[:2], count, *condition.shape[3:], device=condition.device, dtype=condition.dtype)
    return torch.cat([pad, condition], dim=2)


class _ControlHook:
    def __init__(self, context: torch.Tensor, strength: float, in_channels: int) -> None:
        self.context = context
        self.strength = float(strength)
        self.in_channels = in_channels

    def __call__(self, module, args, kwargs):
        x = kwargs["hidden_states"]
        rows = x.shape[0] // self.context.shape[0]
        ctx = self.context.to(x.device, x.dtype)
        kwargs["hidden_states"] = x[:, : self.in_channels]
        kwargs["control_hidden_states"] = torch.cat([ctx] * rows) if rows > 1 else ctx
        n = len(module.config.vace_layers)
        kwargs["control_hidden_states_scale"] = torch.full((n,), self.strength, device=x.device, dtype=x.dtype)
        return args, kwargs


@contextlib.contextmanager
def vace_control(modules: Sequence[torch.nn.Module], context: torch.Tensor, strength: float = 1.0) -> Iterator[None]:
    """While the block runs, every forward of the VACE ``modules`` reads ``context`` (``[B,96,T_lat,h,w]``, the
    batch's clips in order; tiled to the forward's guidance rows) at ``strength`` (ComfyUI's ``strength``:
    the scale of every VACE hint) and only the noisy-latent channels of its concat input."""
    hooks = [
        m.register_forward_pre_hook(_ControlHook(context, strength, int(m.config.in_channels)), with_kwargs=True)
        for m in modules
    ]
    try:
        yield
    finally:
        for h in hooks:
            h.remove()

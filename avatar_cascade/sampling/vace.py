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


def vace_context(vae, frames: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """The VACE control context ``[B, 96, T_lat, h, w]`` (float32) of control videos and masks.

    Args:
        vae: a ``WanVAE`` handle (``encode`` takes ``[B,3,T,H,W]`` in [-1,1]).
        frames: ``[B,3,T,H,W]`` in [-1, 1].
        masks: ``[B,T,H,W]`` in [0, 1] (1 = generate, 0 = known frame).
    """
    from avatar_cascade.sampling.conditioning import encode_video

    if frames.shape[0] != masks.shape[0] or tuple(frames.shape[2:]) != tuple(masks.shape[1:]):
        raise ValueError(f"control frames {tuple(frames.shape)} and masks {tuple(masks.shape)} do not match")
    m = masks[:, None].float()
    inactive = encode_video(vae, frames.float() * (1 - m))
    reactive = encode_video(vae, frames.float() * m)
    folded = fold_masks(masks, inactive.shape[2]).to(inactive.device)
    return torch.cat([inactive, reactive, folded], dim=1)


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

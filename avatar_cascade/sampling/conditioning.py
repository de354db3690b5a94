"""sampling.conditioning."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from avatar_cascade.core.runtime import Runtime


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


def decode_to_uint8(vae, latents: torch.Tensor) -> torch.Tensor:
    """Decode latents ``[B,z,T_lat,h,w]`` to frames ``[B,T,H,W,3]`` uint8 on CPU."""
    param = next(vae.vae.parameters())
    with torch.no_grad():
        video = vae.decode(latents.to(param.device, param.dtype)).float()
    video = ((video.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return video.permute(0, 2, 3, 4, 1).cpu()

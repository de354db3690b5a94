"""sampling.conditioning: the Wan I2V / FLF2V concat condition from known frames at positions.

One builder for every stage: a clip of ``num_frames`` pixel frames has some frames *known*
(the blueprint's continuation frames, the refiner's two keyframes at their offsets, the
lift's reference at frame 0). The DiT input is ``concat([noisy latents (z), mask (4),
condition latents (z)])`` where the condition video holds the known frames and zeros
elsewhere and the mask marks them, exactly as diffusers' ``WanImageToVideoPipeline`` does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch

KnownFrames = Mapping[int, torch.Tensor]  # pixel frame index -> frame [3, H, W] in [-1, 1]


@dataclass
class ClipRequest:
    """One clip to sample.

    Attributes:
        num_frames: clip length in pixel frames (4n+1).
        known: the clip's known frames, ``{pixel frame index: [3,H,W] in [-1,1]}`` (may be empty).
        prompt_embeds: ``[L,D]`` text embedding.
        negative_embeds: ``[L,D]`` negative text embedding.
        seed: noise seed of this clip.
        audio: the clip's windowed audio features ``[F, W, L, D]`` (frames, window, encoder
            layers, width) for a DiT with an audio adapter, or None.
    """

    num_frames: int
    known: KnownFrames
    prompt_embeds: torch.Tensor
    negative_embeds: torch.Tensor
    seed: int
    audio: torch.Tensor | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.known, Mapping):
            raise TypeError(
                f"ClipRequest.known maps frame index -> frame, got {type(self.known).__name__}; "
                "use ClipRequest.first_last(...) for a clip with a first and/or last frame"
            )
        outside = [p for p in self.known if not 0 <= p < self.num_frames]
        if outside:
            raise ValueError(f"known frame positions {outside} are outside the clip's {self.num_frames} frames")

    @classmethod
    def first_last(
        cls,
        num_frames: int,
        first_frame: torch.Tensor | None,
        last_frame: torch.Tensor | None,
        prompt_embeds: torch.Tensor,
        negative_embeds: torch.Tensor,
        seed: int,
        audio: torch.Tensor | None = None,
    ) -> ClipRequest:
        """A clip with ``first_frame`` at frame 0 and ``last_frame`` at ``num_frames - 1`` (either may be None)."""
        known = {p: f for p, f in ((0, first_frame), (num_frames - 1, last_frame)) if f is not None}
        return cls(num_frames, known, prompt_embeds, negative_embeds, seed, audio)

    @property
    def first_frame(self) -> torch.Tensor | None:
        """The known frame at the lowest position (the image of an image-to-video clip), or None."""
        return self.known[min(self.known)] if self.known else None

    @property
    def last_frame(self) -> torch.Tensor | None:
        """The known frame at the highest position when more than one is known, else None.

        With :attr:`first_frame` it is the image pair a Wan 2.1 FLF2V DiT's CLIP tokens come from.
        """
        return self.known[max(self.known)] if len(self.known) > 1 else None


def condition_video(
    known: Sequence[KnownFrames], num_frames: int, height: int, width: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel condition videos ``[B,3,T,H,W]`` (known frames, zeros elsewhere) and frame masks ``[B,T]`` (1 = known)."""
    video = torch.zeros(len(known), 3, num_frames, height, width)
    mask = torch.zeros(len(known), num_frames)
    for b, frames in enumerate(known):
        for p, frame in frames.items():
            if not 0 <= p < num_frames:
                raise ValueError(f"known frame position {p} is outside a clip of {num_frames} frames")
            video[b, :, p] = frame
            mask[b, p] = 1
    return video, mask


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


def encode_video(vae, video: torch.Tensor) -> torch.Tensor:
    """VAE-encode pixel videos ``[B,3,T,H,W]`` in [-1,1]: latents ``[B,z,T_lat,h,w]`` (float32, VAE device; the
    handle moves the video to its model's device and dtype)."""
    with torch.no_grad():
        return vae.encode(video).float()


def encode_known_frames(vae, known: Sequence[KnownFrames], num_frames: int, height: int, width: int) -> torch.Tensor:
    """The concat condition ``[B, 4 + z, T_lat, h, w]`` of ``B`` clips with known frames at positions.

    Args:
        vae: a ``WanVAE`` handle.
        known: per clip, ``{pixel frame index: [3,H,W] in [-1,1]}``.
        num_frames: clip length in pixel frames (4n+1).
        height / width: frame size in pixels.
    """
    video, mask = condition_video(known, num_frames, height, width)
    lat = encode_video(vae, video)
    return torch.cat([latent_mask(mask, lat.shape[-2:], vae.temporal_factor).to(lat.device), lat], dim=1)


def encode_condition(vae, requests: Sequence[ClipRequest], height: int, width: int) -> torch.Tensor:
    """:func:`encode_known_frames` of the requests' known frames (clips of one length)."""
    if len({r.num_frames for r in requests}) != 1:
        raise ValueError("encode_condition needs clips of one length per batch")
    return encode_known_frames(vae, [r.known for r in requests], requests[0].num_frames, height, width)


def decode_to_uint8(vae, latents: torch.Tensor) -> torch.Tensor:
    """Decode latents ``[B,z,T_lat,h,w]`` to frames ``[B,T,H,W,3]`` uint8 on CPU."""
    with torch.no_grad():
        video = vae.decode(latents).float()
    video = ((video.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return video.permute(0, 2, 3, 4, 1).cpu()

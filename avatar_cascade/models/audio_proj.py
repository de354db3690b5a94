"""InfiniteTalk / MultiTalk audio projection: windowed wav2vec2 features -> audio tokens per latent frame.

Our own implementation of the published computation, with the published parameter names
and shapes (reference, Apache-2.0: MeiGen-AI/InfiniteTalk ``wan/modules/multitalk_model.py``
— ``AudioProjModel`` and the audio windowing at the top of ``WanModel.forward`` — and
``wan/multitalk.py`` for how the per-frame windows are cut; MeiGen-AI/MultiTalk is the same).

Audio layout (the protocol the sampler and the Audio Aligner use):
``audio[b, f, w, l, d]`` — batch row ``b``, pixel frame ``f`` of the clip (``F = 4n + 1``
frames at the clip's fps), window tap ``w`` (``W = 5`` frames centred on ``f``: frames
``f-2 .. f+2``, clamped at the ends of the track), wav2vec2 layer ``l`` and channel ``d``.
InfiniteTalk uses the 12 transformer layers of chinese-wav2vec2-base (``hidden_states[1:]``,
768 channels); a 13-layer stack that still holds the feature-projection output
(``hidden_states[0]``) is accepted and that layer is dropped.

Latent frame 0 (the first pixel frame) reads its full 5-tap window through ``proj1``.
Every later latent frame covers ``vae_scale = 4`` pixel frames and reads 8 taps through
``proj1_vf``: the first frame's taps ``0..2``, the centre tap of the two middle frames and
the last frame's taps ``2..4`` — the other taps are never read.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

AUDIO_WINDOW = 5
VAE_SCALE = 4


@dataclass(frozen=True)
class AudioAdapterConfig:
    """Sizes of an InfiniteTalk-style audio adapter.

    Attributes:
        dim: DiT hidden width (5120 for Wan 2.1 14B).
        num_layers: DiT blocks (40 for 14B); one audio cross-attention per block.
        num_heads: DiT attention heads (40 for 14B); not stored in the weights, taken from the DiT.
        feature_size: wav2vec2 values per window tap, layers x channels (12 x 768 = 9216).
        audio_window: taps per pixel frame (5).
        vae_scale: pixel frames per latent frame (4, the Wan VAE's temporal factor).
        intermediate_dim: width of the projection MLP (512).
        output_dim: width of one audio token (768).
        context_tokens: audio tokens per latent frame (32).
        eps: ``norm_x`` epsilon (1e-6, Wan's); the token norm uses LayerNorm's 1e-5 as the reference.
    """

    dim: int
    num_layers: int
    num_heads: int
    feature_size: int = 12 * 768
    audio_window: int = AUDIO_WINDOW
    vae_scale: int = VAE_SCALE
    intermediate_dim: int = 512
    output_dim: int = 768
    context_tokens: int = 32
    eps: float = 1e-6

    @property
    def window_vf(self) -> int:
        """Taps read per later latent frame: ``audio_window + vae_scale - 1`` (8)."""
        return self.audio_window + self.vae_scale - 1

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads


def split_frame_windows(audio: torch.Tensor, vae_scale: int = VAE_SCALE) -> tuple[torch.Tensor, torch.Tensor]:
    """Pick the taps InfiniteTalk reads: ``[B,F,W,...]`` -> first ``[B,1,W,...]``, later ``[B,T-1,W+vae_scale-1,...]``.

    ``F = 1 + vae_scale * (T - 1)`` pixel frames fold into ``T`` latent frames.
    """
    frames, window = audio.shape[1], audio.shape[2]
    if (frames - 1) % vae_scale:
        raise ValueError(f"audio covers {frames} pixel frames; expected {vae_scale}n+1")
    mid = window // 2
    later = audio[:, 1:].unflatten(1, (-1, vae_scale))  # [B, T-1, vae_scale, W, ...]
    head = later[:, :, 0, : mid + 1]  # first pixel frame of each latent frame: taps 0..mid
    body = later[:, :, 1:-1, mid]  # middle frames: the centre tap only
    tail = later[:, :, -1, mid:]  # last pixel frame: taps mid..W-1
    return audio[:, :1], torch.cat([head, body, tail], dim=2)


def frame_windows(per_frame: torch.Tensor, start: int, count: int, window: int = AUDIO_WINDOW) -> torch.Tensor:
    """Windows of per-frame features, as ``wan/multitalk.py`` cuts them.

    Args:
        per_frame: ``[T, L, D]`` features at the video frame rate (one row per frame).
        start: first pixel frame of the clip (index into ``per_frame``).
        count: pixel frames in the clip.
        window: taps per frame (odd).
    Returns:
        ``[count, window, L, D]``; tap ``w`` of frame ``f`` is row ``start + f + w - window // 2``,
        clamped to ``[0, T-1]``.
    """
    half = window // 2
    idx = torch.arange(start, start + count)[:, None] + torch.arange(-half, half + 1)[None, :]
    return per_frame[idx.clamp(0, per_frame.shape[0] - 1)]


class AudioProjModel(nn.Module):
    """``audio_proj.*``: 5-tap (first latent frame) and 8-tap (later latent frames) windows -> tokens."""

    def __init__(self, config: AudioAdapterConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.proj1 = nn.Linear(c.audio_window * c.feature_size, c.intermediate_dim)
        self.proj1_vf = nn.Linear(c.window_vf * c.feature_size, c.intermediate_dim)
        self.proj2 = nn.Linear(c.intermediate_dim, c.intermediate_dim)
        self.proj3 = nn.Linear(c.intermediate_dim, c.context_tokens * c.output_dim)
        self.norm = nn.LayerNorm(c.output_dim)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        """``[B, F, W, feature_size]`` (F pixel frames) -> tokens ``[B, T, context_tokens, output_dim]``.

        T = 1 + (F - 1) / vae_scale latent frames. The token LayerNorm runs in float32.
        """
        first, later = split_frame_windows(audio, self.config.vae_scale)
        dtype = self.proj1.weight.dtype
        first = torch.relu(self.proj1(first.flatten(2).to(dtype)))
        later = torch.relu(self.proj1_vf(later.flatten(2).to(dtype)))
        hidden = torch.relu(self.proj2(torch.cat([first, later], dim=1)))
        tokens = self.proj3(hidden).unflatten(-1, (self.config.context_tokens, self.config.output_dim))
        norm = self.norm
        w = None if norm.weight is None else norm.weight.float()
        b = None if norm.bias is None else norm.bias.float()
        return F.layer_norm(tokens.float(), norm.normalized_shape, w, b, norm.eps).to(dtype)

"""Per-block audio cross-attention of InfiniteTalk / MultiTalk (``blocks.N.audio_cross_attn.*``, ``blocks.N.norm_x.*``).

Our own implementation of the single-speaker path of ``SingleStreamAttention`` /
``SingleStreamMutiAttention`` (reference, Apache-2.0: MeiGen-AI/InfiniteTalk
``wan/modules/attention.py``, block wiring in ``wan/modules/multitalk_model.py``):
the visual tokens of each latent frame attend to that frame's audio tokens only,
``x = x + audio_cross_attn(norm_x(x), tokens)`` right after the text cross-attention.
The reference builds it with ``qk_norm=False`` and ``qkv_bias=True``, so the only weights
are ``q_linear``, ``kv_linear`` (keys then values, ``2 * dim`` outputs) and ``proj``.

Not implemented: the two-speaker routing of ``SingleStreamMutiAttention`` (a 1-D RoPE on
queries and keys whose positions come from per-speaker masks and the self-attention map
of the reference frame). With one speaker the reference takes the plain path above and
uses no position encoding at all, which is what the cascade drives (one avatar).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from avatar_cascade.models.audio_proj import AudioAdapterConfig


class AudioCrossAttention(nn.Module):
    """Latent-frame-local cross-attention from visual tokens to audio tokens."""

    def __init__(self, config: AudioAdapterConfig) -> None:
        super().__init__()
        if config.dim % config.num_heads:
            raise ValueError(f"dim {config.dim} is not divisible by {config.num_heads} heads")
        self.num_heads = config.num_heads
        self.q_linear = nn.Linear(config.dim, config.dim, bias=True)
        self.kv_linear = nn.Linear(config.output_dim, 2 * config.dim, bias=True)
        self.proj = nn.Linear(config.dim, config.dim)

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """``x [B, T*S, dim]`` (T latent frames of S tokens each, frame-major) and tokens ``[B, T, M, output_dim]``.

        Returns ``[B, T*S, dim]``.
        """
        b, n, dim = x.shape
        frames, m = tokens.shape[1], tokens.shape[2]
        if n % frames:
            raise ValueError(f"{n} visual tokens do not split into {frames} latent frames")
        s, h = n // frames, self.num_heads
        q = self.q_linear(x).view(b * frames, s, h, dim // h).transpose(1, 2)
        kv = self.kv_linear(tokens.reshape(b * frames, m, -1)).view(b * frames, m, 2, h, dim // h)
        k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v)  # scale 1/sqrt(head_dim), as the reference
        return self.proj(out.transpose(1, 2).reshape(b, n, dim))


class AudioBlock(nn.Module):
    """The audio layers one DiT block gains: ``audio_cross_attn`` and its input norm ``norm_x``."""

    def __init__(self, config: AudioAdapterConfig) -> None:
        super().__init__()
        self.audio_cross_attn = AudioCrossAttention(config)
        self.norm_x = nn.LayerNorm(config.dim, eps=config.eps, elementwise_affine=True)

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """The audio residual for hidden states ``x`` (``norm_x`` in float32, like Wan's LayerNorm)."""
        dtype = self.audio_cross_attn.q_linear.weight.dtype
        n = self.norm_x
        normed = F.layer_norm(x.float(), n.normalized_shape, n.weight.float(), n.bias.float(), n.eps)
        return self.audio_cross_attn(normed.to(dtype), tokens.to(dtype)).to(x.dtype)

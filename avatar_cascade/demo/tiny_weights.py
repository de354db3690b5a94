"""demo.tiny_weights."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from avatar_cascade.models.audio_adapter import AudioAdapterModule
from avatar_cascade.models.audio_proj import AudioAdapterConfig
from avatar_cascade.models.clip_vision import load_bundled_config


def tiny_clip_vision_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """The tiny test/demo CLIP vision model's weights in ComfyUI's (transformers) key layout."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    cfg = load_bundled_config("avatar-cascade-tiny-clip-vision")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 7)
        model = CLIPVisionModelWithProjection(CLIPVisionConfig(**{k: v for k, v in cfg.items() if k[0] != "_"}))
    return {k: v for k, v in model.state_dict().items() if not k.endswith("position_ids")}
TINY_FEATURES = (2, 32)  # the tiny demo wav2vec2: 2 layers of 32 channels
TINY_SIZES = {"intermediate_dim": 16, "output_dim": 8, "context_tokens": 4}


def tiny_audio_adapter_state_dict(
    dit_config: Mapping[str, Any], seed: int = 0, features: tuple[int, int] = TINY_FEATURES
) -> dict[str, torch.Tensor]:
    """Random adapter weights (published key layout, float32) for a DiT config (e.g. the tiny Wan's).

    ``features`` = (wav2vec2 layers read, channels): the tiny demo wav2vec2 gives (2, 32).
    """
    heads, head_dim = dit_config["num_attention_heads"], dit_config["attention_head_dim"]
    config = AudioAdapterConfig(
        dim=heads * head_dim,
        num_layers=dit_config["num_layers"],
        num_heads=heads,
        feature_size=features[0] * features[1],
        **TINY_SIZES,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 7)
        module = AudioAdapterModule(config)
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def write_tiny_audio_adapter(path: str | Path, dit_config: Mapping[str, Any], seed: int = 0) -> Path:
    """Write a tiny random adapter for ``dit_config`` to ``path`` (safetensors, no prefix, like ComfyUI's file)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sd = tiny_audio_adapter_state_dict(dit_config, seed)
    save_file({k: sd[k].contiguous() for k in sorted(sd)}, str(path), metadata={"avatar_cascade_demo": f"seed{seed}"})
    return path

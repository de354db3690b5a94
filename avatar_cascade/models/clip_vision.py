"""CLIP ViT-H/14 image encoder for Wan 2.1 I2V / FLF2V, from one safetensors file, offline.

Wan 2.1 I2V and FLF2V cross-attend to CLIP-vision tokens of the conditioning frame(s): the
*penultimate* layer's hidden states (257 tokens x 1280 for ViT-H/14 at 224 px), exactly
what diffusers' ``WanImageToVideoPipeline.encode_image`` (``hidden_states[-2]``) and
ComfyUI's ``penultimate_hidden_states`` use. Accepted files: ComfyUI's
``clip_vision_h.safetensors`` (transformers key layout, ``vision_model.*``; text-tower keys
of a full CLIP file are ignored) and open_clip's layout (``visual.transformer.resblocks.*``).
The model is ``transformers.CLIPVisionModelWithProjection`` built from a bundled config and
loaded strictly.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from avatar_cascade.core.errors import ModelFileError
from avatar_cascade.models.files import (
    check_kind,
    file_identity,
    read_safetensors,
    read_safetensors_header,
    strict_load,
    strip_prefix,
)
from avatar_cascade.models.offload import largest_weight

log = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
CLIP_VISION_VARIANTS = ("clip-vit-h-14", "avatar-cascade-tiny-clip-vision")
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
_PREFIXES = ("clip_vision.", "image_encoder.", "model.")
_OTHER_CLIPS = {1024: "CLIP ViT-L/14 (SD 1.x / SDXL IP-Adapter)", 1664: "CLIP ViT-bigG/14", 1152: "SigLIP"}
_FIX = "choose clip_vision_h.safetensors (CLIP ViT-H/14), the image encoder of Wan 2.1 I2V / FLF2V"


@dataclass
class CLIPVision:
    """A loaded CLIP vision tower (``transformers.CLIPVisionModelWithProjection``, eval, on CPU)."""

    model: Any
    variant: str
    identity: str
    path: Path | None

    def modules(self) -> list[torch.nn.Module]:
        """Modules to place on the compute device while it runs (``runtime.use_models(*image_encoder.modules())``)."""
        return [self.model]

    def cache_identity(self) -> str:
        """Id for cache keys: the weights' identity."""
        return self.identity

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def image_size(self) -> int:
        """Input size in pixels (square)."""
        return int(self.model.config.image_size)

    @property
    def tokens(self) -> int:
        """Tokens per image: patches + class token (257 for ViT-H/14 at 224 px)."""
        return (self.image_size // int(self.model.config.patch_size)) ** 2 + 1

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """``[N,H,W,3]`` float 0..1 -> normalised ``[N,3,S,S]``: shortest side resized to S (bicubic,
        antialiased), centre crop, 8-bit rounding, CLIP mean/std (as ComfyUI's ``clip_preprocess``)."""
        import torch.nn.functional as F

        x = images[..., :3].movedim(-1, 1).float()
        size = self.image_size
        if x.shape[-2:] != (size, size):
            scale = size / min(x.shape[-2:])
            hw = (max(size, round(x.shape[-2] * scale)), max(size, round(x.shape[-1] * scale)))
            x = F.interpolate(x, size=hw, mode="bicubic", antialias=True, align_corners=False)
            top, left = (x.shape[-2] - size) // 2, (x.shape[-1] - size) // 2
            x = x[..., top : top + size, left : left + size]
        x = (x * 255.0).clamp(0, 255).round() / 255.0
        mean = torch.tensor(CLIP_MEAN, dtype=x.dtype).view(1, 3, 1, 1)
        std = torch.tensor(CLIP_STD, dtype=x.dtype).view(1, 3, 1, 1)
        return (x - mean) / std

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Penultimate hidden states ``[N, tokens, hidden]`` (float32, CPU) of images ``[N,H,W,3]`` 0..1."""
        param = largest_weight(self.model)
        pixels = self.preprocess(images.cpu()).to(param.device, param.dtype)
        with torch.no_grad():
            out = self.model(pixel_values=pixels, output_hidden_states=True)
        return out.hidden_states[-2].float().cpu()

    def encode_model_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """Like :meth:`encode` for frames ``[N,3,H,W]`` in [-1,1] (the sampler's frame space)."""
        return self.encode(((frames.float() + 1) / 2).clamp(0, 1).movedim(1, -1))


def load_bundled_config(variant: str) -> dict[str, Any]:
    return json.loads((CONFIG_DIR / variant / "config.json").read_text())


def open_clip_to_transformers(sd: Mapping[str, Any]) -> dict[str, Any]:
    """open_clip ``visual.*`` keys -> transformers ``vision_model.*`` keys (fused qkv split; projection
    transposed). Works on tensors; mirrors ComfyUI's ``clip_vision.convert_to_transformers``."""
    out: dict[str, Any] = {}
    names = {
        "visual.class_embedding": "vision_model.embeddings.class_embedding",
        "visual.conv1.weight": "vision_model.embeddings.patch_embedding.weight",
        "visual.positional_embedding": "vision_model.embeddings.position_embedding.weight",
        "visual.ln_pre.weight": "vision_model.pre_layrnorm.weight",
        "visual.ln_pre.bias": "vision_model.pre_layrnorm.bias",
        "visual.ln_post.weight": "vision_model.post_layernorm.weight",
        "visual.ln_post.bias": "vision_model.post_layernorm.bias",
    }
    block = {
        "ln_1": "layer_norm1",
        "ln_2": "layer_norm2",
        "mlp.c_fc": "mlp.fc1",
        "mlp.c_proj": "mlp.fc2",
        "attn.out_proj": "self_attn.out_proj",
    }
    for key, value in sd.items():
        if not key.startswith("visual."):
            continue
        if key in names:
            out[names[key]] = value
        elif key == "visual.proj":
            out["visual_projection.weight"] = value.t().contiguous()
        elif key.startswith("visual.transformer.resblocks."):
            idx, _, rest = key[len("visual.transformer.resblocks.") :].partition(".")
            prefix = f"vision_model.encoder.layers.{idx}."
            if rest.startswith("attn.in_proj_"):
                for part, chunk in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3, dim=0)):
                    out[f"{prefix}self_attn.{part}.{rest.rsplit('_', 1)[-1]}"] = chunk.contiguous()
                continue
            mod, _, leaf = rest.rpartition(".")
            if mod not in block:
                raise KeyError(key)
            out[f"{prefix}{block[mod]}.{leaf}"] = value
        else:
            raise KeyError(key)
    return out


def _vision_only(sd: Mapping[str, Any]) -> dict[str, Any]:
    sd = strip_prefix(sd, _PREFIXES)
    if any(k.startswith("visual.transformer.resblocks.") for k in sd):
        sd = open_clip_to_transformers(sd)
    return {
        k: v
        for k, v in sd.items()
        if (k.startswith("vision_model.") or k == "visual_projection.weight") and not k.endswith("position_ids")
    }


def _match_variant(shapes: Mapping[str, tuple[int, ...]], input_name: str, path: object) -> tuple[str, dict]:
    if "vision_model.embeddings.class_embedding" not in shapes:
        raise ModelFileError(input_name, path, "this is SigLIP or another image encoder, not CLIP ViT-H/14", _FIX)
    hidden = shapes["vision_model.embeddings.patch_embedding.weight"][0]
    layers = len({k.split(".")[3] for k in shapes if k.startswith("vision_model.encoder.layers.")})
    for variant in CLIP_VISION_VARIANTS:
        cfg = load_bundled_config(variant)
        tokens = (cfg["image_size"] // cfg["patch_size"]) ** 2 + 1
        if (
            cfg["hidden_size"] == hidden
            and cfg["num_hidden_layers"] == layers
            and shapes["vision_model.embeddings.position_embedding.weight"][0] == tokens
        ):
            return variant, cfg
    what = _OTHER_CLIPS.get(hidden, f"a CLIP vision model of width {hidden} with {layers} layers")
    raise ModelFileError(input_name, path, f"this is {what}; Wan 2.1 needs CLIP ViT-H/14", _FIX)


def load_clip_vision(path: str | Path, input_name: str = "clip_name", dtype: torch.dtype | None = None) -> CLIPVision:
    """Load a CLIP vision single file (ComfyUI / transformers or open_clip layout) on CPU.

    ``dtype`` None keeps the file's floating dtype (ComfyUI ships clip_vision_h in fp16).
    """
    from accelerate import init_empty_weights
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    path = Path(path)
    header, _ = read_safetensors_header(path, input_name)
    check_kind(header, "clip_vision", input_name, path)
    state_dict, _ = read_safetensors(path, input_name)
    try:
        state_dict = _vision_only(state_dict)
    except KeyError as err:
        raise ModelFileError(input_name, path, f"unexpected open_clip weight {err}", _FIX) from err
    variant, cfg = _match_variant({k: tuple(v.shape) for k, v in state_dict.items()}, input_name, path)
    floats = [v.dtype for v in state_dict.values() if v.is_floating_point()]
    dtype = dtype or (max(set(floats), key=floats.count) if floats else torch.float32)
    state_dict = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state_dict.items()}
    config = CLIPVisionConfig(**{k: v for k, v in cfg.items() if not k.startswith("_")})
    with init_empty_weights():
        model = CLIPVisionModelWithProjection(config)
    if "visual_projection.weight" not in state_dict:  # projection is unused by Wan; some files omit it
        state_dict["visual_projection.weight"] = torch.zeros(config.projection_dim, config.hidden_size, dtype=dtype)
    strict_load(model, state_dict, input_name, path, f"the {variant} CLIP vision model")
    model.eval().requires_grad_(False)
    log.info("loaded CLIP vision %s (%s) from %s", variant, dtype, path.name)
    return CLIPVision(model=model, variant=variant, identity=file_identity(path), path=path)


# ------------------------------------------------------- Wan image conditioning


def frame_tokens(
    encoder: CLIPVision, frames: Sequence[tuple[torch.Tensor | None, torch.Tensor | None]]
) -> torch.Tensor:
    """Tokens of each clip's known frames ``(first, last)`` (``[3,H,W]`` in [-1,1]), first then last
    along the token axis: ``[B, n*T, D]`` (float32, CPU), one encoder call for the whole batch."""
    known = [[f for f in pair if f is not None] for pair in frames]
    if any(pair[0] is None for pair in frames) or len({len(k) for k in known}) != 1:
        raise ValueError("CLIP image tokens need a first frame in every clip and the same frames known in each")
    tokens = encoder.encode_model_frames(torch.stack([f for k in known for f in k]))
    return tokens.reshape(len(known), -1, tokens.shape[-1])


@contextlib.contextmanager
def wan_image_rows(transformer: torch.nn.Module, tokens: torch.Tensor | None) -> Iterator[torch.Tensor | None]:
    """Yields ``encoder_hidden_states_image`` for tokens ``[B, n*T, D]`` in diffusers' layout.

    FLF2V DiTs (a position table for a first+last pair) take ``[2B, T, D]``. When a clip has
    only a first frame, the first ``T`` positions are added here and the table is bypassed
    inside the block (ComfyUI does the same): diffusers' embedder always expects a pair.
    """
    embedder = getattr(transformer.condition_embedder, "image_embedder", None)
    pos = getattr(embedder, "pos_embed", None)
    if tokens is None or pos is None:
        yield tokens
        return
    b, n, d = tokens.shape
    if n == pos.shape[1]:
        yield tokens.reshape(b * 2, n // 2, d)
        return
    embedder.pos_embed = None
    try:
        yield tokens + pos[:, :n].to(tokens.device, tokens.dtype)
    finally:
        embedder.pos_embed = pos

"""Engine handles over ComfyUI's native ``VAE``, ``CLIP`` and ``CLIP_VISION`` objects, and the one function the
stage nodes call on each model input (:func:`engine_models`).

These wrappers only call the objects' public methods (``VAE.encode`` / ``decode``, ``CLIP.tokenize`` /
``encode_from_tokens_scheduled``, ``ClipVisionModel.encode_image``), which load the models through ComfyUI's
model management themselves; the ``MODEL`` handle is in :mod:`nodes.comfy_native`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

import torch

from avatar_cascade.core.errors import InputError


def native_identity(module: torch.nn.Module, *extra: Any) -> str:
    """Cache id of a native object's module (``comfy_native.fingerprint``)."""
    from .comfy_native import fingerprint

    return fingerprint(module, *extra)


@cache
def _latent_stats(variant: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Wan's latent mean / std of a bundled VAE config (read once)."""
    from avatar_cascade.models.wan_vae import load_bundled_config

    cfg = load_bundled_config(variant)
    return tuple(cfg["latents_mean"]), tuple(cfg["latents_std"])


@dataclass
class NativeVAE:
    """A ComfyUI ``VAE`` (Wan 2.1 / 2.2) as the engine's ``WanVAE``: normalised latents in, video in [-1, 1] out."""

    vae: Any
    identity: str
    path: None = None
    native = True  # not a dataclass field: ComfyUI's object, not copied to other devices or sent to Ray

    def modules(self) -> list[torch.nn.Module]:
        return []  # VAE.encode / decode load the model through ComfyUI's model management

    def cache_identity(self) -> str:
        return self.identity

    @property
    def z_dim(self) -> int:
        return int(self.vae.latent_channels)

    @property
    def spatial_factor(self) -> int:
        ratio = self.vae.downscale_ratio
        return int(ratio[-1] if isinstance(ratio, (tuple, list)) else ratio)

    @property
    def temporal_factor(self) -> int:
        return 4

    def _stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        means, stds = _latent_stats("wan2.2-vae" if self.z_dim == 48 else "wan2.1-vae")
        shape = (1, self.z_dim, 1, 1, 1)
        mean = torch.tensor(means).view(shape).to(like.device, like.dtype)
        std = torch.tensor(stds).view(shape).to(like.device, like.dtype)
        return mean, std

    @torch.no_grad()
    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """``[B,3,T,H,W]`` in [-1, 1] -> normalised latents ``[B,z,t,h,w]`` (float32)."""
        out = []
        for clip in video:
            pixels = ((clip.float() + 1) / 2).clamp(0, 1).permute(1, 2, 3, 0)  # [T,H,W,3] 0..1, as ComfyUI's IMAGE
            out.append(self.vae.encode(pixels).float().cpu())
        z = torch.cat(out)
        mean, std = self._stats(z)
        return (z - mean) / std

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents ``[B,z,t,h,w]`` -> ``[B,3,T,H,W]`` in [-1, 1] (float32)."""
        z = latents.float().cpu()
        mean, std = self._stats(z)
        frames = self.vae.decode(z * std + mean).float().cpu()  # [B,T,H,W,3] 0..1
        if frames.ndim == 4:
            frames = frames[None]
        return (frames.permute(0, 4, 1, 2, 3) * 2 - 1).clamp(-1, 1)


@dataclass
class NativeTextEncoder:
    """A ComfyUI ``CLIP`` holding UMT5 (CLIPLoader, type wan) as the engine's ``TextEncoder``.

    Prompts go through ComfyUI's tokenizer, so emphasis ``(word:1.2)`` weights work as in CLIPTextEncode; the
    output is cut / zero-padded to Wan's 512 tokens (ComfyUI's UMT5 zeroes the padding, as Wan does).
    """

    clip: Any
    identity: str
    max_length: int = 512
    native = True

    def modules(self) -> list[torch.nn.Module]:
        return []  # CLIP.encode_from_tokens_scheduled loads it through ComfyUI's model management

    def cache_identity(self) -> str:
        return self.identity

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> torch.Tensor:
        from avatar_cascade.models.text_encoder import prompt_clean

        if isinstance(prompts, str):
            prompts = [prompts]
        rows = []
        for p in prompts:
            cond = self.clip.encode_from_tokens_scheduled(self.clip.tokenize(prompt_clean(p)))[0][0].float().cpu()
            cond = cond[0, : self.max_length]
            rows.append(torch.nn.functional.pad(cond, (0, 0, 0, self.max_length - cond.shape[0])))
        return torch.stack(rows)


@dataclass
class NativeCLIPVision:
    """A ComfyUI ``CLIP_VISION`` as the engine's ``CLIPVision``: penultimate hidden states (Wan's ``clip_fea``)."""

    model: Any
    identity: str
    variant: str = "comfyui"
    path: None = None
    native = True

    def modules(self) -> list[torch.nn.Module]:
        return []

    def cache_identity(self) -> str:
        return self.identity

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        out = self.model.encode_image(images[..., :3].float(), crop=True)
        return out["penultimate_hidden_states"].float().cpu()

    def encode_model_frames(self, frames: torch.Tensor) -> torch.Tensor:
        return self.encode(((frames.float() + 1) / 2).clamp(0, 1).movedim(1, -1))


_KINDS = {
    "dit": ("AVATAR_DIT", "MODEL"),
    "vae": ("AVATAR_VAE", "VAE"),
    "text_encoder": ("AVATAR_TEXT_ENCODER", "CLIP"),
    "clip_vision": ("AVATAR_CLIP_VISION", "CLIP_VISION"),
}


def engine_model(obj: Any, kind: str, input_name: str | None = None):
    """The engine handle for a model input: the pack's own handle unchanged, a native ComfyUI object wrapped."""
    from avatar_cascade.models.clip_vision import CLIPVision
    from avatar_cascade.models.text_encoder import TextEncoder
    from avatar_cascade.models.wan_dit import WanDiT
    from avatar_cascade.models.wan_vae import WanVAE

    from . import comfy_native

    name = input_name or kind
    if obj is None or isinstance(obj, (WanDiT, WanVAE, TextEncoder, CLIPVision)):
        return obj
    if kind == "dit" and comfy_native.is_native_model(obj):
        return comfy_native.native_dit(obj, name)
    if kind == "vae" and hasattr(obj, "first_stage_model") and hasattr(obj, "decode"):
        return NativeVAE(obj, native_identity(obj.first_stage_model))
    if kind == "text_encoder" and hasattr(obj, "tokenize") and hasattr(obj, "cond_stage_model"):
        return NativeTextEncoder(obj, native_identity(obj.cond_stage_model, obj.patcher.patches))
    if kind == "clip_vision" and hasattr(obj, "encode_image"):
        return NativeCLIPVision(obj, native_identity(obj.model))
    raise InputError(
        name, type(obj).__name__, f"is not a {' or '.join(_KINDS[kind])}", f"connect a {' or a '.join(_KINDS[kind])}"
    )


def engine_models(**inputs: Any) -> dict[str, Any]:
    """:func:`engine_model` of each ``kind=object`` given (kinds: dit, vae, text_encoder, clip_vision)."""
    return {kind: engine_model(obj, kind) for kind, obj in inputs.items()}

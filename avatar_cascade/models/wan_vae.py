"""Wan VAE from one safetensors file into ``diffusers.AutoencoderKLWan``, offline.

Accepted: the Wan 2.1 VAE in the original layout (``Wan2.1_VAE.pth`` converted to
safetensors, ComfyUI's ``wan_2.1_vae.safetensors``) or the diffusers layout, and the
Wan 2.2 VAE (48 latent channels) in the diffusers layout. Latents are normalised the way
diffusers' Wan pipelines do it: ``(z - latents_mean) / latents_std`` with the posterior mode.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from avatar_cascade.core.errors import InputError, ModelFileError
from avatar_cascade.models.files import (
    check_kind,
    dequantize,
    file_identity,
    read_safetensors,
    read_safetensors_header,
    storage_dtype,
    strict_load,
    strip_prefix,
)
from avatar_cascade.models.offload import largest_weight

log = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
VAE_VARIANTS = ("wan2.1-vae", "wan2.2-vae", "avatar-cascade-tiny-wan-vae")
_PREFIXES = ("first_stage_model.", "vae.")


@dataclass
class WanVAE:
    """A loaded Wan VAE. ``vae`` is a ``diffusers.AutoencoderKLWan`` (eval mode); methods use its device/dtype."""

    vae: Any
    identity: str
    path: Path

    def modules(self) -> list[torch.nn.Module]:
        """Modules to place on the compute device while it runs (``runtime.use_models(*vae.modules())``)."""
        return [self.vae]

    def cache_identity(self) -> str:
        """Id for cache keys: the weights' identity."""
        return self.identity

    @property
    def z_dim(self) -> int:
        """Latent channels: 16 (Wan 2.1 VAE) or 48 (Wan 2.2 VAE)."""
        return int(self.vae.config.z_dim)

    @property
    def spatial_factor(self) -> int:
        """Pixels per latent cell along height and width (8 for Wan 2.1, 16 for Wan 2.2)."""
        return int(self.vae.config.scale_factor_spatial or 8)

    @property
    def temporal_factor(self) -> int:
        """Frames per latent frame after the first: T pixel frames -> (T - 1) // 4 + 1 latent frames."""
        return int(self.vae.config.scale_factor_temporal or 4)

    def _stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (1, self.z_dim, 1, 1, 1)
        mean = torch.tensor(self.vae.config.latents_mean).view(shape).to(like.device, like.dtype)
        std = torch.tensor(self.vae.config.latents_std).view(shape).to(like.device, like.dtype)
        return mean, std

    @torch.no_grad()
    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """Video ``[B,3,T,H,W]`` in [-1, 1] -> normalised latents ``[B,z,(T-1)//4+1,H/f,W/f]`` (posterior mode)."""
        f = self.spatial_factor
        if video.ndim != 5 or video.shape[1] != 3 or video.shape[3] % f or video.shape[4] % f:
            raise InputError(
                "video",
                tuple(video.shape),
                f"expected [B,3,T,H,W] with H and W multiples of {f}",
                f"resize to a multiple of {f} pixels",
            )
        p = largest_weight(self.vae)
        posterior = self.vae.encode(video.to(p.device, p.dtype)).latent_dist
        z = posterior.mode()
        mean, std = self._stats(z)
        return (z - mean) / std

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents ``[B,z,t,h,w]`` -> video ``[B,3,(t-1)*4+1,h*f,w*f]`` in [-1, 1]."""
        if latents.ndim != 5 or latents.shape[1] != self.z_dim:
            raise InputError(
                "latents",
                tuple(latents.shape),
                f"expected [B,{self.z_dim},t,h,w] for this VAE",
                "decode latents made for this VAE (Wan 2.1 VAE: 16 channels, Wan 2.2 VAE: 48)",
            )
        p = largest_weight(self.vae)
        z = latents.to(p.device, p.dtype)
        mean, std = self._stats(z)
        video = self.vae.decode(z * std + mean, return_dict=False)[0]
        return video.clamp(-1.0, 1.0)


def load_bundled_config(variant: str) -> dict[str, Any]:
    """The bundled diffusers config of a VAE variant folder under ``avatar_cascade/configs/``."""
    return json.loads((CONFIG_DIR / variant / "config.json").read_text())


def is_original_layout(keys: Any) -> bool:
    return any(k.startswith(("decoder.middle.", "decoder.upsamples.")) for k in keys)


def detect_vae_variant(
    shapes: Mapping[str, tuple[int, ...]], input_name: str = "vae_name", path: object = "<weights>"
) -> str:
    """Bundled config folder name for a key -> shape table (original or diffusers layout)."""
    shapes = strip_prefix(shapes, _PREFIXES)
    original = is_original_layout(shapes)
    quant = shapes.get("conv1.weight" if original else "quant_conv.weight")
    conv_in = shapes.get("encoder.conv1.weight" if original else "encoder.conv_in.weight")
    if quant is None or conv_in is None:
        raise ModelFileError(
            input_name, path, "this Wan VAE file lacks its quant/input convolutions", "re-download the file"
        )
    z_dim, base_dim = quant[0] // 2, conv_in[0]
    if z_dim == 48 or any(".upsamples.0.upsamples." in k for k in shapes):
        if original:
            raise ModelFileError(
                input_name,
                path,
                "this is the Wan 2.2 VAE in the original layout, which cannot be converted here yet",
                "use the diffusers-layout Wan 2.2 VAE (vae/diffusion_pytorch_model.safetensors of "
                "Wan2.2-TI2V-5B-Diffusers), or the Wan 2.1 VAE for 16-channel models",
            )
        return "wan2.2-vae"
    for variant in VAE_VARIANTS:
        cfg = load_bundled_config(variant)
        if cfg["z_dim"] == z_dim and cfg["base_dim"] == base_dim:
            return variant
    raise ModelFileError(
        input_name,
        path,
        f"unknown Wan VAE (z_dim={z_dim}, base_dim={base_dim})",
        "use the Wan 2.1 VAE (wan_2.1_vae.safetensors) or the Wan 2.2 VAE",
    )


def load_wan_vae(path: str | Path, input_name: str = "vae_name", dtype: torch.dtype | None = None) -> WanVAE:
    """Load a Wan VAE single file on CPU (``dtype`` None keeps the file's storage dtype)."""
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKLWan
    from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers

    path = Path(path)
    shapes, _ = read_safetensors_header(path, input_name)
    check_kind(shapes, "vae", input_name, path)
    variant = detect_vae_variant(shapes, input_name, path)
    state_dict, _ = read_safetensors(path, input_name)
    dtype = dtype or storage_dtype(state_dict)
    state_dict = dequantize(strip_prefix(state_dict, _PREFIXES), dtype)
    if is_original_layout(state_dict):
        state_dict = convert_wan_vae_to_diffusers(state_dict)
    state_dict = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state_dict.items()}
    with init_empty_weights():
        vae = AutoencoderKLWan.from_config(load_bundled_config(variant))
    strict_load(vae, state_dict, input_name, path, f"the {variant} Wan VAE")
    vae.eval().requires_grad_(False)
    log.info("loaded Wan VAE %s (%s) from %s", variant, dtype, path.name)
    return WanVAE(vae=vae, identity=file_identity(path), path=path)

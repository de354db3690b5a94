"""Wan 2.1 / 2.2 DiT from one safetensors file into ``diffusers.WanTransformer3DModel``, offline.

Three key layouts are accepted: the original Wan release (``blocks.0.self_attn.q.weight``),
ComfyUI's repackaged files (the same with a ``model.diffusion_model.`` or
``diffusion_model.`` prefix) and the diffusers layout (``blocks.0.attn1.to_q.weight``).
The variant is detected from key names and shapes and mapped to a config bundled in
``avatar_cascade/configs/``; the weights are converted with diffusers' own converter and
loaded strictly (no missing or unexpected weights).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch

from avatar_cascade.core.errors import ModelFileError
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

log = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
DIT_VARIANTS = (
    "wan2.1-t2v-1.3b",
    "wan2.1-t2v-14b",
    "wan2.1-i2v-14b",
    "wan2.1-flf2v-14b",
    "wan2.2-ti2v-5b",
    "wan2.2-i2v-a14b",
    "avatar-cascade-tiny-wan",
    "avatar-cascade-tiny-wan-flf2v",
    "avatar-cascade-tiny-wan-comfy",
)
CUSTOM_VARIANT = "wan-custom"
_PREFIXES = ("model.diffusion_model.", "diffusion_model.")
_UNSUPPORTED = {
    "motion_encoder.": "a Wan Animate model",
    "face_adapter.": "a Wan Animate model",
    "audio_proj.": "a Wan model with built-in audio layers (MultiTalk/InfiniteTalk merged)",
    "casual_audio_encoder.": "a Wan S2V (speech-to-video) model",
    "audio_injector.": "a Wan S2V (speech-to-video) model",
}

# Key marker -> loader ``(path, input_name, dtype) -> WanDiT`` of a DiT family with its own diffusers class;
# models.wan_vace registers Wan VACE (``vace_patch_embedding.``) when the models package is imported.
FAMILY_LOADERS: dict[str, Any] = {}

FLF_POS_DIFFUSERS = "condition_embedder.image_embedder.pos_embed"
FLF_POS_ORIGINAL = "img_emb.emb_pos"


EXPERT_BOUNDARY = 0.9  # Wan 2.2 I2V A14B: high-noise expert while t >= 0.9 * 1000 (T2V A14B uses 0.875)


@dataclass
class WanDiT:
    """A loaded Wan DiT: one ``diffusers.WanTransformer3DModel`` or a Wan 2.2 A14B expert pair.

    Attributes:
        transformer: the DiT (for A14B: the high-noise expert), eval mode.
        variant: bundled config folder name (e.g. ``"wan2.1-flf2v-14b"``).
        identity: :func:`file_identity` of the weights file (of the high-noise expert for A14B).
        path: the weights file.
        transformer_2: A14B low-noise expert, or None.
        path_2 / identity_2: its file and identity.
        boundary_ratio: A14B switch point: ``transformer`` while ``t >= boundary_ratio * 1000``.
        loras: active LoRA stack (``lora.LoRASpec`` in order); applied by ``lora.activate_loras``.
        audio_adapter: lip-sync adapter (``audio_adapter.AudioAdapter``: ``audio_context(audio)``,
            ``modules()``, ``identity``, ``strength``), or None.
        attention: ``"auto" | "sdpa" | "flash" | "sage"`` (see ``dit_runtime``).
        offload: ``"none" | "block" | "leaf"`` diffusers group offloading (see ``dit_runtime``).

    Handles are cheap: :func:`dataclasses.replace` gives a new handle that shares the modules
    (the LoRA node does this), so several handles may use one set of weights.
    """

    transformer: Any
    variant: str
    identity: str
    path: Path | None
    transformer_2: Any = None
    path_2: Path | None = None
    identity_2: str = ""
    boundary_ratio: float | None = None
    loras: tuple = ()
    audio_adapter: Any = None
    attention: str = "auto"
    offload: str = "none"
    # True for a DiT that ComfyUI runs (a native MODEL, see nodes/comfy_native.py): its forwards go through
    # ComfyUI's model execution, so the pack's own attention / offload / LoRA switching does not apply.
    native: ClassVar[bool] = False

    def sampling_session(self, noise_shape: tuple[int, ...]) -> contextlib.AbstractContextManager:
        """Context held around one sampling run (``noise_shape``: the largest batched DiT input). Nothing for the
        pack's own DiTs; a native ComfyUI MODEL loads there with its patches and wrappers, and cleans up after."""
        return contextlib.nullcontext()

    @property
    def in_channels(self) -> int:
        """Latent channels the DiT takes: 16 (T2V), 36 (I2V/FLF: 16 noise + 4 mask + 16 condition), 48 (TI2V-5B)."""
        return int(self.transformer.config.in_channels)

    @property
    def has_image_embedder(self) -> bool:
        """True for Wan 2.1 I2V/FLF2V, which also take CLIP-vision image tokens."""
        return self.transformer.config.image_dim is not None

    @property
    def image_tokens_per_frame_pair(self) -> int | None:
        """FLF2V: image tokens of a (first, last) pair (``pos_embed_seq_len``, 514); None for other DiTs."""
        return self.transformer.config.pos_embed_seq_len

    def experts(self) -> list[tuple[str, Any]]:
        """``[("all", transformer)]``, or ``[("high_noise", ...), ("low_noise", ...)]`` for an A14B pair."""
        if self.transformer_2 is None:
            return [("all", self.transformer)]
        return [("high_noise", self.transformer), ("low_noise", self.transformer_2)]

    def expert_at(self, timestep: float) -> tuple[str, Any]:
        """The expert that denoises at ``timestep`` (0..1000): high-noise while ``t >= boundary * 1000``."""
        if self.transformer_2 is None:
            return "all", self.transformer
        boundary = EXPERT_BOUNDARY if self.boundary_ratio is None else self.boundary_ratio
        if float(timestep) >= boundary * 1000.0:
            return "high_noise", self.transformer
        return "low_noise", self.transformer_2

    def modules(self) -> list[torch.nn.Module]:
        """Modules to place on the compute device for sampling (``runtime.use_models(*dit.modules())``).

        Experts under diffusers group offloading (the loader's ``offload`` modes) place their own
        blocks and are left out.
        """
        from avatar_cascade.models.offload import is_group_offloaded

        mods = [m for _, m in self.experts() if not is_group_offloaded(m)]
        if self.audio_adapter is not None:
            mods += self.audio_adapter.modules()
        return mods

    def cache_identity(self) -> str:
        """Id of everything in this handle that changes what the DiT computes (hex sha256).

        Covers the weights file(s), the expert boundary, the LoRA stack (file identities,
        strengths, experts) and the audio adapter's ``identity`` and ``strength``. Not
        covered: attention kernel and offloading, which change speed, not the result.
        """
        adapter = self.audio_adapter
        payload = {
            "dit": self.identity,
            "dit_2": self.identity_2 or None,
            "boundary": self.boundary_ratio if self.transformer_2 is not None else None,
            "loras": [[s.identity, float(s.strength), s.apply_to] for s in self.loras],
            "audio_adapter": None if adapter is None else [adapter.identity, adapter.strength],
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode("utf-8")).hexdigest()


def is_diffusers_layout(keys: Any) -> bool:
    return any(k.startswith("condition_embedder.") or ".attn1." in k for k in keys)


def to_diffusers_layout(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Any supported layout -> diffusers keys (values untouched: tensors or shapes)."""
    sd = strip_prefix(state_dict, _PREFIXES)
    if is_diffusers_layout(sd):
        return sd
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

    converted = convert_wan_transformer_to_diffusers(dict(sd))
    if FLF_POS_ORIGINAL in converted:  # diffusers' converter leaves the FLF2V position table unmapped
        converted[FLF_POS_DIFFUSERS] = converted.pop(FLF_POS_ORIGINAL)
    return converted


@dataclass(frozen=True)
class _Signature:
    in_channels: int
    out_channels: int
    dim: int
    num_layers: int
    ffn_dim: int
    text_dim: int
    image_embedder: bool
    flf: bool


def _signature_from_shapes(shapes: Mapping[str, tuple[int, ...]], input_name: str, path: object) -> _Signature:
    sd = to_diffusers_layout(shapes)
    try:
        patch = sd["patch_embedding.weight"]
        layers = {int(m.group(1)) for k in sd if (m := re.match(r"blocks\.(\d+)\.", k))}
        return _Signature(
            in_channels=patch[1],
            out_channels=sd["proj_out.weight"][0] // (patch[2] * patch[3] * patch[4]),
            dim=patch[0],
            num_layers=len(layers),
            ffn_dim=sd["blocks.0.ffn.net.0.proj.weight"][0],
            text_dim=sd["condition_embedder.text_embedder.linear_1.weight"][1],
            image_embedder="condition_embedder.image_embedder.norm1.weight" in sd,
            flf=FLF_POS_DIFFUSERS in sd,
        )
    except (KeyError, IndexError, TypeError) as err:
        raise ModelFileError(
            input_name, path, f"this Wan DiT file lacks an expected weight ({err})", "re-download the file"
        ) from err


def _signature_from_config(cfg: Mapping[str, Any]) -> _Signature:
    return _Signature(
        in_channels=cfg["in_channels"],
        out_channels=cfg["out_channels"] or cfg["in_channels"],
        dim=cfg["num_attention_heads"] * cfg["attention_head_dim"],
        num_layers=cfg["num_layers"],
        ffn_dim=cfg["ffn_dim"],
        text_dim=cfg["text_dim"],
        image_embedder=cfg.get("image_dim") is not None,
        flf=cfg.get("pos_embed_seq_len") is not None,
    )


def load_bundled_config(variant: str) -> dict[str, Any]:
    """The bundled diffusers config of a variant folder under ``avatar_cascade/configs/``."""
    return json.loads((CONFIG_DIR / variant / "config.json").read_text())


def match_bundled(sig: Any, variants: tuple[str, ...], signature) -> tuple[str, dict[str, Any]] | None:
    """``(variant, config)`` of the first bundled variant whose ``signature(config)`` is ``sig``, else None."""
    for variant in variants:
        cfg = load_bundled_config(variant)
        if signature(cfg) == sig:
            return variant, cfg
    return None


def derived_config(base: str, dim: int, path: object, sig: Any, **fields: Any) -> dict[str, Any]:
    """``base``'s bundled config with 128-wide heads (every released Wan DiT's) and ``fields`` read off the weights
    of a file no bundled config matches (logged)."""
    cfg = load_bundled_config(base)
    cfg.update(num_attention_heads=dim // 128, attention_head_dim=128, **fields)
    log.warning("%s: no bundled config matches %s; using one derived from the weights' shapes", path, sig)
    return cfg


def variant_of_config(config: Mapping[str, Any]) -> str:
    """The bundled variant whose config has the sizes of ``config`` (diffusers field names), else ``wan-custom``."""
    found = match_bundled(_signature_from_config(config), DIT_VARIANTS, _signature_from_config)
    return found[0] if found else CUSTOM_VARIANT


def _match(shapes: Mapping[str, tuple[int, ...]], input_name: str, path: object) -> tuple[str, dict[str, Any]]:
    sig = _signature_from_shapes(shapes, input_name, path)
    found = match_bundled(sig, DIT_VARIANTS, _signature_from_config)
    if found:
        return found
    if sig.dim % 128 == 0 and not sig.flf:
        image = sig.image_embedder
        cfg = derived_config(
            "wan2.1-t2v-14b", sig.dim, path, sig, in_channels=sig.in_channels, out_channels=sig.out_channels,
            ffn_dim=sig.ffn_dim, num_layers=sig.num_layers, text_dim=sig.text_dim,
            image_dim=shapes_image_dim(shapes) if image else None, added_kv_proj_dim=sig.dim if image else None,
        )  # fmt: skip
        return CUSTOM_VARIANT, cfg
    raise ModelFileError(
        input_name,
        path,
        f"unknown Wan DiT variant (in_channels={sig.in_channels}, dim={sig.dim}, layers={sig.num_layers}, "
        f"image embedder={sig.image_embedder}); supported: {', '.join(DIT_VARIANTS)}",
        "use one of the supported Wan 2.1 / 2.2 DiT files",
    )


def shapes_image_dim(shapes: Mapping[str, tuple[int, ...]]) -> int:
    sd = to_diffusers_layout(shapes)
    return sd["condition_embedder.image_embedder.norm1.weight"][0]


def detect_dit_variant(
    state_dict_keys_and_shapes: Mapping[str, tuple[int, ...]], input_name: str = "dit_name", path: object = "<weights>"
) -> str:
    """Bundled config folder name (e.g. ``"wan2.1-i2v-14b"``) for a key -> shape table in any supported layout."""
    return _match(state_dict_keys_and_shapes, input_name, path)[0]


def _check_supported(keys: list[str], input_name: str, path: Path) -> None:
    check_kind(keys, "dit", input_name, path)
    for marker, what in _UNSUPPORTED.items():
        if any(marker in k for k in keys):
            raise ModelFileError(
                input_name,
                path,
                f"this is {what}, which the cascade does not drive",
                "choose a plain Wan 2.1 / 2.2 T2V, I2V, FLF2V or TI2V DiT file",
            )


def load_wan_dit(
    path: str | Path, input_name: str = "dit_name", dtype: torch.dtype | None = None, keep_fp8: bool = True
) -> WanDiT:
    """Load a Wan DiT single file (original, ComfyUI or diffusers layout) on CPU.

    ``dtype`` None keeps the file's storage dtype (fp8 files compute in bfloat16); diffusers' fp32-only
    modules (norms, time embedder, modulation) stay in float32 as in ``from_pretrained``. With ``keep_fp8``
    (default) the Linear weights of a plain fp8 file stay fp8 in memory and are cast per layer when they run
    (:mod:`.cast`), so the DiT holds about the file's bytes, not twice; scaled-fp8 files are dequantized.
    """
    from accelerate import init_empty_weights
    from diffusers import WanTransformer3DModel

    from avatar_cascade.models.cast import cast_fp8_linears, is_fp8, linear_weight_keys, load_dtype

    path = Path(path)
    shapes, _ = read_safetensors_header(path, input_name)
    keys = list(shapes)
    for marker, family_loader in FAMILY_LOADERS.items():  # DiT families with their own class (Wan VACE)
        if any(marker in k for k in keys):
            check_kind(keys, "dit", input_name, path)
            return family_loader(path, input_name, dtype)
    _check_supported(keys, input_name, path)
    variant, config = _match(shapes, input_name, path)
    state_dict, _ = read_safetensors(path, input_name)
    dtype = dtype or storage_dtype(state_dict)
    raw = strip_prefix(state_dict, _PREFIXES)
    scaled = any(k.endswith(("scale_weight", "scaled_fp8")) for k in raw)
    fp8 = keep_fp8 and not scaled and any(is_fp8(v) for v in raw.values())
    state_dict = to_diffusers_layout(raw if fp8 else dequantize(raw, dtype))
    with init_empty_weights():
        transformer = WanTransformer3DModel.from_config(config)
    keep = list(getattr(transformer, "_keep_in_fp32_modules", None) or [])
    stay = linear_weight_keys(transformer, keep) if fp8 else set()
    state_dict = {k: load_dtype(k, v, keep, dtype, k in stay) for k, v in state_dict.items()}
    strict_load(transformer, state_dict, input_name, path, f"the {variant} Wan DiT")
    transformer.eval().requires_grad_(False)
    # the dtype the loop feeds the DiT in: its first parameter is a float32-only table (scale_shift_table), and
    # with fp8 weights the Linear layers hold fp8
    transformer.compute_dtype = dtype
    if fp8:
        n = cast_fp8_linears(transformer)
        log.info("%s: %d Linear layers keep their fp8 weights (cast to %s per layer)", path.name, n, dtype)
    log.info("loaded Wan DiT %s (%s, %s) from %s", variant, dtype, len(state_dict), path.name)
    return WanDiT(transformer=transformer, variant=variant, identity=file_identity(path), path=path)


def load_wan_experts(
    high_noise_path: str | Path,
    low_noise_path: str | Path,
    boundary_ratio: float = EXPERT_BOUNDARY,
    input_names: tuple[str, str] = ("dit_name", "low_noise_dit_name"),
    dtype: torch.dtype | None = None,
) -> WanDiT:
    """Load a Wan 2.2 A14B expert pair as one handle (the sampler switches at ``boundary_ratio``).

    Both files must hold DiTs of the same shape (the high-noise and the low-noise expert of
    one release); ``boundary_ratio`` is 0.9 for Wan 2.2 I2V A14B and 0.875 for T2V A14B.
    """
    if not 0.0 < boundary_ratio < 1.0:
        from avatar_cascade.core.errors import InputError

        raise InputError("boundary", boundary_ratio, "must be between 0 and 1", "use 0.9 for Wan 2.2 I2V A14B")
    high = load_wan_dit(high_noise_path, input_name=input_names[0], dtype=dtype)
    low = load_wan_dit(low_noise_path, input_name=input_names[1], dtype=dtype)
    if dict(high.transformer.config) != dict(low.transformer.config):
        raise ModelFileError(
            input_names[1],
            low.path,
            f"this expert ({low.variant}) does not have the shape of the high-noise expert ({high.variant})",
            "pick the low-noise file of the same Wan 2.2 A14B release (…_low_noise_14B…)",
        )
    if high.identity == low.identity:
        log.warning("the high- and low-noise experts are the same file %s", high.path)
    return WanDiT(
        transformer=high.transformer,
        variant=high.variant,
        identity=high.identity,
        path=high.path,
        transformer_2=low.transformer,
        path_2=low.path,
        identity_2=low.identity,
        boundary_ratio=float(boundary_ratio),
    )

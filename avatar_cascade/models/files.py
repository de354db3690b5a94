"""Finding, checking and reading model files safely.

Only ``.safetensors`` files are read (no pickles). Every problem an artist can cause
(a wrong name, a file outside the model folder, a truncated download, the wrong kind
of model in a loader) raises :class:`ModelFileError` naming the input and the fix.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import torch

from avatar_cascade.core.errors import ModelFileError

log = logging.getLogger(__name__)

_MIB = 1024 * 1024

# Key names (after a known prefix is removed) that identify what a checkpoint is.
_KIND_SIGNATURES: dict[str, tuple[str, ...]] = {
    "dit": (
        "patch_embedding.weight",
        "condition_embedder.time_embedder.linear_1.weight",
        "blocks.0.self_attn.q.weight",
        "blocks.0.attn1.to_q.weight",
    ),
    "audio_adapter": ("audio_proj.proj1.weight", "blocks.0.audio_cross_attn.q_linear.weight"),
    "vae": ("decoder.middle.0.residual.0.gamma", "decoder.mid_block.resnets.0.norm1.gamma"),
    "text_encoder": ("encoder.block.0.layer.0.SelfAttention.q.weight", "spiece_model"),
    "audio_encoder": ("feature_extractor.conv_layers.0.conv.weight", "model.encoder.embed_positions.weight"),
    "clip_vision": (
        "vision_model.embeddings.patch_embedding.weight",
        "visual.conv1.weight",
        "vision_model.encoder.layers.0.self_attn.q_proj.weight",
    ),
    "llm": ("model.layers.0.self_attn.q_proj.weight", "model.language_model.layers.0.self_attn.q_proj.weight"),
}
_KNOWN_PREFIXES = (
    "model.diffusion_model.",
    "diffusion_model.",
    "first_stage_model.",
    "vae.",
    "wav2vec2.",
    "text_encoders.umt5xxl.transformer.",
    "umt5xxl.transformer.",
    "transformer.",
    "text_encoder.",
)
_LORA_MARKERS = ("lora_A.", "lora_B.", "lora_down.", "lora_up.", ".lora.down.", ".lora.up.")

KIND_NAMES = {
    "dit": ("a Wan DiT (diffusion model)", "the DiT loader (models/diffusion_models/)"),
    "audio_adapter": (
        "an InfiniteTalk/MultiTalk audio adapter",
        "the audio-adapter input (models/diffusion_models/ or models/model_patches/)",
    ),
    "vae": ("a Wan VAE", "the VAE loader (models/vae/)"),
    "text_encoder": ("a T5/UMT5 text encoder", "the text-encoder loader (models/text_encoders/)"),
    "audio_encoder": ("an audio encoder (wav2vec2/whisper)", "the audio-encoder loader (models/audio_encoders/)"),
    "clip_vision": ("a CLIP vision encoder", "the CLIP-vision loader (models/clip_vision/)"),
    "lora": ("a LoRA", "the LoRA stack (models/loras/)"),
    "llm": ("a language model", "the MLLM loader (models/LLM/, as a Hugging Face folder)"),
}


def _fix_pick(folder: str) -> str:
    return f"put the file in models/{folder}/ and pick it from the list"


def resolve_model_path(folder_roots: Iterable[str | Path], name: str, input_name: str) -> Path:
    """Resolve a model file or folder ``name`` strictly inside one of ``folder_roots``.

    Absolute paths and ``..`` components are refused, so a name can only point
    inside a model folder. A symlink the artist placed in a model folder is
    followed (ComfyUI does the same; models often live on another disk). A
    missing name lists what the folder does hold. The name is returned as it sits in the folder (not the
    link's target): a Hugging Face cache link ``x.safetensors -> blobs/<hash>`` keeps its extension, and the
    loaders check the target's contents (a safetensors header, never a pickle).
    """
    roots = [Path(r).expanduser().resolve() for r in folder_roots]
    folder = roots[0].name if roots else "<folder>"
    fix = _fix_pick(folder)
    if not isinstance(name, str) or not name.strip():
        raise ModelFileError(input_name, name, "no model file was chosen", fix)
    if PurePosixPath(name).is_absolute() or PureWindowsPath(name).is_absolute() or PureWindowsPath(name).drive:
        raise ModelFileError(input_name, name, "absolute paths are not accepted here", fix)
    parts = name.replace("\\", "/").split("/")
    if ".." in parts:
        raise ModelFileError(input_name, name, "'..' is not allowed in a model name", fix)
    for root in roots:
        candidate = root / name
        if not candidate.exists():
            continue
        return candidate
    present: list[str] = []
    for root in roots:
        if root.is_dir():
            present += sorted(
                str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")
            )
    shown = ", ".join(present[:10]) + (f", ... ({len(present)} in all)" if len(present) > 10 else "")
    where = " or ".join(str(r) for r in roots) or "(no model folder configured)"
    problem = f"not found in {where}; the folder holds: {shown or 'nothing'}"
    raise ModelFileError(input_name, name, problem, fix)


def _check_file(path: Path, input_name: str) -> Path:
    path = Path(path)
    if path.is_dir():
        raise ModelFileError(
            input_name,
            path,
            "this is a folder; this loader reads one .safetensors file",
            "pick the single-file checkpoint (ComfyUI's repackaged .safetensors) instead of a folder",
        )
    if path.suffix.lower() != ".safetensors":
        raise ModelFileError(
            input_name,
            path,
            f"'{path.suffix or 'no extension'}' files are not loaded: only .safetensors files are loaded, for safety "
            "(other formats can run code when opened)",
            "convert the checkpoint to .safetensors (or download the .safetensors release) and pick that",
        )
    if not path.is_file():
        raise ModelFileError(input_name, path, "the file does not exist", "check the name or re-download the file")
    if path.stat().st_size == 0:
        raise ModelFileError(input_name, path, "the file is empty (0 bytes)", "re-download the file")
    return path


def _corrupt(input_name: str, path: Path, err: Exception) -> ModelFileError:
    return ModelFileError(input_name, path, f"truncated or not a safetensors file ({err})", "re-download the file")


def read_safetensors_header(path: str | Path, input_name: str) -> tuple[dict[str, tuple[int, ...]], dict[str, str]]:
    """Key -> shape table and metadata of a safetensors file, without reading the tensors."""
    from safetensors import SafetensorError, safe_open

    path = _check_file(Path(path), input_name)
    try:
        with safe_open(str(path), framework="pt") as f:
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
            metadata = dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as err:
        raise _corrupt(input_name, path, err) from err
    return shapes, metadata


def read_safetensors(
    path: str | Path, input_name: str, device: str | torch.device = "cpu"
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """All tensors and the metadata of a safetensors file (tensors placed on ``device``)."""
    from safetensors import SafetensorError, safe_open

    path = _check_file(Path(path), input_name)
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            metadata = dict(f.metadata() or {})
            state_dict = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as err:
        raise _corrupt(input_name, path, err) from err
    return state_dict, metadata


def file_identity(path: str | Path) -> str:
    """A cheap, stable id for cache keys: sha256 of name, size, first and last MiB (hex)."""
    path = Path(path)
    size = path.stat().st_size
    h = hashlib.sha256()
    h.update(path.name.encode("utf-8"))
    h.update(str(size).encode("ascii"))
    with path.open("rb") as f:
        h.update(f.read(_MIB))
        if size > _MIB:
            f.seek(max(size - _MIB, _MIB))
            h.update(f.read(_MIB))
    return h.hexdigest()


def folder_identity(folder: str | Path) -> str:
    """:func:`file_identity` of every file in a Hugging Face folder, combined (hex)."""
    folder = Path(folder)
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(folder)).encode("utf-8"))
            h.update(file_identity(p).encode("ascii"))
    return h.hexdigest()


def checkpoint_kind(keys: Iterable[str]) -> str | None:
    """What a checkpoint is from its key names: 'dit', 'vae', 'text_encoder', 'audio_encoder', ... or None."""
    names: set[str] = set()
    for key in keys:
        if any(m in key for m in _LORA_MARKERS):
            return "lora"
        names.add(key)
        for prefix in _KNOWN_PREFIXES:
            if key.startswith(prefix):
                names.add(key[len(prefix) :])
    for kind, signatures in _KIND_SIGNATURES.items():
        if any(s in names for s in signatures):
            return kind
    return None


def check_kind(keys: Iterable[str], expected: str, input_name: str, path: Path) -> None:
    """Raise a clear error when a checkpoint of another kind was chosen in a loader for ``expected``."""
    found = checkpoint_kind(keys)
    if found == expected:
        return
    wanted = KIND_NAMES[expected][0]
    if found is None:
        raise ModelFileError(input_name, path, f"this file is not recognised as {wanted}", f"choose {wanted} file here")
    what, where = KIND_NAMES[found]
    raise ModelFileError(
        input_name, path, f"this looks like {what}, not {wanted}", f"choose it in {where}, and pick {wanted} here"
    )


def strip_prefix(state_dict: Mapping[str, Any], prefixes: Iterable[str]) -> dict[str, Any]:
    """Remove the first of ``prefixes`` that every prefixed key carries (keys without it are kept)."""
    out = dict(state_dict)
    for prefix in prefixes:
        if any(k.startswith(prefix) for k in out):
            out = {(k[len(prefix) :] if k.startswith(prefix) else k): v for k, v in out.items()}
    return out


_QUANT_MARKERS = ("scaled_fp8", "comfy_quant")
_SCALE_SUFFIXES = (".scale_weight", ".weight_scale")
_DROP_SUFFIXES = (".scale_input", ".input_scale", ".comfy_quant")


def dequantize(state_dict: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Undo ComfyUI's fp8 storage: scaled-fp8 weights times their scale, plain fp8 cast to ``dtype``.

    Files without fp8 tensors come back unchanged.
    """
    fp8 = {getattr(torch, n) for n in ("float8_e4m3fn", "float8_e5m2") if hasattr(torch, n)}
    if not any(v.dtype in fp8 for v in state_dict.values()) and not any(k in state_dict for k in _QUANT_MARKERS):
        return state_dict
    out: dict[str, torch.Tensor] = {}
    scales = {}
    for k, v in state_dict.items():
        if k in _QUANT_MARKERS or k.endswith(_DROP_SUFFIXES):
            continue
        suffix = next((s for s in _SCALE_SUFFIXES if k.endswith(s)), None)
        if suffix is not None:
            scales[k[: -len(suffix)] + ".weight"] = v
            continue
        out[k] = v
    for k, v in out.items():
        if v.dtype in fp8:
            w = v.to(dtype)
            if k in scales:
                w = w * scales[k].to(dtype)
            out[k] = w
    log.info("dequantized %d fp8 tensors to %s", sum(1 for v in state_dict.values() if v.dtype in fp8), dtype)
    return out


def cast_floating(state_dict: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Cast floating-point tensors to ``dtype`` (integer tensors are left alone)."""
    return {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in state_dict.items()}


def storage_dtype(state_dict: Mapping[str, torch.Tensor]) -> torch.dtype:
    """The most common floating dtype among the tensors (fp8 counts as bfloat16)."""
    counts: dict[torch.dtype, int] = {}
    for v in state_dict.values():
        if v.is_floating_point():
            d = v.dtype if v.element_size() > 1 else torch.bfloat16
            counts[d] = counts.get(d, 0) + v.numel()
    return max(counts, key=counts.__getitem__) if counts else torch.float32


def strict_load(
    module: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], input_name: str, path: Path, what: str
) -> None:
    """``load_state_dict(strict=True, assign=True)`` with missing/unexpected keys reported as a ModelFileError."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    wrong = [
        f"{k} {tuple(state_dict[k].shape)} != {tuple(expected[k].shape)}"
        for k in expected
        if k in state_dict and tuple(state_dict[k].shape) != tuple(expected[k].shape)
    ]
    if missing or unexpected or wrong:
        details = []
        if missing:
            details.append(f"{len(missing)} missing weights (e.g. {', '.join(missing[:3])})")
        if unexpected:
            details.append(f"{len(unexpected)} unexpected weights (e.g. {', '.join(unexpected[:3])})")
        if wrong:
            details.append(f"{len(wrong)} weights of the wrong shape (e.g. {'; '.join(wrong[:2])})")
        raise ModelFileError(
            input_name,
            path,
            f"the weights do not fit {what}: " + "; ".join(details),
            "use an unmodified release of this model (merges and add-ons go in their own loaders)",
        )
    module.load_state_dict(dict(state_dict), strict=True, assign=True)

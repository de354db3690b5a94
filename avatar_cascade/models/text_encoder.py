"""UMT5 text encoder (the one every Wan model uses) into ``transformers.UMT5EncoderModel``, offline.

Sources: a ComfyUI ``text_encoders/*.safetensors`` single file (Hugging Face T5 key layout;
ComfyUI's files carry the SentencePiece model as a uint8 tensor under ``spiece_model``) or a
Hugging Face folder (``config.json`` + safetensors + tokenizer files, or a ``tokenizer/``
folder beside it, as in the Wan diffusers repos). Prompts are encoded exactly like
diffusers' ``WanPipeline._get_t5_prompt_embeds``.
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
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
    folder_identity,
    read_safetensors,
    read_safetensors_header,
    storage_dtype,
    strict_load,
    strip_prefix,
)
from avatar_cascade.models.hf_folder import SAFE_LOAD, check_hf_folder
from avatar_cascade.models.offload import largest_weight

log = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
UMT5_VARIANTS = ("umt5-xxl", "avatar-cascade-tiny-umt5", "avatar-cascade-tiny-umt5-wide")
_PREFIXES = ("text_encoders.umt5xxl.transformer.", "umt5xxl.transformer.", "transformer.", "text_encoder.")
_TOKENIZER_FILES = ("tokenizer.json", "spiece.model", "tokenizer_config.json")
_FIX_UMT5 = "choose the UMT5-XXL text encoder (e.g. umt5_xxl_fp16.safetensors) that Wan models use"


def prompt_clean(text: str) -> str:
    """diffusers' Wan prompt cleaning (as ``WanPipeline`` encodes): ftfy fix, HTML unescape, whitespace collapse."""
    from diffusers.pipelines.wan.pipeline_wan import prompt_clean as wan_prompt_clean

    return wan_prompt_clean(text)


@dataclass
class TextEncoder:
    """UMT5 encoder + tokenizer. ``encode`` runs on the model's device and dtype."""

    model: Any
    tokenizer: Any
    identity: str
    max_length: int = 512

    def modules(self) -> list[torch.nn.Module]:
        """Modules to place on the compute device while it runs (``runtime.use_models(*text_encoder.modules())``)."""
        return [self.model]

    def cache_identity(self) -> str:
        """Id for cache keys: the weights' identity."""
        return self.identity

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.d_model)

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> torch.Tensor:
        """Prompts -> embeddings ``[B, max_length, d_model]``, zero past each prompt's token count."""
        if isinstance(prompts, str):
            prompts = [prompts]
        if not prompts or not all(isinstance(p, str) for p in prompts):
            raise InputError("prompt", prompts, "expected a non-empty list of strings", "give at least one prompt")
        cleaned = [prompt_clean(p) for p in prompts]
        inputs = self.tokenizer(
            cleaned,
            padding="max_length",
            max_length=self.max_length,
            truncation=True,
            add_special_tokens=True,
            return_attention_mask=True,
            return_tensors="pt",
        )
        ids, mask = inputs.input_ids, inputs.attention_mask
        seq_lens = mask.gt(0).sum(dim=1).long()
        device = largest_weight(self.model).device
        hidden = self.model(ids.to(device), mask.to(device)).last_hidden_state
        keep = torch.arange(self.max_length, device=device)[None, :] < seq_lens.to(device)[:, None]
        return hidden * keep[..., None].to(hidden.dtype)


def load_bundled_config(variant: str) -> dict[str, Any]:
    return json.loads((CONFIG_DIR / variant / "config.json").read_text())


def detect_umt5_variant(
    shapes: Mapping[str, tuple[int, ...]], input_name: str = "text_encoder_name", path: object = "<weights>"
) -> str:
    """Bundled config folder name for a UMT5 key -> shape table (HF T5 key layout)."""
    shapes = strip_prefix(shapes, _PREFIXES)
    if "encoder.block.0.layer.1.DenseReluDense.wi.weight" in shapes:
        raise ModelFileError(
            input_name, path, "this looks like an original T5 (v1.0) text encoder, not UMT5", _FIX_UMT5
        )
    if "encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight" not in shapes:
        raise ModelFileError(input_name, path, "this looks like a T5-XXL text encoder (Flux/SD3), not UMT5", _FIX_UMT5)
    try:
        d_model = shapes["shared.weight"][1]
        inner = shapes["encoder.block.0.layer.0.SelfAttention.q.weight"][0]
        d_ff = shapes["encoder.block.0.layer.1.DenseReluDense.wi_0.weight"][0]
    except KeyError as err:
        raise ModelFileError(input_name, path, f"this text encoder file lacks {err}", "re-download the file") from err
    layers = len({m[1] for k in shapes if (m := re.match(r"encoder\.block\.(\d+)\.", k))})
    for variant in UMT5_VARIANTS:
        c = load_bundled_config(variant)
        if (c["d_model"], c["num_heads"] * c["d_kv"], c["d_ff"], c["num_layers"]) == (d_model, inner, d_ff, layers):
            return variant
    raise ModelFileError(input_name, path, f"unknown UMT5 size (d_model={d_model}, layers={layers})", _FIX_UMT5)


def tokenizer_from_spiece(spiece: bytes) -> Any:
    """A ``T5Tokenizer`` built from SentencePiece model bytes (no download)."""
    from transformers import T5Tokenizer

    with tempfile.TemporaryDirectory(prefix="avatar_cascade_spiece_") as tmp:
        (Path(tmp) / "spiece.model").write_bytes(spiece)
        return T5Tokenizer.from_pretrained(tmp, extra_ids=0, **SAFE_LOAD)


def _load_single_file(path: Path, input_name: str, dtype: torch.dtype | None) -> TextEncoder:
    from accelerate import init_empty_weights
    from transformers import UMT5Config, UMT5EncoderModel

    shapes, _ = read_safetensors_header(path, input_name)
    check_kind(shapes, "text_encoder", input_name, path)
    variant = detect_umt5_variant(shapes, input_name, path)
    state_dict, _ = read_safetensors(path, input_name)
    state_dict = strip_prefix(state_dict, _PREFIXES)
    spiece = state_dict.pop("spiece_model", None)
    if spiece is None:
        raise ModelFileError(
            input_name,
            path,
            "this file does not carry its tokenizer (no 'spiece_model' tensor)",
            "use ComfyUI's umt5_xxl_*.safetensors, or a Hugging Face folder with the tokenizer files",
        )
    dropped = [k for k in state_dict if k.startswith(("decoder.", "lm_head."))]
    for k in dropped:
        del state_dict[k]
    dtype = dtype or storage_dtype(state_dict)
    state_dict = {k: v.to(dtype) if v.is_floating_point() else v for k, v in dequantize(state_dict, dtype).items()}
    state_dict.setdefault("encoder.embed_tokens.weight", state_dict.get("shared.weight"))
    if state_dict["encoder.embed_tokens.weight"] is None:
        raise ModelFileError(input_name, path, "this text encoder file lacks its token embedding", "re-download it")
    cfg = load_bundled_config(variant)
    cfg["vocab_size"] = state_dict["shared.weight"].shape[0]
    cfg.pop("architectures", None)
    with init_empty_weights():
        model = UMT5EncoderModel(UMT5Config(**cfg))
    strict_load(model, state_dict, input_name, path, f"the {variant} text encoder")
    model.tie_weights()
    model.eval().requires_grad_(False)
    tokenizer = tokenizer_from_spiece(spiece.cpu().numpy().tobytes())
    log.info("loaded UMT5 %s (%s) from %s", variant, dtype, path.name)
    return TextEncoder(model=model, tokenizer=tokenizer, identity=file_identity(path))


def _load_folder(folder: Path, input_name: str, dtype: torch.dtype | None) -> TextEncoder:
    from transformers import AutoTokenizer, UMT5EncoderModel

    if not (folder / "config.json").is_file():
        raise ModelFileError(input_name, folder, "this folder has no config.json", "pick a Hugging Face model folder")
    check_hf_folder(folder, input_name)
    tok_dir = next(
        (
            d
            for d in (folder, folder / "tokenizer", folder.parent / "tokenizer")
            if any((d / f).is_file() for f in _TOKENIZER_FILES)
        ),
        None,
    )
    if tok_dir is None:
        raise ModelFileError(
            input_name,
            folder,
            "no tokenizer files (spiece.model / tokenizer.json) found",
            "put the tokenizer files in the folder or in a 'tokenizer' folder beside it",
        )
    check_hf_folder(tok_dir, input_name)  # a 'tokenizer' folder beside the model is read too
    try:
        model = UMT5EncoderModel.from_pretrained(
            folder, **SAFE_LOAD, use_safetensors=True, dtype=dtype or "auto"
        )
        tokenizer = AutoTokenizer.from_pretrained(tok_dir, **SAFE_LOAD)
    except (OSError, ValueError) as err:
        raise ModelFileError(
            input_name,
            folder,
            f"cannot load this folder as UMT5 ({err})",
            "use a UMT5 folder with .safetensors weights",
        ) from err
    model.eval().requires_grad_(False)
    return TextEncoder(model=model, tokenizer=tokenizer, identity=folder_identity(folder))


def load_text_encoder(
    path: str | Path, input_name: str = "text_encoder_name", dtype: torch.dtype | None = None
) -> TextEncoder:
    """Load UMT5 from a ComfyUI single file or a Hugging Face folder, on CPU."""
    path = Path(path)
    if path.is_dir():
        return _load_folder(path, input_name, dtype)
    return _load_single_file(path, input_name, dtype)

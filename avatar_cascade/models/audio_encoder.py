"""wav2vec2 audio encoder into ``transformers.Wav2Vec2Model``, offline.

Sources: a ComfyUI ``audio_encoders/*.safetensors`` single file (Hugging Face
``Wav2Vec2Model`` key layout, optionally prefixed ``wav2vec2.``) or a Hugging Face folder.
``encode`` returns every hidden layer, about 50 feature frames per second of 16 kHz audio.
"""

from __future__ import annotations

import json
import logging
import re
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
WAV2VEC2_VARIANTS = (
    "wav2vec2-base",
    "chinese-wav2vec2-base",
    "wav2vec2-large-xlsr-53",
    "avatar-cascade-tiny-wav2vec2",
)
_HEAD_PREFIXES = ("lm_head.", "quantizer.", "project_q.", "project_hid.", "final_proj.", "dropout_features.")
_POS_CONV = "encoder.pos_conv_embed.conv."
_FIX = "choose a wav2vec2 audio encoder (base, chinese-base or large-xlsr-53) in models/audio_encoders/"


@dataclass
class AudioEncoder:
    """A wav2vec2 model; ``encode`` runs on the model's device and dtype."""

    model: Any
    identity: str
    sample_rate: int = 16000
    normalize: bool = True

    def modules(self) -> list[torch.nn.Module]:
        """Modules to place on the compute device while it runs (``runtime.use_models(*audio_encoder.modules())``)."""
        return [self.model]

    def cache_identity(self) -> str:
        """Id for cache keys: the weights' identity."""
        return self.identity

    @property
    def num_layers(self) -> int:
        return int(self.model.config.num_hidden_layers)

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    @torch.no_grad()
    def encode(self, waveform_16k: torch.Tensor) -> torch.Tensor:
        """Mono waveform ``[T]`` at 16 kHz (float) -> all hidden states ``[num_layers+1, frames, hidden]``.

        frames is about T / 320 (50 per second). The input is normalised to zero mean and
        unit variance like ``Wav2Vec2FeatureExtractor(do_normalize=True)`` when ``normalize``.
        """
        x = torch.as_tensor(waveform_16k)
        if x.ndim == 2 and x.shape[0] == 1:
            x = x[0]
        if x.ndim != 1 or x.numel() < 400:
            raise InputError(
                "audio",
                tuple(x.shape),
                "expected one mono waveform of at least 400 samples (25 ms)",
                "pass a [T] tensor at 16 kHz",
            )
        x = x.float()
        if self.normalize:
            x = (x - x.mean()) / torch.sqrt(x.var(unbiased=False) + 1e-7)
        p = largest_weight(self.model)
        out = self.model(x[None].to(p.device, p.dtype), output_hidden_states=True)
        return torch.stack([h[0] for h in out.hidden_states], dim=0)


def load_bundled_config(variant: str) -> dict[str, Any]:
    return json.loads((CONFIG_DIR / variant / "config.json").read_text())


def _bundled_normalize(variant: str) -> bool:
    pre = CONFIG_DIR / variant / "preprocessor_config.json"
    return bool(json.loads(pre.read_text()).get("do_normalize", True)) if pre.is_file() else True


def detect_wav2vec2_variant(
    shapes: Mapping[str, tuple[int, ...]], input_name: str = "audio_encoder_name", path: object = "<weights>"
) -> str:
    """Bundled config folder name for a wav2vec2 key -> shape table."""
    shapes = strip_prefix(shapes, ("wav2vec2.",))
    if "model.encoder.embed_positions.weight" in shapes:
        raise ModelFileError(input_name, path, "this is a Whisper audio encoder; the cascade uses wav2vec2", _FIX)
    try:
        hidden = shapes["encoder.layer_norm.weight"][0]
        conv_dim = shapes["feature_extractor.conv_layers.0.conv.weight"][0]
    except KeyError as err:
        raise ModelFileError(input_name, path, f"this wav2vec2 file lacks {err}", "re-download the file") from err
    layers = len({m[1] for k in shapes if (m := re.match(r"encoder\.layers\.(\d+)\.", k))})
    layer_norm = "feature_extractor.conv_layers.1.layer_norm.weight" in shapes
    matches = []
    for variant in WAV2VEC2_VARIANTS:
        c = load_bundled_config(variant)
        if (c["hidden_size"], c["num_hidden_layers"], c["conv_dim"][0], c["feat_extract_norm"] == "layer") == (
            hidden,
            layers,
            conv_dim,
            layer_norm,
        ):
            matches.append(variant)
    if not matches:
        raise ModelFileError(input_name, path, f"unknown wav2vec2 size (hidden={hidden}, layers={layers})", _FIX)
    # chinese-wav2vec2-base has the same shapes as wav2vec2-base; the name tells them apart.
    if "chinese-wav2vec2-base" in matches and "chinese" in Path(str(path)).name.lower():
        return "chinese-wav2vec2-base"
    return matches[0]


def _fix_keys(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in strip_prefix(state_dict, ("wav2vec2.",)).items():
        if k.startswith(_HEAD_PREFIXES):
            continue
        if k == _POS_CONV + "weight_g":
            k = _POS_CONV + "parametrizations.weight.original0"
        elif k == _POS_CONV + "weight_v":
            k = _POS_CONV + "parametrizations.weight.original1"
        out[k] = v
    return out


def _load_single_file(path: Path, input_name: str, dtype: torch.dtype | None) -> AudioEncoder:
    from accelerate import init_empty_weights
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    shapes, _ = read_safetensors_header(path, input_name)
    check_kind(shapes, "audio_encoder", input_name, path)
    variant = detect_wav2vec2_variant(shapes, input_name, path)
    state_dict, _ = read_safetensors(path, input_name)
    dtype = dtype or storage_dtype(state_dict)
    state_dict = _fix_keys(dequantize(state_dict, dtype))
    state_dict = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state_dict.items()}
    cfg = load_bundled_config(variant)
    cfg.pop("architectures", None)
    with init_empty_weights():
        model = Wav2Vec2Model(Wav2Vec2Config(**cfg))
    if "masked_spec_embed" in model.state_dict() and "masked_spec_embed" not in state_dict:
        # Only used for training-time masking; some exports leave it out.
        state_dict["masked_spec_embed"] = torch.zeros(model.config.hidden_size, dtype=dtype)
    strict_load(model, state_dict, input_name, path, f"the {variant} audio encoder")
    model.eval().requires_grad_(False)
    log.info("loaded wav2vec2 %s (%s) from %s", variant, dtype, path.name)
    return AudioEncoder(model=model, identity=file_identity(path), normalize=_bundled_normalize(variant))


def _load_folder(folder: Path, input_name: str, dtype: torch.dtype | None) -> AudioEncoder:
    from transformers import Wav2Vec2Model

    if not (folder / "config.json").is_file():
        raise ModelFileError(input_name, folder, "this folder has no config.json", "pick a Hugging Face model folder")
    check_hf_folder(folder, input_name)
    try:
        model = Wav2Vec2Model.from_pretrained(
            folder, **SAFE_LOAD, use_safetensors=True, dtype=dtype or "auto"
        )
    except (OSError, ValueError) as err:
        raise ModelFileError(
            input_name,
            folder,
            f"cannot load this folder as wav2vec2 ({err})",
            "use a wav2vec2 folder with .safetensors weights",
        ) from err
    pre = folder / "preprocessor_config.json"
    normalize = bool(json.loads(pre.read_text()).get("do_normalize", True)) if pre.is_file() else True
    model.eval().requires_grad_(False)
    return AudioEncoder(model=model, identity=folder_identity(folder), normalize=normalize)


def load_audio_encoder(
    path: str | Path, input_name: str = "audio_encoder_name", dtype: torch.dtype | None = None
) -> AudioEncoder:
    """Load wav2vec2 from a ComfyUI single file or a Hugging Face folder, on CPU."""
    path = Path(path)
    if path.is_dir():
        return _load_folder(path, input_name, dtype)
    return _load_single_file(path, input_name, dtype)

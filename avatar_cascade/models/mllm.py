"""Local multimodal LLMs for the Director (Hugging Face folders, safetensors only).

Supported families, detected from ``config.json`` (``model_type`` / ``architectures``):

* ``qwen2_5_vl`` - Qwen2.5-VL (image + text)
* ``qwen2_vl`` - Qwen2-VL (image + text)
* ``qwen3_vl`` / ``qwen3_vl_moe`` - Qwen3-VL (image + text)
* ``qwen2_5_omni`` / ``qwen2_5_omni_thinker`` - Qwen2.5-Omni: only the *thinker* (the
  part that reads image, audio and text and writes text) is loaded; the talker and the
  vocoder of a full Omni folder are skipped. The thinker hears real audio: pass
  :class:`AudioExcerpt` s to :meth:`MLLM.generate` (mono, at :attr:`MLLM.audio_rate` Hz).

Nothing is downloaded (``local_files_only=True``) and no repository code is run
(no ``trust_remote_code``). Weights load on the CPU in the compute dtype
(bf16 on CUDA, fp32 on CPU unless told otherwise); the Director places the model for its
passes with ``runtime.use_models(*mllm.modules())``, which offloads it afterwards.
JSON is read out of replies by :mod:`avatar_cascade.stages.director.json_output`.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from avatar_cascade.core.errors import InputError, ModelFileError
from avatar_cascade.models.hf_folder import SAFE_LOAD, check_hf_folder
from avatar_cascade.models.offload import largest_weight

log = logging.getLogger(__name__)

# model_type -> (family, transformers class name)
FAMILIES: dict[str, tuple[str, str]] = {
    "qwen2_5_vl": ("qwen2_5_vl", "Qwen2_5_VLForConditionalGeneration"),
    "qwen2_vl": ("qwen2_vl", "Qwen2VLForConditionalGeneration"),
    "qwen3_vl": ("qwen3_vl", "Qwen3VLForConditionalGeneration"),
    "qwen3_vl_moe": ("qwen3_vl", "Qwen3VLMoeForConditionalGeneration"),
    "qwen2_5_omni": ("qwen2_5_omni", "Qwen2_5OmniThinkerForConditionalGeneration"),
    "qwen2_5_omni_thinker": ("qwen2_5_omni", "Qwen2_5OmniThinkerForConditionalGeneration"),
}
_ARCHITECTURES = {
    "Qwen2_5_VLForConditionalGeneration": "qwen2_5_vl",
    "Qwen2VLForConditionalGeneration": "qwen2_vl",
    "Qwen3VLForConditionalGeneration": "qwen3_vl",
    "Qwen3VLMoeForConditionalGeneration": "qwen3_vl_moe",
    "Qwen2_5OmniModel": "qwen2_5_omni",
    "Qwen2_5OmniForConditionalGeneration": "qwen2_5_omni",
    "Qwen2_5OmniThinkerForConditionalGeneration": "qwen2_5_omni_thinker",
}
SUPPORTED = (
    "Qwen2.5-VL (qwen2_5_vl), Qwen2-VL (qwen2_vl), Qwen3-VL (qwen3_vl, qwen3_vl_moe), Qwen2.5-Omni (qwen2_5_omni)"
)


@dataclass
class AudioExcerpt:
    """A stretch of the audio track for a model that hears (Qwen2.5-Omni).

    Attributes:
        start_s / end_s: where the excerpt sits in the track, seconds.
        samples: mono float32 samples at the model's :attr:`MLLM.audio_rate` Hz.
    """

    start_s: float
    end_s: float
    samples: np.ndarray

    def label(self) -> str:
        from avatar_cascade.artefacts.storyline import format_time

        return f"\nAudio {format_time(self.start_s)}-{format_time(self.end_s)}: "


@dataclass
class MLLM:
    """A loaded multimodal LLM and its processor.

    Attributes:
        model: the transformers model (for Omni: the thinker only).
        processor: the matching transformers processor (tokenizer + image processor, and
            for Omni the Whisper feature extractor).
        family: one of the FAMILIES values, e.g. "qwen2_5_vl".
        identity: stable id of the weights (family, folder name, hash of config and files).
        accepts_audio: True when the model can also hear audio (Qwen2.5-Omni).
    """

    model: Any
    processor: Any
    family: str
    identity: str
    accepts_audio: bool

    def modules(self) -> list[torch.nn.Module]:
        """Modules to place on the compute device while it runs (``runtime.use_models(*mllm.modules())``)."""
        return [self.model]

    def cache_identity(self) -> str:
        """Id for cache keys: the weights' identity."""
        return self.identity

    @property
    def audio_rate(self) -> int | None:
        """Sample rate (Hz) the model hears at (16 kHz for Qwen2.5-Omni); None when it cannot hear."""
        fe = getattr(self.processor, "feature_extractor", None) if self.accepts_audio else None
        return int(fe.sampling_rate) if fe is not None else None

    @property
    def max_audio_s(self) -> float:
        """Longest single excerpt the feature extractor keeps (longer ones are cut), seconds; 0 when deaf."""
        fe = getattr(self.processor, "feature_extractor", None) if self.accepts_audio else None
        if fe is None:
            return 0.0
        return float(getattr(fe, "n_samples", 30 * fe.sampling_rate)) / float(fe.sampling_rate)

    @property
    def context_tokens(self) -> int:
        """Longest prompt + reply the model takes (tokens): the text model's ``max_position_embeddings``
        (capped by the tokenizer's ``model_max_length`` when that is smaller)."""
        cfg = self.model.config
        text_cfg = getattr(cfg, "text_config", None) or cfg
        limit = int(
            getattr(text_cfg, "max_position_embeddings", 0) or getattr(cfg, "max_position_embeddings", 0) or 32768
        )
        tok_max = getattr(getattr(self.processor, "tokenizer", None), "model_max_length", None)
        return min(limit, int(tok_max)) if isinstance(tok_max, int) and 0 < tok_max < 10**7 else limit

    def fit_text(self, text: str, max_tokens: int) -> tuple[str, int]:
        """``text`` cut to its first ``max_tokens`` tokens, and its token count before the cut."""
        tokenizer = getattr(self.processor, "tokenizer", self.processor)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) <= max_tokens:
            return text, len(ids)
        return tokenizer.decode(ids[:max_tokens], skip_special_tokens=True), len(ids)

    def _greedy(self, max_new_tokens: int) -> Any:
        """The model's generation config made greedy (sampling knobs cleared, so no warnings)."""
        gen = copy.deepcopy(self.model.generation_config)
        gen.do_sample, gen.num_beams, gen.max_new_tokens = False, 1, max_new_tokens
        gen.temperature = gen.top_p = gen.top_k = None
        gen.max_length = None
        return gen

    def _inputs(self, text: str, image: Any, system: str | None, audio: Sequence[AudioExcerpt]) -> dict:
        """Chat template + processor: token ids, pixel values and (Omni) audio features."""
        content: list[dict] = [{"type": "image"}] if image is not None else []
        for excerpt in audio:
            content += [{"type": "text", "text": excerpt.label()}, {"type": "audio"}]
        content.append({"type": "text", "text": "\n" + text if audio else text})
        messages = [{"role": "system", "content": [{"type": "text", "text": system}]}] if system else []
        messages.append({"role": "user", "content": content})
        prompt = self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        kwargs: dict = {"text": [prompt], "return_tensors": "pt"}
        if image is not None:
            kwargs["images"] = [image]
        if audio:
            kwargs["audio"] = [np.ascontiguousarray(e.samples, dtype=np.float32) for e in audio]
            kwargs["sampling_rate"] = self.audio_rate
        return self.processor(**kwargs)

    def generate(
        self,
        messages_text: str,
        image: Any | None = None,
        max_new_tokens: int = 512,
        seed: int = 0,
        system: str | None = None,
        audio: Sequence[AudioExcerpt] | None = None,
    ) -> tuple[str, dict]:
        """Answer one user turn (optional PIL image, optional audio excerpts, text) greedily.

        Runs on whatever device the model is on (place it with ``runtime.use_models``).
        ``audio`` is only for models with :attr:`accepts_audio`; each excerpt is
        preceded by its time label in the turn.

        Returns:
            The decoded reply and stats: ``tokens_in`` (prompt tokens, image and audio
            placeholders included), ``audio_tokens``, ``tokens_out``, ``seconds``.
        """
        audio = list(audio or [])
        if audio and not self.accepts_audio:
            raise InputError(
                "mllm", self.identity, f"{self.family} cannot hear audio", "describe the audio in text instead"
            )
        inputs = self._inputs(messages_text, image, system, audio)
        device, dtype = largest_weight(self.model).device, largest_weight(self.model).dtype
        inputs = {
            k: (v.to(device, dtype) if torch.is_floating_point(v) else v.to(device))
            for k, v in inputs.items()
            if isinstance(v, torch.Tensor)
        }
        ids = inputs["input_ids"]
        n_in = int(ids.shape[1])
        if n_in + max_new_tokens > self.context_tokens:
            log.warning(
                "mllm %s: the prompt is %d tokens + %d to write, beyond the model's %d-token context: the reply "
                "may be cut or unusable (shorten the instruction, or lower the shots per pass)",
                self.identity, n_in, max_new_tokens, self.context_tokens,
            )  # fmt: skip
        audio_id = getattr(self.processor, "audio_token_id", None) if audio else None
        n_audio = int((ids == audio_id).sum()) if audio_id is not None else 0
        t0 = time.perf_counter()
        devices = [device.index or 0] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), torch.inference_mode():
            torch.manual_seed(seed)
            out = self.model.generate(**inputs, generation_config=self._greedy(max_new_tokens))
        new = out[:, n_in:]
        text = self.processor.batch_decode(new, skip_special_tokens=True)[0]
        stats = {
            "tokens_in": n_in,
            "audio_tokens": n_audio,
            "tokens_out": int(new.shape[1]),
            "seconds": time.perf_counter() - t0,
        }
        log.debug(
            "mllm %s: %d tokens in (%d audio), %d out, %.2f s",
            self.identity,
            n_in,
            n_audio,
            stats["tokens_out"],
            stats["seconds"],
        )
        return text, stats


def _read_config(folder: Path, input_name: str) -> dict:
    if not folder.is_dir():
        raise ModelFileError(
            input_name,
            folder,
            "is not a folder",
            "choose a Hugging Face model folder under models/LLM (with config.json and *.safetensors)",
        )
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        raise ModelFileError(
            input_name,
            folder,
            "has no config.json",
            "download the whole Hugging Face folder (config, tokenizer, processor, safetensors)",
        )
    try:
        return json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelFileError(
            input_name, cfg_path, f"config.json is unreadable ({exc})", "re-download the folder"
        ) from exc


def detect_family(config: dict) -> str | None:
    """The model_type key of FAMILIES for a config.json dict, or None when unsupported."""
    model_type = config.get("model_type")
    if model_type in FAMILIES:
        return model_type
    for arch in config.get("architectures") or []:
        if arch in _ARCHITECTURES:
            return _ARCHITECTURES[arch]
    return None


def _check_chat_template(processor, folder: Path, input_name: str) -> None:
    """The Director talks to the model through its chat template: a folder without one is refused here,
    not with a ValueError from inside transformers at the first reply."""
    tokenizer = getattr(processor, "tokenizer", None)
    if getattr(processor, "chat_template", None) or getattr(tokenizer, "chat_template", None):
        return
    raise ModelFileError(
        input_name,
        folder,
        "has no chat template (chat_template.jinja, chat_template.json or 'chat_template' in tokenizer_config.json)",
        "download the whole Hugging Face folder of an instruct / chat release (it ships the chat template)",
    )


def _identity(folder: Path, family: str, weights: list[Path]) -> str:
    h = hashlib.sha256((folder / "config.json").read_bytes())
    for w in weights:
        h.update(f"{w.name}:{w.stat().st_size}".encode())
    return f"{family}/{folder.name}@{h.hexdigest()[:12]}"


def load_mllm(folder: Path, input_name: str = "mllm_name", dtype: torch.dtype | None = None) -> MLLM:
    """Load a supported multimodal LLM from a local Hugging Face folder (on CPU).

    The weights stay on the CPU; place them for a call with
    ``with runtime.use_models(*mllm.modules()): ...`` (ComfyUI's model management inside
    ComfyUI, a move to ``runtime.device`` and back outside it).

    Args:
        folder: the model folder (config.json, *.safetensors, tokenizer and processor files).
        input_name: the node input named in error messages.
        dtype: weights dtype; pass ``runtime.dtype``. None picks the default compute dtype of
            this machine: bf16 when CUDA is present (fp16 on GPUs without bf16), fp32 on CPU.

    Raises:
        ModelFileError: the folder is missing, unsupported, not safetensors, or broken.
    """
    import transformers

    folder = Path(folder)
    config = _read_config(folder, input_name)
    check_hf_folder(folder, input_name)  # before any transformers call: no code from the folder, no prompt
    model_type = detect_family(config)
    if model_type is None:
        raise ModelFileError(
            input_name,
            folder,
            f"model_type {config.get('model_type')!r} is not a supported multimodal LLM",
            f"use one of: {SUPPORTED}",
        )
    family, class_name = FAMILIES[model_type]
    cls = getattr(transformers, class_name, None)
    if cls is None:
        raise ModelFileError(
            input_name,
            folder,
            f"transformers {transformers.__version__} has no {class_name}",
            "upgrade transformers (pip install -U transformers)",
        )
    weights = sorted(folder.glob("*.safetensors"))
    if not weights:
        others = sorted(p.name for p in folder.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt"))
        found = f" (found {', '.join(others)})" if others else ""
        raise ModelFileError(
            input_name,
            folder,
            f"has no .safetensors weights{found}",
            "only safetensors are loaded: download the safetensors version of the model",
        )
    if dtype is None:
        from avatar_cascade.core.runtime import default_device, default_dtype

        dtype = default_dtype(default_device())
    kwargs: dict = {**SAFE_LOAD, "use_safetensors": True, "dtype": dtype}
    from safetensors import SafetensorError

    try:
        if model_type == "qwen2_5_omni":  # full Omni folder: build the thinker alone from its sub-config
            full = transformers.Qwen2_5OmniConfig.from_pretrained(folder, **SAFE_LOAD)
            kwargs["config"] = full.thinker_config
            kwargs["key_mapping"] = {r"^thinker\.": ""}
        model = cls.from_pretrained(folder, **kwargs)
        processor = transformers.AutoProcessor.from_pretrained(folder, **SAFE_LOAD)
    except (OSError, ValueError, KeyError, RuntimeError, TypeError, SafetensorError) as exc:
        raise ModelFileError(
            input_name,
            folder,
            f"could not be loaded as {class_name}: {exc}",
            "check that the folder is complete (weights, tokenizer, processor files) and not corrupted",
        ) from exc
    _check_chat_template(processor, folder, input_name)
    model.eval()
    identity = _identity(folder, family, weights)
    log.info("loaded MLLM %s (%s, %s)", identity, class_name, dtype)
    return MLLM(
        model=model, processor=processor, family=family, identity=identity, accepts_audio=family == "qwen2_5_omni"
    )

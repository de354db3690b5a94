"""Local multimodal LLMs for the Director (Hugging Face folders, safetensors only).

Supported families, detected from ``config.json`` (``model_type`` / ``architectures``):

* ``qwen2_5_vl`` - Qwen2.5-VL (image + text)
* ``qwen2_vl`` - Qwen2-VL (image + text)
* ``qwen3_vl`` / ``qwen3_vl_moe`` - Qwen3-VL (image + text; needs a transformers that has it)
* ``qwen2_5_omni`` / ``qwen2_5_omni_thinker`` - Qwen2.5-Omni: only the *thinker* (the
  part that reads image/audio/text and writes text) is loaded; the talker and the
  vocoder of a full Omni folder are skipped

Nothing is downloaded (``local_files_only=True``) and no repository code is run
(no ``trust_remote_code``). :func:`parse_model_json` / :func:`repair_json` read the
JSON out of a model's reply (prose, code fences and common defects tolerated).
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .errors import ModelFileError

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
class MLLM:
    """A loaded multimodal LLM and its processor.

    Attributes:
        model: the transformers model (for Omni: the thinker only).
        processor: the matching transformers processor (tokenizer + image processor).
        family: one of the FAMILIES values, e.g. "qwen2_5_vl".
        identity: stable id of the weights (family, folder name, hash of config and files).
        accepts_audio: True when the model can also hear audio (Qwen2.5-Omni).
    """

    model: Any
    processor: Any
    family: str
    identity: str
    accepts_audio: bool

    def _greedy(self, max_new_tokens: int) -> Any:
        """The model's generation config made greedy (sampling knobs cleared, so no warnings)."""
        gen = copy.deepcopy(self.model.generation_config)
        gen.do_sample, gen.num_beams, gen.max_new_tokens = False, 1, max_new_tokens
        gen.temperature = gen.top_p = gen.top_k = None
        gen.max_length = None
        return gen

    def generate(
        self,
        messages_text: str,
        image: Any | None = None,
        max_new_tokens: int = 512,
        seed: int = 0,
        system: str | None = None,
    ) -> tuple[str, dict]:
        """Answer one user turn (optional PIL image + text) greedily.

        Runs on whatever device the model is on (place it with ``runtime.use_models``).
        Returns the decoded reply and stats: ``tokens_in``, ``tokens_out``, ``seconds``.
        """
        content: list[dict] = [{"type": "image"}] if image is not None else []
        content.append({"type": "text", "text": messages_text})
        messages = [{"role": "system", "content": [{"type": "text", "text": system}]}] if system else []
        messages.append({"role": "user", "content": content})
        prompt = self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        kwargs: dict = {"text": [prompt], "return_tensors": "pt"}
        if image is not None:
            kwargs["images"] = [image]
        inputs = self.processor(**kwargs)
        device = next(self.model.parameters()).device
        dtype = next(self.model.parameters()).dtype
        inputs = {
            k: (v.to(device, dtype) if torch.is_floating_point(v) else v.to(device))
            for k, v in inputs.items()
            if isinstance(v, torch.Tensor)
        }
        n_in = int(inputs["input_ids"].shape[1])
        t0 = time.perf_counter()
        devices = [device.index or 0] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), torch.inference_mode():
            torch.manual_seed(seed)
            out = self.model.generate(**inputs, generation_config=self._greedy(max_new_tokens))
        new = out[:, n_in:]
        text = self.processor.batch_decode(new, skip_special_tokens=True)[0]
        stats = {"tokens_in": n_in, "tokens_out": int(new.shape[1]), "seconds": time.perf_counter() - t0}
        log.debug("mllm %s: %d tokens in, %d out, %.2f s", self.identity, n_in, stats["tokens_out"], stats["seconds"])
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


def _identity(folder: Path, family: str, weights: list[Path]) -> str:
    h = hashlib.sha256((folder / "config.json").read_bytes())
    for w in weights:
        h.update(f"{w.name}:{w.stat().st_size}".encode())
    return f"{family}/{folder.name}@{h.hexdigest()[:12]}"


def load_mllm(folder: Path, input_name: str = "mllm_name", dtype: torch.dtype | None = None) -> MLLM:
    """Load a supported multimodal LLM from a local Hugging Face folder (on CPU).

    Args:
        folder: the model folder (config.json, *.safetensors, tokenizer and processor files).
        input_name: the node input named in error messages.
        dtype: weights dtype; None keeps the checkpoint's own dtype.

    Raises:
        ModelFileError: the folder is missing, unsupported, not safetensors, or broken.
    """
    import transformers

    folder = Path(folder)
    config = _read_config(folder, input_name)
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
    kwargs: dict = {"local_files_only": True, "use_safetensors": True, "dtype": dtype if dtype is not None else "auto"}
    if model_type == "qwen2_5_omni":  # full Omni folder: build the thinker alone from its sub-config
        full = transformers.Qwen2_5OmniConfig.from_pretrained(folder, local_files_only=True)
        kwargs["config"] = full.thinker_config
        kwargs["key_mapping"] = {r"^thinker\.": ""}
    from safetensors import SafetensorError

    try:
        model = cls.from_pretrained(folder, **kwargs)
        processor = transformers.AutoProcessor.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError, KeyError, RuntimeError, TypeError, SafetensorError) as exc:
        raise ModelFileError(
            input_name,
            folder,
            f"could not be loaded as {class_name}: {exc}",
            "check that the folder is complete (weights, tokenizer, processor files) and not corrupted",
        ) from exc
    model.eval()
    identity = _identity(folder, family, weights)
    log.info("loaded MLLM %s (%s)", identity, class_name)
    return MLLM(
        model=model, processor=processor, family=family, identity=identity, accepts_audio=family == "qwen2_5_omni"
    )


# -- JSON from model replies --------------------------------------------------------------

_BARE = re.compile(r"[^\s{}\[\]:,\"']+")
_NUMBER = re.compile(r"-?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_LITERALS = {"true": "true", "false": "false", "null": "null", "True": "true", "False": "false", "None": "null"}


def _number(word: str) -> str:
    try:
        return str(int(word))
    except ValueError:
        return json.dumps(float(word))


def _read_string(text: str, i: int) -> tuple[str, int]:
    """Read a '...' or "..." string starting at ``i``; returns (decoded, next index). Closes it at EOF."""
    quote, out, i = text[i], [], i + 1
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            try:
                out.append(
                    json.loads(f'"\\{text[i + 1]}"') if text[i + 1] != "u" else chr(int(text[i + 2 : i + 6], 16))
                )
                i += 6 if text[i + 1] == "u" else 2
            except ValueError:
                out.append(text[i + 1])
                i += 2
            continue
        if c == quote:
            return "".join(out), i + 1
        out.append(c)
        i += 1
    return "".join(out), i


def repair_json(text: str) -> str:
    """Fix what small models get wrong in JSON; returns text that ``json.loads`` accepts.

    Handles single-quoted strings, unquoted keys and bare-word values, Python
    literals (True/None), trailing and missing commas, ``//`` comments, stray or
    mismatched closers, and truncation (open strings, dangling keys and open
    brackets are closed).
    """
    out: list[str] = []
    stack: list[list] = []  # [bracket, expecting] with expecting in key/colon/value/comma
    i, done = 0, False

    def value_start() -> None:
        if stack and stack[-1][1] == "comma":
            out.append(",")
            stack[-1][1] = "key" if stack[-1][0] == "{" else "value"
        if stack and stack[-1][1] == "colon":
            out.append(":")

    def value_end() -> None:
        nonlocal done
        if stack:
            stack[-1][1] = "comma"
        else:
            done = True

    while i < len(text) and not done:
        c = text[i]
        if c.isspace():
            i += 1
        elif text.startswith("//", i):
            j = text.find("\n", i)
            i = len(text) if j < 0 else j
        elif c in "{[":
            value_start()
            out.append(c)
            stack.append([c, "key" if c == "{" else "value"])
            i += 1
        elif c in "}]":
            want = "{" if c == "}" else "["
            if any(b == want for b, _ in stack):
                while stack:
                    b, exp = stack.pop()
                    if out[-1] == ",":
                        out.pop()
                    if exp in ("colon", "value") and b == "{" and out[-1] != "{":
                        out.append(":null" if exp == "colon" else "null")
                    out.append("}" if b == "{" else "]")
                    if b == want:
                        break
                value_end()
            i += 1
        elif c == ",":
            if stack and stack[-1][1] == "comma":
                out.append(",")
                stack[-1][1] = "key" if stack[-1][0] == "{" else "value"
            i += 1
        elif c == ":":
            if stack and stack[-1][1] == "colon":
                out.append(":")
                stack[-1][1] = "value"
            i += 1
        else:
            if c in "\"'":
                s, i = _read_string(text, i)
                token = json.dumps(s, ensure_ascii=False)
            else:
                m = _BARE.match(text, i)
                word, i = m.group(0), m.end()
                is_key = bool(stack) and stack[-1][0] == "{" and stack[-1][1] in ("key", "comma")
                if is_key:
                    token = json.dumps(word)
                else:
                    token = _LITERALS.get(word) or (_number(word) if _NUMBER.fullmatch(word) else json.dumps(word))
            if stack and stack[-1][0] == "{" and stack[-1][1] in ("key", "comma"):
                if stack[-1][1] == "comma":
                    out.append(",")
                out.append(token)
                stack[-1][1] = "colon"
            else:
                value_start()
                out.append(token)
                if stack and stack[-1][1] == "colon":
                    stack[-1][1] = "value"
                value_end()
    while stack:  # truncated: close what is open
        b, exp = stack.pop()
        if out[-1] == ",":
            out.pop()
        if b == "{" and exp in ("colon", "value") and out[-1] != "{":
            out.append(":null" if exp == "colon" else "null")
        out.append("}" if b == "{" else "]")
        if stack:
            stack[-1][1] = "comma"
    return "".join(out)


def _extract(text: str) -> str | None:
    """The first JSON-looking block: inside a code fence if there is one, balanced if possible."""
    fence = re.search(r"```(?:json|JSON)?\s*\n?(.*?)(?:```|$)", text, re.S)
    if fence and re.search(r"[{\[]", fence.group(1)):
        text = fence.group(1)
    starts = [p for p in (text.find("{"), text.find("[")) if p >= 0]
    if not starts:
        return None
    start = min(starts)
    depth, in_str, esc = 0, False, False
    for j in range(start, len(text)):
        c = text[j]
        if in_str:
            if esc:
                esc = False
            elif c == "\\":
                esc = True
            elif c == '"':
                in_str = False
        elif c == '"':
            in_str = True
        elif c in "{[":
            depth += 1
        elif c in "}]":
            depth -= 1
            if depth == 0:
                return text[start : j + 1]
    return text[start:]


def parse_model_json(text: str) -> object:
    """Decode the JSON in a model reply (prose, code fences and common defects tolerated).

    Raises:
        ValueError: naming what is wrong (no JSON found, or where decoding failed).
    """
    block = _extract(text)
    if block is None:
        raise ValueError("the reply contains no JSON object")
    try:
        return json.loads(block)
    except json.JSONDecodeError:
        pass
    fixed = repair_json(block)
    try:
        return json.loads(fixed)
    except json.JSONDecodeError as exc:
        raise ValueError(f"the JSON is invalid at line {exc.lineno} column {exc.colno}: {exc.msg}") from exc

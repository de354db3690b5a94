"""Model files checked from their headers before the first model runs.

What a loader would only find out after the Director (a truncated download, a VAE chosen as
the DiT, a DiT chosen as a LoRA, a LoRA strength out of range, a Hugging Face folder carrying
code) is checked here from names and safetensors headers alone: no tensor is read.
"""

from __future__ import annotations

from pathlib import Path

from avatar_cascade.core.cache import tensor_file_ok
from avatar_cascade.core.errors import InputError, ModelFileError
from avatar_cascade.models.files import check_kind, read_safetensors_header
from avatar_cascade.models.hf_folder import check_hf_folder

# role -> the kind its file must be (models.files.checkpoint_kind)
ROLE_KINDS = {
    "dit": "dit",
    "vae": "vae",
    "text_encoder": "text_encoder",
    "audio_encoder": "audio_encoder",
    "clip_vision": "clip_vision",
    "audio_adapter": "audio_adapter",
    "lora": "lora",
    "mllm": "llm",
}


def check_model_file(path: str | Path, kind: str, input_name: str) -> None:
    """A single-file checkpoint of ``kind`` (see :data:`ROLE_KINDS`), complete; a folder is checked for code."""
    path = Path(path)
    if path.is_dir():
        check_hf_folder(path, input_name)
        if kind == "llm":
            check_chat_template_file(path, input_name)
        return
    shapes, _ = read_safetensors_header(path, input_name)
    if not tensor_file_ok(path):
        raise ModelFileError(
            input_name, path, "the file is shorter than its header says (truncated download)", "re-download the file"
        )
    check_kind(shapes, kind, input_name, path)


def check_chat_template_file(folder: Path, input_name: str) -> None:
    """An MLLM folder ships its chat template (the Director talks to the model through it)."""
    import json

    if any((folder / n).is_file() for n in ("chat_template.jinja", "chat_template.json")):
        return
    for name in ("tokenizer_config.json", "processor_config.json"):
        try:
            if json.loads((folder / name).read_text(encoding="utf-8")).get("chat_template"):
                return
        except (OSError, ValueError, AttributeError):
            continue
    raise ModelFileError(
        input_name,
        folder,
        "has no chat template (chat_template.jinja, chat_template.json or 'chat_template' in tokenizer_config.json)",
        "download the whole Hugging Face folder of an instruct / chat release (it ships the chat template)",
    )


def check_lora_strength(strength: float, input_name: str, name: str) -> None:
    """A LoRA strength the LoRA stack accepts (-10..10)."""
    if not isinstance(strength, (int, float)) or strength != strength or not -10.0 <= strength <= 10.0:
        raise InputError(input_name, f"{name}:{strength}", "the strength must be between -10 and 10", "use 0.5-1.0")


def check_models(files: dict[str, tuple[Path | None, str]], loras: list[tuple[Path, float]]) -> None:
    """Check every chosen model file (``files``: input name -> (path, role)) and LoRA before loading any."""
    for input_name, entry in files.items():
        if entry is None or entry[0] is None:
            continue
        path, role = entry
        check_model_file(path, ROLE_KINDS[role], input_name)
    for path, strength in loras:
        check_lora_strength(strength, "--lora", Path(path).name)
        check_model_file(path, "lora", "--lora")

"""Hugging Face model folders are checked before transformers sees them: no third-party code, ever.

A folder downloaded from a stranger can carry its own Python: an ``auto_map`` in any of its
json configs (``config.json``, ``processor_config.json``, ``tokenizer_config.json``,
``preprocessor_config.json`` ...) makes transformers import a ``*.py`` file from the folder
(after an interactive "Do you wish to run the custom code? [y/N]" that a ``y`` on standard input
answers). :func:`check_hf_folder` refuses such a folder up front, with an error naming the folder
and the file, before any transformers call: nothing is asked, nothing is imported. Every
transformers load in this pack also passes ``trust_remote_code=False`` and ``local_files_only=True``
(:data:`SAFE_LOAD`).
"""

from __future__ import annotations

import json
from pathlib import Path

from avatar_cascade.core.errors import ModelFileError

# The keyword arguments of every transformers ``from_pretrained`` call in the pack.
SAFE_LOAD = {"local_files_only": True, "trust_remote_code": False}

# Files that are code (or compiled code) and have no business in a weights folder.
_CODE_SUFFIXES = (".py", ".pyc", ".pyo", ".pyd", ".so", ".dll", ".dylib")
# Config keys that make transformers / diffusers import code from the folder or the hub.
_CODE_KEYS = ("auto_map", "custom_pipelines", "custom_pipeline")
# Config keys that name a class transformers looks up by name (it must be one of its own).
_CLASS_KEYS = (
    "processor_class",
    "tokenizer_class",
    "image_processor_type",
    "feature_extractor_type",
    "video_processor_type",
    "architectures",
)
_MAX_JSON_BYTES = 64 * 2**20  # tokenizer.json of large vocabularies is ~10 MB
_FIX = "use the official release of the model (no custom code); this pack never runs code from a model folder"


def _refuse(input_name: str, folder: Path, file: Path, problem: str) -> ModelFileError:
    rel = file.relative_to(folder) if file.is_relative_to(folder) else file
    return ModelFileError(input_name, folder, f"{rel}: {problem}; refused before loading anything", _FIX)


def _walk(obj, path: str = ""):
    """``(dotted key path, key, value)`` of every dict entry in a parsed json document."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            here = f"{path}.{k}" if path else str(k)
            yield here, k, v
            yield from _walk(v, here)
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _walk(v, f"{path}[{i}]")


def _known_class(name) -> bool:
    import transformers

    return isinstance(name, str) and name.isidentifier() and getattr(transformers, name, None) is not None


def _check_json(folder: Path, file: Path, input_name: str) -> None:
    if file.stat().st_size > _MAX_JSON_BYTES:
        return  # a huge vocabulary; class names and auto_map live in the small configs
    try:
        doc = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return  # unreadable json: transformers reports it (no code can come from a file it cannot parse)
    for where, key, value in _walk(doc):
        if key in _CODE_KEYS:
            raise _refuse(input_name, folder, file, f"'{where}' asks to run code shipped with the model")
        if key in _CLASS_KEYS and value is not None:
            names = value if isinstance(value, list) else [value]
            bad = [n for n in names if not _known_class(n)]
            if bad:
                raise _refuse(
                    input_name, folder, file, f"'{where}' names a class transformers does not have: {bad[0]!r}"
                )


def check_hf_folder(folder: str | Path, input_name: str) -> Path:
    """Refuse a Hugging Face folder that carries code or names classes transformers does not have.

    Checked (all files below ``folder``, symlinked files included): no ``*.py`` (or compiled
    code) file; no ``auto_map`` / ``custom_pipeline`` key in any json file; every
    ``processor_class``, ``tokenizer_class``, ``*_processor_type``, ``feature_extractor_type``
    and ``architectures`` entry a class of the installed transformers.

    Raises:
        ModelFileError: naming the folder, the offending file and the fix.
    """
    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    for p in files:
        if p.suffix.lower() in _CODE_SUFFIXES:
            raise _refuse(input_name, folder, p, "a model folder must not hold code files")
    for p in files:
        if p.suffix.lower() == ".json":
            _check_json(folder, p, input_name)
    return folder

"""Input-file checks and the bundled sample inputs."""

from __future__ import annotations

import os
from pathlib import Path

from avatar_cascade.core.errors import InputError

ASSETS_DIR = Path(__file__).resolve().parent.parent / "assets"


def sample_image_path() -> Path:
    """The bundled sample portrait (256x256 PNG)."""
    return ASSETS_DIR / "sample_portrait.png"


def sample_audio_path() -> Path:
    """The bundled sample speech track (about 4 s, 16 kHz mono FLAC)."""
    return ASSETS_DIR / "sample_speech.flac"


def check_file(path: str | os.PathLike, input_name: str, kind: str) -> Path:
    """Refuse a missing path or a zero-byte file with an :class:`InputError`."""
    p = Path(path)
    if p.is_dir():
        raise InputError(input_name, str(path), "is a folder, not a file", f"give the path of the {kind} file itself")
    if not p.is_file():
        raise InputError(input_name, str(path), "file not found", f"check the path, or pick an existing {kind} file")
    try:
        with open(p, "rb"):
            pass
    except PermissionError:
        raise InputError(
            input_name, str(path), "cannot be read (permission denied)", "make the file readable (chmod +r) or copy it"
        ) from None
    if p.stat().st_size == 0:
        raise InputError(input_name, str(path), "the file is empty (0 bytes)", f"re-export or re-copy the {kind} file")
    return p

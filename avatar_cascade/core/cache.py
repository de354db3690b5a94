"""On-disk cache of finished work: content keys and atomic writes.

A finished artefact is written to a temporary file in the same folder and
renamed into place, so a killed process never leaves a half-written file that
looks finished. Keys hash everything that determines the result.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from avatar_cascade.core.locks import hold
from avatar_cascade.core.paths import disk_error


def content_key(parts: dict) -> str:
    """A short stable hash of ``parts``.

    Accepts JSON-like values, tensors and numpy arrays (hashed by shape, dtype
    and bytes), dataclasses (by their fields) and bytes; anything else is hashed
    by ``str()``, which must then describe it completely.
    """
    h = hashlib.sha256()

    def feed(obj) -> None:
        if isinstance(obj, np.ndarray):
            obj = torch.from_numpy(np.ascontiguousarray(obj))
        if isinstance(obj, torch.Tensor):
            t = obj.detach().cpu().contiguous()
            h.update(f"T{tuple(t.shape)}{t.dtype}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            h.update(f"D{type(obj).__name__}".encode())
            feed({f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)})
        elif isinstance(obj, (bytes, bytearray)):
            h.update(b"B%d:" % len(obj))
            h.update(bytes(obj))
        elif isinstance(obj, dict):
            h.update(b"{")
            for k in sorted(obj, key=str):
                h.update(json.dumps(str(k)).encode())
                feed(obj[k])
            h.update(b"}")
        elif isinstance(obj, (list, tuple)):
            h.update(b"[")
            for v in obj:
                feed(v)
            h.update(b"]")
        else:
            h.update(json.dumps(obj, sort_keys=True, default=str).encode())

    feed(parts)
    return h.hexdigest()[:24]


def atomic_write_bytes(path: Path, data: bytes, fsync: bool = False) -> None:
    """Write a file atomically: a hidden temp file in the same folder (locked while written, so
    :func:`~avatar_cascade.core.locks.sweep_stale` never takes a live one), then a rename. A write
    error (full disk, read-only folder) is one :class:`InputError` naming the file; nothing is left."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise disk_error(exc, "work folder", path) from exc
    hold(fd)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a finished file is a normal file
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise disk_error(exc, "work folder", path) from exc
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    global _UMASK
    if _UMASK is None:
        _UMASK = os.umask(0)
        os.umask(_UMASK)
    return _UMASK


_UMASK: int | None = None


def atomic_write_text(path: Path, text: str) -> None:
    """Write a text file atomically (temp file + rename), see :func:`atomic_write_bytes`."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Write a safetensors file atomically (temp file + fsync + rename)."""
    from safetensors.torch import save

    data = save({k: v.contiguous() for k, v in tensors.items()}, metadata=metadata)
    atomic_write_bytes(path, data, fsync=True)


def load_tensors(path: Path) -> dict[str, torch.Tensor] | None:
    """Load a cached safetensors file; None if missing or unreadable (then recompute)."""
    from safetensors.torch import load_file

    if not path.is_file():
        return None
    try:
        return load_file(str(path))
    except Exception:  # a damaged cache entry is recomputed, never trusted
        return None


def tensor_file_ok(
    path: Path, required: tuple[str, ...] = (), shapes: dict[str, tuple[int, ...]] | None = None
) -> bool:
    """Cheap completeness check of a safetensors file: header parses, ``required`` tensors
    are listed, each tensor named in ``shapes`` has that shape (e.g. a clip's frame count) and the
    file is exactly as long as the header says (no data is read)."""
    import struct

    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n > min(size, 100_000_000):
                return False
            header = json.loads(f.read(n))
        ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
    except (OSError, ValueError, KeyError, TypeError, struct.error):
        return False
    try:
        shaped = all(tuple(header[k]["shape"]) == tuple(v) for k, v in (shapes or {}).items())
    except (KeyError, TypeError):
        return False
    return shaped and all(k in header for k in required) and size == 8 + n + max(ends, default=0)


class CacheIdentified(Protocol):
    """Anything a cache key can name: every model handle (see ``avatar_cascade.models.handle``)."""

    def cache_identity(self) -> str:
        """Id of everything in the object that changes what it computes."""
        ...


def model_identity(handle: CacheIdentified | None) -> str | None:
    """Identity of a loaded model for cache keys (``handle.cache_identity()``; None for no model)."""
    return None if handle is None else handle.cache_identity()

"""Where a run may write: output file and work folder checked before any work.

Nothing the artist gave as an input (image, audio, model files and folders) may be overwritten,
and a path problem that would only show after a long render (an existing folder as the output,
a read-only or missing drive, a work folder that is a file) is one clear :class:`InputError`
up front. "The same file" is decided by the resolved path (symlinks and ``..`` followed) *and* by
device + inode (hard links, bind mounts, case-insensitive file systems).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from avatar_cascade.core.errors import InputError


def _nearest_existing(path: Path) -> Path:
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _check_writable_place(path: Path, input_name: str, what: str) -> None:
    """``path`` (absent or present) can be created / written: every existing ancestor is a folder we may write."""
    base = _nearest_existing(path if path.is_dir() else path.parent)
    if base.exists() and not base.is_dir():
        raise InputError(
            input_name, str(path), f"{base} is a file, so no {what} can be made below it", "choose another folder"
        )
    if not os.access(base, os.W_OK | os.X_OK):
        raise InputError(
            input_name,
            str(path),
            f"the folder {base} is read-only for this user",
            f"write the {what} somewhere writable",
        )


def check_output_file(path: Path, input_name: str, suffixes: Iterable[str]) -> Path:
    """An output file path that can be written: a known extension, not a folder, in a writable place."""
    path = Path(path)
    allowed = sorted(set(suffixes))
    if path.is_dir():
        raise InputError(input_name, str(path), "is an existing folder", "give a file name, e.g. OUT/video.mp4")
    if path.suffix.lower() not in allowed:
        raise InputError(
            input_name,
            str(path),
            f"unknown extension '{path.suffix or 'none'}'",
            f"end the name in {', '.join(allowed)}",
        )
    if path.exists() and not os.access(path, os.W_OK):
        raise InputError(input_name, str(path), "the file exists and is read-only", "choose another name")
    _check_writable_place(path, input_name, "output file")
    return path


def check_work_folder(path: Path, input_name: str) -> Path:
    """A work folder that is (or can become) a writable folder."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(input_name, str(path), "is a file, not a folder", "give a folder (it is created if missing)")
    _check_writable_place(path, input_name, "work folder")
    return path


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _same_file(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    ia, ib = _identity(a), _identity(b)
    return ia is not None and ia == ib


def _inside(child: Path, folder: Path) -> bool:
    return child.resolve().is_relative_to(folder.resolve())


def check_not_inputs(
    out: Mapping[str, Path] | None = None,
    folders: Mapping[str, Path] | None = None,
    protected: Mapping[str, Path] | None = None,
) -> None:
    """Refuse output files (``out``: input name -> path) and work folders (``folders``) that would touch a
    protected input (``protected``: input name -> file or folder).

    An output file may not be a protected file (also through a symlink, ``..`` or a hard link) nor lie
    inside a protected folder; a work folder may not be a protected path, lie inside a protected folder,
    or contain a protected file or folder.
    """
    protected = {k: Path(v) for k, v in (protected or {}).items() if v is not None}
    for name, target in (out or {}).items():
        target = Path(target)
        for pname, p in protected.items():
            if (p.is_dir() and _inside(target, p)) or (not p.is_dir() and _same_file(target, p)):
                raise InputError(
                    name,
                    str(target),
                    f"would overwrite the {pname} input {p}" if not p.is_dir() else f"lies inside the {pname} {p}",
                    "write the output to a new file of its own",
                )
    for name, target in (folders or {}).items():
        target = Path(target)
        for pname, p in protected.items():
            if _same_file(target, p) or _inside(target, p) or _inside(p, target):
                raise InputError(
                    name,
                    str(target),
                    f"overlaps the {pname} input {p} (work folders are written and pruned)",
                    "use a folder of its own for the work files (default: the output name + '_work')",
                )


def is_disk_full(exc: BaseException) -> bool:
    """True for "no space left on device" / "quota exceeded"."""
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))


def disk_error(exc: OSError, input_name: str, path: Path | str) -> InputError:
    """A write failure of the work folder or an output as one line: full disk, read-only, or other."""
    where = str(getattr(exc, "filename", None) or path)
    if is_disk_full(exc):
        return InputError(
            input_name,
            str(path),
            f"the disk is full (no space left writing {where})",
            "free some disk space, or use a folder on another drive",
        )
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return InputError(
            input_name, str(path), f"cannot write {where} ({exc.strerror})", "use a folder you can write to"
        )
    return InputError(
        input_name, str(path), f"writing {where} failed ({exc.strerror or exc})", "check the drive and run again"
    )

"""Advisory file locks for shared work folders: a run's lock, leases on stores, stale-file sweeps.

* :class:`FolderLock` - one CLI run per work folder; a second one is told the folder is busy
  (it would otherwise share the folder's unkeyed files: ``timeline.json``, ``keyframes/`` ...).
* :class:`Lease` - a shared lock on a cache store (a blueprint store) for as long as a run uses
  it; :func:`try_exclusive` lets pruning delete only stores nobody holds.
* :func:`sweep_stale` - removes hidden partial / temporary files a killed process left behind,
  skipping any a live writer still holds (writers lock them with :func:`hold`).

The locks are ``flock`` locks: released by the kernel when the process dies (SIGKILL included), so
a killed run never leaves a folder locked. Where ``fcntl`` is missing (Windows) they are no-ops.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from avatar_cascade.core.errors import InputError

log = logging.getLogger(__name__)

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

LOCK_NAME = ".avatar_cascade.lock"
LEASE_NAME = ".lease"


def _flock(fd: int, shared: bool, wait: bool) -> bool:
    if fcntl is None:  # pragma: no cover - Windows
        return True
    flags = (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if wait else fcntl.LOCK_NB)
    try:
        fcntl.flock(fd, flags)
    except BlockingIOError:
        return False
    return True


def _open_locked(path: Path, shared: bool, wait: bool) -> int | None:
    """An fd of ``path`` (created if missing) locked as asked, or None when another process holds it.
    Retries when the file was deleted or replaced between open and lock (a pruner removed it)."""
    for _ in range(100):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        if not _flock(fd, shared, wait):
            os.close(fd)
            return None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)
    raise OSError(f"could not lock {path}")


class FolderLock:
    """Exclusive lock of a work folder for one run (context manager); busy -> :class:`InputError`."""

    def __init__(self, folder: Path, input_name: str = "--workdir") -> None:
        self.folder, self.input_name, self._fd = Path(folder), input_name, None

    def __enter__(self) -> FolderLock:
        self._fd = _open_locked(self.folder / LOCK_NAME, shared=False, wait=False)
        if self._fd is None:
            raise InputError(
                self.input_name,
                str(self.folder),
                "another run is using this work folder right now",
                "wait for it to finish, or give this run a --workdir of its own",
            )
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class Lease:
    """A shared lock on ``folder/.lease`` while a run uses the store in ``folder`` (``release()`` or GC ends it)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self._fd = _open_locked(self.folder / LEASE_NAME, shared=True, wait=True)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self) -> None:
        self.release()


def try_exclusive(folder: Path) -> int | None:
    """An exclusive lock on ``folder``'s lease when nobody holds a :class:`Lease` on it, else None.
    Hold it (the fd) while deleting the folder, then ``os.close`` it."""
    if not (Path(folder) / LEASE_NAME).exists():
        os.makedirs(folder, exist_ok=True)
    return _open_locked(Path(folder) / LEASE_NAME, shared=False, wait=False)


def hold(fd: int) -> None:
    """Mark an open partial / temporary file as being written (an exclusive lock on its fd)."""
    _flock(fd, shared=False, wait=True)


def sweep_stale(folder: Path, patterns: tuple[str, ...], recursive: bool = False, min_age_s: float = 0.0) -> int:
    """Delete files matching ``patterns`` below ``folder`` that no live writer holds (and older than
    ``min_age_s``); returns how many were removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    removed, now = 0, time.time()
    for pattern in patterns:
        for p in folder.rglob(pattern) if recursive else folder.glob(pattern):
            try:
                if not p.is_file() or now - p.stat().st_mtime < min_age_s:
                    continue
                fd = os.open(p, os.O_RDONLY)
            except OSError:
                continue
            try:
                if _flock(fd, shared=False, wait=False):
                    p.unlink(missing_ok=True)
                    removed += 1
            finally:
                os.close(fd)
    if removed:
        log.info("removed %d stale partial file(s) in %s", removed, folder)
    return removed

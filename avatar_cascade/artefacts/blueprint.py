"""The blueprint on disk: one safetensors chunk per window, and a lazy view of it.

A blueprint of ten minutes at 320x192 and 8 fps is 4,800 frames (about 0.9 GB
of uint8): it never sits in RAM. The Blueprint DiT Sampler writes each window's
new frames to ``<root>/<key>/window_NNNNN.safetensors`` as soon as they are
decoded (atomically: a killed run never leaves a half chunk that looks
finished), plus the window's raw last ``overlap`` frames as ``tail`` so an
interrupted run can resume from the last finished window. ``index.json`` holds
the plan (frame rate, size, chunk starts) and says when the store is complete.

:class:`Blueprint` (the ``AVATAR_BLUEPRINT`` artefact) reads frames on demand
and keeps at most one chunk in memory. ``blueprint.frames`` is an array-like
view: ``frames(lo, hi)`` or ``frames[lo:hi]`` give ``[hi-lo, h, w, 3]`` uint8.
Disk cost: ``width * height * 3`` bytes per blueprint frame.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import weakref
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import torch

from avatar_cascade.core.cache import atomic_save_tensors, atomic_write_text, load_tensors
from avatar_cascade.core.errors import InputError
from avatar_cascade.core.locks import Lease, try_exclusive

log = logging.getLogger(__name__)

STORE_FORMAT = "avatar_blueprint_store/1"
BLUEPRINT_FORMAT = "avatar_blueprint/2"
INDEX = "index.json"
MATERIALISE_WARN_BYTES = 256 * 2**20


def _write_json_atomic(path: Path, data: dict) -> None:
    atomic_write_text(path, json.dumps(data, indent=1))


def chunk_name(window: int) -> str:
    return f"window_{window:05d}.safetensors"


class BlueprintStore:
    """Writer side of a blueprint store folder (``<root>/<key>``).

    ``plan`` lists ``(start, count)`` of the output frames each window's chunk
    holds; chunks tile ``[0, num_frames)`` in order.
    """

    def __init__(self, folder: Path, meta: dict, lease: Lease | None = None) -> None:
        self.folder = Path(folder)
        self.meta = meta
        self.lease = lease  # held while this store is written, so pruning by another run skips it

    @classmethod
    def open(
        cls, folder: Path, key: str, fps: Fraction, width: int, height: int, plan: list[tuple[int, int]], extra: dict
    ) -> BlueprintStore:
        """Open (resume) or create the store for ``key``; a store of another plan is started afresh."""
        folder = Path(folder)
        lease = Lease(folder)
        meta = {
            "format": STORE_FORMAT,
            "key": key,
            "fps": f"{fps.numerator}/{fps.denominator}",
            "width": width,
            "height": height,
            "num_frames": sum(c for _, c in plan),
            "chunks": [{"window": w, "start": s, "count": c, "file": chunk_name(w)} for w, (s, c) in enumerate(plan)],
            "complete": False,
            **extra,
        }
        old = read_index(folder)
        if old is not None and (old.get("key") != key or old.get("chunks") != meta["chunks"]):
            for p in folder.glob("window_*.safetensors"):
                p.unlink()
        elif old is not None:
            meta["complete"] = bool(old.get("complete"))
        _write_json_atomic(folder / INDEX, meta)
        return cls(folder, meta, lease)

    def load_chunk(self, window: int) -> dict[str, torch.Tensor] | None:
        """A finished chunk of this store (``frames`` and, except the last, ``tail``), or None."""
        path = self.folder / chunk_name(window)
        data = load_tensors(path)
        if data is None or "frames" not in data:
            return None
        spec = self.meta["chunks"][window]
        if data["frames"].shape[0] != spec["count"]:
            return None
        return data

    def write_chunk(self, window: int, frames: torch.Tensor, tail: torch.Tensor | None) -> None:
        spec = self.meta["chunks"][window]
        if frames.shape[0] != spec["count"] or frames.dtype != torch.uint8:
            raise ValueError(f"window {window}: expected {spec['count']} uint8 frames, got {tuple(frames.shape)}")
        tensors = {"frames": frames}
        if tail is not None:
            tensors["tail"] = tail
        atomic_save_tensors(self.folder / chunk_name(window), tensors, {"key": self.meta["key"], "window": str(window)})

    def mark_complete(self) -> None:
        self.meta["complete"] = True
        _write_json_atomic(self.folder / INDEX, self.meta)


def read_index(folder: Path) -> dict | None:
    """The index of a store folder, or None when absent / unreadable / of another format."""
    try:
        meta = json.loads((Path(folder) / INDEX).read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and meta.get("format") == STORE_FORMAT else None


def prune_stores(root: Path, keep: int, current: Path) -> None:
    """Delete all but the ``keep`` most recently written stores under ``root`` (never ``current``, never
    one a live run holds a lease on: a Blueprint or a store being written)."""
    stores = [p for p in Path(root).iterdir() if p.is_dir() and read_index(p) is not None]
    stores.sort(key=lambda p: (p / INDEX).stat().st_mtime, reverse=True)
    others = [p for p in stores if p.resolve() != Path(current).resolve()]
    for p in others[max(0, keep - 1) :]:
        fd = try_exclusive(p)
        if fd is None:
            log.info("keeping blueprint store %s: another run is using it", p)
            continue
        try:
            log.info("removing old blueprint store %s", p)
            shutil.rmtree(p, ignore_errors=True)
        finally:
            os.close(fd)


class FrameView:
    """Array-like, lazy view of a blueprint's frames (``[N, h, w, 3]`` uint8)."""

    def __init__(self, blueprint: Blueprint) -> None:
        self._bp = blueprint

    def __call__(self, lo: int = 0, hi: int | None = None) -> torch.Tensor:
        return self._bp.read(lo, hi)

    def __len__(self) -> int:
        return len(self._bp)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self._bp), self._bp.height, self._bp.width, 3)

    def __getitem__(self, idx: int | slice) -> torch.Tensor:
        if isinstance(idx, slice):
            lo, hi, step = idx.indices(len(self._bp))
            if step != 1:
                raise IndexError("blueprint frames support contiguous slices only")
            return self._bp.read(lo, max(lo, hi))
        i = int(idx) + (len(self._bp) if int(idx) < 0 else 0)
        return self._bp.frame(i)

    def __array__(self, dtype=None, copy=None):
        """Every frame at once (compatibility; prefer ``frames(lo, hi)`` or ``Blueprint.write_video``)."""
        n_bytes = len(self._bp) * self._bp.height * self._bp.width * 3
        if n_bytes > MATERIALISE_WARN_BYTES:
            log.warning("loading the whole blueprint (%.0f MB) into memory", n_bytes / 2**20)
        arr = self._bp.read(0, None).numpy()
        return arr if dtype is None else arr.astype(dtype)


class Blueprint:
    """The ``AVATAR_BLUEPRINT`` artefact: a lazy view of a complete blueprint store.

    Frame ``i`` shows time ``i / fps`` seconds. Attributes: ``folder`` (the
    store), ``key`` (content key of everything that determined it),
    ``window_starts`` (first frame of every rendered window).
    """

    def __init__(
        self, folder: Path, meta: dict | None = None, temporary: bool = False, lease: Lease | None = None
    ) -> None:
        self.folder = Path(folder)
        self._lease = lease if lease is not None else Lease(self.folder)  # pruning skips a store in use
        meta = meta if meta is not None else read_index(self.folder)
        if meta is None or not meta.get("complete"):
            raise InputError(
                "blueprint",
                str(folder),
                "is not a finished blueprint store (missing, removed or interrupted)",
                "run the Blueprint Sampler again",
            )
        self.meta = meta
        self._starts = [c["start"] for c in meta["chunks"]]
        self._cached: tuple[int, torch.Tensor] | None = None
        self.reused = False  # set by the sampler when it returned a finished store instead of rendering
        if temporary:
            weakref.finalize(self, shutil.rmtree, str(self.folder), True)

    def release(self) -> None:
        """End this view's lease on its store (pruning by a later run may then remove it)."""
        self._lease.release()

    # -- description -----------------------------------------------------
    @property
    def key(self) -> str:
        return self.meta["key"]

    @property
    def fps(self) -> Fraction:
        return Fraction(self.meta["fps"])

    @property
    def fps_num(self) -> int:
        return self.fps.numerator

    @property
    def fps_den(self) -> int:
        return self.fps.denominator

    @property
    def width(self) -> int:
        return int(self.meta["width"])

    @property
    def height(self) -> int:
        return int(self.meta["height"])

    @property
    def window_starts(self) -> list[int]:
        return list(self.meta.get("window_starts", self._starts))

    def __len__(self) -> int:
        return int(self.meta["num_frames"])

    def anchor_depth(self, i: int) -> int | None:
        """DiT generations between the reference image and blueprint frame ``i`` (the store's
        ``anchor_depths`` per chunk), or None when the store does not say (imported frames)."""
        depths = self.meta.get("anchor_depths")
        if depths is None:
            return None
        import bisect

        return int(depths[max(0, bisect.bisect_right(self._starts, i) - 1)])

    @property
    def frames(self) -> FrameView:
        return FrameView(self)

    def index_at(self, seconds: Fraction | float) -> int:
        """Blueprint frame nearest to time ``seconds``."""
        i = round(Fraction(seconds) * self.fps)
        return max(0, min(len(self) - 1, int(i)))

    # -- reading ---------------------------------------------------------
    def _chunk(self, c: int) -> torch.Tensor:
        if self._cached is not None and self._cached[0] == c:
            return self._cached[1]
        spec = self.meta["chunks"][c]
        data = load_tensors(self.folder / spec["file"])
        if data is None or data["frames"].shape[0] != spec["count"]:
            raise InputError(
                "blueprint",
                str(self.folder / spec["file"]),
                "a blueprint chunk is missing or damaged (older blueprints are pruned from the work folder)",
                "run the Blueprint Sampler again: a damaged store is detected and its damaged windows re-rendered",
            )
        self._cached = (c, data["frames"])
        return data["frames"]

    def read(self, lo: int = 0, hi: int | None = None) -> torch.Tensor:
        """Frames ``[lo, hi)`` as ``[hi-lo, h, w, 3]`` uint8 (one chunk in memory at a time)."""
        n = len(self)
        hi = n if hi is None else hi
        if not 0 <= lo <= hi <= n:
            raise IndexError(f"blueprint frames [{lo}, {hi}) out of range [0, {n})")
        import bisect

        parts = []
        pos = lo
        while pos < hi:
            c = bisect.bisect_right(self._starts, pos) - 1
            start = self._starts[c]
            frames = self._chunk(c)
            end = min(hi, start + frames.shape[0])
            parts.append(frames[pos - start : end - start])
            pos = end
        if not parts:
            return torch.empty(0, self.height, self.width, 3, dtype=torch.uint8)
        return parts[0].clone() if len(parts) == 1 else torch.cat(parts)

    def frame(self, i: int) -> torch.Tensor:
        """Frame ``i`` as ``[h, w, 3]`` uint8."""
        return self.read(i, i + 1)[0]

    def iter_chunks(self) -> Iterator[tuple[int, torch.Tensor]]:
        """``(first frame index, frames)`` of every chunk, in order."""
        for c, start in enumerate(self._starts):
            yield start, self._chunk(c)

    def write_video(self, path: Path, crf: int = 18) -> Path:
        """Stream the blueprint into a video file (e.g. ``blueprint.mp4``), chunk by chunk."""
        from avatar_cascade.media import VideoWriter

        with VideoWriter(path, self.fps, self.width, self.height, crf=crf) as vw:
            for _, frames in self.iter_chunks():
                vw.write(frames)
        return Path(path)

    # -- persistence -----------------------------------------------------
    def save(self, folder: Path) -> None:
        """Write ``folder/blueprint.json``; the store is copied under ``folder/blueprint/`` unless already inside."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        store = self.folder.resolve()
        if not store.is_relative_to(folder.resolve()):
            target = folder / "blueprint" / self.key
            if target.resolve() != store:
                shutil.copytree(store, target, dirs_exist_ok=True)
            store = target.resolve()
        meta = {
            "format": BLUEPRINT_FORMAT,
            "store": store.relative_to(folder.resolve()).as_posix(),
            "key": self.key,
            "fps": self.meta["fps"],
            "frames": len(self),
            "width": self.width,
            "height": self.height,
            "window_starts": self.window_starts,
        }
        _write_json_atomic(folder / "blueprint.json", meta)

    @classmethod
    def load(cls, folder: Path) -> Blueprint:
        """The blueprint saved in ``folder`` by :meth:`save`."""
        folder = Path(folder)
        try:
            meta = json.loads((folder / "blueprint.json").read_text())
            store = (folder / meta["store"]).resolve()
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InputError(
                "blueprint", str(folder), "holds no saved blueprint (blueprint.json)", "render the blueprint again"
            ) from exc
        if not store.is_relative_to(folder.resolve()):
            raise InputError("blueprint", str(store), "points outside its folder", "render the blueprint again")
        return cls(store)

    @classmethod
    def from_frames(
        cls, frames: torch.Tensor, fps: Fraction | int, folder: Path | None = None, key: str = "frames"
    ) -> Blueprint:
        """A blueprint store made from ``[N,h,w,3]`` uint8 frames already in memory (tests, imported drafts)."""
        temporary = folder is None
        folder = Path(tempfile.mkdtemp(prefix="avatar_cascade_blueprint_")) if folder is None else Path(folder)
        fps = Fraction(fps)
        store = BlueprintStore.open(folder, key, fps, frames.shape[2], frames.shape[1], [(0, len(frames))], {})
        store.write_chunk(0, frames.contiguous(), None)
        store.mark_complete()
        return cls(folder, temporary=temporary)

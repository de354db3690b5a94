"""Reusing a finished blueprint store only when it is sound (the sampler's cache check).

A store marked complete can still be damaged: a chunk truncated by a full disk, deleted by hand,
or (before stores were leased) pruned by another run. :func:`reuse_store` checks every chunk's
safetensors header (length and ``frames`` shape, no pixels read) under a lease, and reopens a
damaged store from its first damaged window, so the next render heals it instead of failing on
every run.
"""

from __future__ import annotations

import logging
from pathlib import Path

from avatar_cascade.artefacts.blueprint import INDEX, Blueprint, _write_json_atomic, read_index
from avatar_cascade.core.cache import tensor_file_ok
from avatar_cascade.core.locks import Lease

log = logging.getLogger(__name__)


def damaged_windows(folder: Path, meta: dict) -> list[int]:
    """The windows of a store whose chunk is missing, truncated or of the wrong shape (empty: all sound).

    Reads only the safetensors headers: the file must be as long as its header says and ``frames`` must be
    ``[count, height, width, 3]``."""
    want_hw = (int(meta["height"]), int(meta["width"]), 3)
    return [
        int(spec["window"])
        for spec in meta["chunks"]
        if not tensor_file_ok(Path(folder) / spec["file"], ("frames",), {"frames": (int(spec["count"]), *want_hw)})
    ]


def reuse_store(folder: Path, key: str) -> Blueprint | None:
    """The finished, sound store of ``key`` in ``folder`` (leased), or None.

    A store marked complete whose chunk is damaged (truncated by a full disk, deleted by hand or by an old
    run's pruning) is reopened: the damaged windows are dropped, so the next render renders just those
    (windows are independent: each is generated from the reference) instead of failing on every run."""
    folder = Path(folder)
    if read_index(folder) is None:
        return None
    lease = Lease(folder)
    meta = read_index(folder)  # read again under the lease: a pruner may have removed it meanwhile
    if meta is None or meta.get("key") != key or not meta.get("complete"):
        return None
    bad = damaged_windows(folder, meta)
    if not bad:
        log.info("blueprint: reusing %s (%d frames)", folder, meta["num_frames"])
        bp = Blueprint(folder, meta, lease=lease)
        bp.reused = True
        return bp
    log.warning("blueprint: windows %s of %s are damaged; they are rendered again", bad, folder)
    for spec in meta["chunks"]:
        if int(spec["window"]) in bad:
            (folder / spec["file"]).unlink(missing_ok=True)
    meta["complete"] = False
    _write_json_atomic(folder / INDEX, meta)
    return None

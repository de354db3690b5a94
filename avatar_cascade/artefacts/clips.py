"""artefacts.clips."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from avatar_cascade.core.cache import (
    load_tensors,
)


@dataclass
class ClipRecord:
    """One sub-clip's cache entry: ``num_frames`` rendered frames at ``path`` under ``key``."""

    index: int
    path: Path
    num_frames: int
    key: str
    cached: bool = False
    seed: int = 0
    seed_offset: int = 0
    keyframe_offsets: tuple[int, int] = (0, 0)


@dataclass
class Clips:
    """The ``AVATAR_CLIPS`` artefact: one cached file per finished sub-clip (not one giant tensor).

    ``keyframes`` is the refiner's keyframe tensor ``[S, H, W, 3]`` uint8 (a
    reference, not a copy), used by the stitcher's colour matching.
    """

    records: list[ClipRecord]
    width: int
    height: int
    keyframes: torch.Tensor | None = None

    def frames(self, index: int) -> torch.Tensor:
        """Frames of clip ``index`` as ``[T,H,W,3]`` uint8."""
        data = load_tensors(self.records[index].path)
        if data is None:
            raise FileNotFoundError(f"clip {index} is missing from the clip cache: {self.records[index].path}")
        return data["frames"]

    def iter_frames(self):
        for r in self.records:
            yield self.frames(r.index)

    @property
    def computed(self) -> int:
        return sum(not r.cached for r in self.records)

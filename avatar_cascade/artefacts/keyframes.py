"""artefacts.keyframes."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from avatar_cascade.core.cache import atomic_write_text

KEY_FORMAT = "keyframes/2"


@dataclass
class Keyframes:
    """The ``AVATAR_KEYFRAMES`` artefact.

    Attributes:
        images: ``[S, H, W, 3]`` uint8 keyframes at the refine resolution, one per seam.
        frame_indices: output frame index of every seam.
        source_indices: blueprint frame each keyframe came from (None = given image).
        scores: per-seam dicts: the chosen frame's scores, ``total``, its time, the
            candidate window ``[lo, hi]`` and every candidate's ``[index, total]``.
        weights: score weights used.
        key: content key of everything that determined them ("" when not computed here).
        reused: True when loaded from the work folder instead of computed.
    """

    images: torch.Tensor
    frame_indices: list[int]
    source_indices: list[int | None]
    scores: list[dict] = field(default_factory=list)
    weights: dict = field(default_factory=dict)
    key: str = ""
    reused: bool = field(default=False, compare=False)

    @property
    def width(self) -> int:
        return int(self.images.shape[2])

    @property
    def height(self) -> int:
        return int(self.images.shape[1])

    def as_model_frames(self) -> torch.Tensor:
        """``[S, 3, H, W]`` in [-1, 1]."""
        return self.images.permute(0, 3, 1, 2).float().div(127.5).sub(1)

    def contact_sheet(self):
        """A PIL image of the keyframes with their scores."""
        from avatar_cascade.media.contact_sheet import render_contact_sheet

        return render_contact_sheet(self.images, self.scores)

    def save(self, folder: Path) -> None:
        """Write ``keyframes/keyframe_NNNNN.png``, ``keyframes/contact_sheet.png`` and ``keyframes.json``."""
        from PIL import Image

        folder = Path(folder)
        kdir = folder / "keyframes"
        kdir.mkdir(parents=True, exist_ok=True)
        (folder / "keyframes.json").unlink(missing_ok=True)
        for old in kdir.glob("keyframe_*.png"):
            old.unlink()
        for i, img in enumerate(self.images):
            Image.fromarray(img.numpy()).save(kdir / f"keyframe_{i:05d}.png")
        self.contact_sheet().save(kdir / "contact_sheet.png")
        meta = {
            "format": KEY_FORMAT,
            "key": self.key,
            "frame_indices": self.frame_indices,
            "source_indices": self.source_indices,
            "weights": self.weights,
            "scores": self.scores,
        }
        atomic_write_text(folder / "keyframes.json", json.dumps(meta, indent=1))

    @classmethod
    def load(cls, folder: Path) -> Keyframes | None:
        """Keyframes saved in ``folder`` by :meth:`save`, or None when absent or incomplete."""
        import numpy as np
        from PIL import Image

        folder = Path(folder)
        try:
            meta = json.loads((folder / "keyframes.json").read_text())
            paths = [folder / "keyframes" / f"keyframe_{i:05d}.png" for i in range(len(meta["frame_indices"]))]
            images = torch.stack([torch.from_numpy(np.asarray(Image.open(p).convert("RGB")).copy()) for p in paths])
        except (OSError, ValueError, KeyError, TypeError, RuntimeError):
            return None
        return cls(
            images=images,
            frame_indices=meta["frame_indices"],
            source_indices=meta["source_indices"],
            scores=meta.get("scores", []),
            weights=meta.get("weights", {}),
            key=meta.get("key", ""),
        )

"""The control input of guided refinement: a control video (or sparse control keys) on the timeline.

A :class:`ControlVideo` holds control frames (a composite of pose / depth / normal / semantic /
line-art layers, as one VACE control video) and optional per-frame masks, placed on the output
timeline in one of two ways:

* **dense** (a video or an IMAGE batch): control frame ``i`` starts at ``i / fps`` seconds after
  output frame ``start_frame`` (``fps`` None: the output rate, one control frame per output
  frame). Output frame ``f`` shows the control frame whose span holds its start time:
  ``i = floor((f - start_frame) * fps / out_fps)``, computed in exact integers
  (both rates are Fractions, so NTSC rates do not drift). Output frames before the first or
  after the last control frame get no control.
* **sparse** (ToonCrafter-style sketch keys): control frame ``i`` sits at output frame
  ``keys[i]``; every other frame gets no control.

A frame without control is grey (0 in [-1, 1]) with mask 1: the DiT generates it freely, as
ComfyUI's ``WanVaceToVideo`` pads a short control video. :meth:`ControlVideo.clip_slice` gives a
sub-clip exactly the rows of its rendered frames ``[render_start, render_end]``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from fractions import Fraction

import torch

from avatar_cascade.core.errors import InputError
from avatar_cascade.media.framing import fit_frames


@dataclass
class ControlVideo:
    """Control frames on the output timeline.

    Attributes:
        frames: ``[N, H, W, 3]`` uint8 control frames (the composited layers).
        fps: the control frames' rate (dense); None: one control frame per output frame (or sparse keys).
        masks: ``[N, H, W]`` float in [0, 1] per control frame (1 = generate under guidance,
            0 = keep the control frame's pixels as they are), or None (all 1).
        keys: output frame index of each control frame (sparse sketch keys), or None (dense).
        start_frame: output frame of control frame 0 (dense).
        strength: scale of every VACE hint (ComfyUI ``WanVaceToVideo.strength``).
    """

    frames: torch.Tensor
    fps: Fraction | None = None
    masks: torch.Tensor | None = None
    keys: tuple[int, ...] | None = None
    start_frame: int = 0
    strength: float = 1.0

    def __post_init__(self) -> None:
        f = self.frames
        if not isinstance(f, torch.Tensor) or f.ndim != 4 or f.shape[-1] != 3 or f.dtype != torch.uint8:
            got = tuple(f.shape) if isinstance(f, torch.Tensor) else type(f).__name__
            raise InputError("control", got, "expected uint8 control frames [N, H, W, 3]", "connect an IMAGE batch")
        if len(f) == 0:
            raise InputError("control", 0, "the control video has no frames", "connect at least one control frame")
        if self.masks is not None and tuple(self.masks.shape) != tuple(f.shape[:3]):
            raise InputError(
                "control_masks",
                tuple(self.masks.shape),
                f"need one mask per control frame of the frames' size {tuple(f.shape[:3])}",
                "connect a MASK batch as long as the control video",
            )
        if self.keys is not None:
            keys = tuple(int(k) for k in self.keys)
            if len(keys) != len(f) or len(set(keys)) != len(keys) or min(keys) < 0:
                raise InputError(
                    "sketch_frames",
                    list(keys),
                    f"need {len(f)} distinct frame indices >= 0, one per sketch",
                    "list one output frame per sketch, e.g. '8, 20'",
                )
            self.keys = keys
        elif self.fps is not None:
            if Fraction(self.fps) <= 0:
                raise InputError("control_fps", self.fps, "must be > 0", "use the control video's frame rate")
            self.fps = Fraction(self.fps)
        if not 0.0 <= float(self.strength) <= 10.0:
            raise InputError("control_strength", self.strength, "must be between 0 and 10", "use 1.0")

    def source_index(self, frame: int, out_fps: Fraction) -> int | None:
        """The control frame shown at output frame ``frame`` (None: no control there)."""
        if self.keys is not None:
            return self.keys.index(frame) if frame in self.keys else None
        return self.source_index_at(Fraction(frame) / out_fps, out_fps)

    def source_index_at(self, time: Fraction, out_fps: Fraction) -> int | None:
        """The control frame shown at ``time`` seconds (exact) on a timeline of ``out_fps`` (None: none there).

        Dense: the control frame whose span holds ``time``, ``floor((time - start_frame / out_fps) * fps)``;
        sparse: key ``k`` if ``time`` falls in output frame ``k``'s span ``[k, k + 1) / out_fps``. At
        ``time = f / out_fps`` this is :meth:`source_index` of output frame ``f``; a frame rate below the
        output's (the blueprint's) can step over a sparse key's span and so miss it.
        """
        if self.keys is not None:
            f = (time * out_fps).numerator // (time * out_fps).denominator
            return self.keys.index(f) if f in self.keys else None
        rel = Fraction(time) - Fraction(self.start_frame) / out_fps
        if rel < 0:
            return None
        fps = out_fps if self.fps is None else self.fps
        i = (rel * fps).numerator // (rel * fps).denominator
        return i if i < len(self.frames) else None

    def covered_frames(self, num_frames: int, out_fps: Fraction) -> int:
        """How many of output frames ``0..num_frames-1`` get a control frame."""
        return sum(self.source_index(f, out_fps) is not None for f in range(num_frames))

    def clip_slice(
        self, render_start: int, count: int, out_fps: Fraction, height: int, width: int
    ) -> tuple[torch.Tensor, torch.Tensor, list[int | None]]:
        """Control of output frames ``render_start .. render_start + count - 1`` at ``width x height``.

        Returns ``(frames [3, count, H, W] in [-1, 1], masks [count, H, W], source indices)``; frames
        without control are 0 (grey) with mask 1. Control frames are framed like the keyframes
        (centre crop to the aspect ratio, then resized; never stretched).
        """
        idx = [self.source_index(render_start + t, out_fps) for t in range(count)]
        return (*self._rows(idx, height, width), idx)

    def slice_at(
        self, times: list[Fraction], out_fps: Fraction, height: int, width: int
    ) -> tuple[torch.Tensor, torch.Tensor, list[int | None]]:
        """As :meth:`clip_slice` for frames shown at ``times`` (seconds, exact; e.g. the blueprint's frames at
        its own lower rate), via :meth:`source_index_at`."""
        idx = [self.source_index_at(t, out_fps) for t in times]
        return (*self._rows(idx, height, width), idx)

    def _rows(self, idx: list[int | None], height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Control frames ``idx`` (None: grey, mask 1) as ``([3, T, H, W] in [-1, 1], masks [T, H, W])``."""
        count = len(idx)
        used = sorted({i for i in idx if i is not None})
        video = torch.zeros(3, count, height, width)
        masks = torch.ones(count, height, width)
        if used:
            fitted = fit_frames(self.frames[used], width, height)
            fitted = fitted.permute(3, 0, 1, 2).float() / 127.5 - 1.0
            mfit = None
            if self.masks is not None:
                m8 = (self.masks[used].clamp(0, 1) * 255).round().to(torch.uint8)[..., None].expand(-1, -1, -1, 3)
                mfit = fit_frames(m8.contiguous(), width, height)[..., 0].float() / 255.0
            where = {s: j for j, s in enumerate(used)}
            for t, i in enumerate(idx):
                if i is not None:
                    video[:, t] = fitted[:, where[i]]
                    if mfit is not None:
                        masks[t] = mfit[where[i]]
        return video, masks

    def identity(self) -> str:
        """Hex sha256 of everything that changes what the control does."""
        h = hashlib.sha256()
        h.update(self.frames.contiguous().numpy().tobytes())
        if self.masks is not None:
            h.update(self.masks.float().contiguous().numpy().tobytes())
        h.update(repr((str(self.fps), self.keys, self.start_frame, float(self.strength))).encode())
        return h.hexdigest()


def control_from_images(images: torch.Tensor, input_name: str = "control") -> torch.Tensor:
    """An IMAGE batch ``[N,H,W,C]`` float 0..1 (C = 3 or 4) -> ``[N,H,W,3]`` uint8 control frames."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[-1] not in (3, 4):
        got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise InputError(input_name, got, "expected an IMAGE batch [N, H, W, 3]", "connect an IMAGE output")
    if not torch.isfinite(images).all():
        raise InputError(input_name, "NaN/inf pixels", "the control frames contain invalid values", "re-load them")
    return (images[..., :3].float().clamp(0, 1) * 255).round().to(torch.uint8)

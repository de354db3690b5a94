"""The stitcher's output stream: joined frames at the timeline rate in; upscaled / resized, interpolated,
encoded (and optionally collected) one frame at a time.

For each timeline frame ``lo`` (as rendered): ``hi = scaler(lo)`` (:mod:`.upscale`); with an
interpolation factor ``n > 1`` the ``n - 1`` in-between frames at ``t = 1/n .. (n-1)/n`` between the
previous frame and this one (:mod:`.interpolate`: flow measured on the rendered frames, warping done
on the output-size frames) are written before ``hi``. That gives ``n (N - 1) + 1`` frames for ``N``
timeline frames; :meth:`OutputStream.finish` holds the last frame until the count the audio needs,
``ceil(duration * n * fps)`` (the timeline's rule, at the new rate), which is never fewer.

Held at any time: the previous frame at both sizes (and its luma at flow size), the current one and
the interpolator's flow fields; nothing grows with the length of the video.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from avatar_cascade.media import VideoWriter
from avatar_cascade.stages.stitcher.interpolate import FrameInterpolator
from avatar_cascade.stages.stitcher.upscale import FrameScaler


class OutputStream:
    """Timeline-rate frames in (trimmed to ``limit``); ``total_out`` frames out at ``factor`` times the rate.

    Args:
        limit: timeline frames to take (the rest of the last clip is dropped).
        factor: output frames per timeline frame (1 = as rendered).
        total_out: frames the file must have (the audio's duration at the output rate).
        collect: also keep every written frame (short videos; :attr:`kept`).
        open_writer: ``(height, width) -> open VideoWriter``, called at the first frame.
        make_scaler: ``(height, width) of the rendered frames -> FrameScaler``.
        interpolator: makes the in-between frames (``factor > 1``): flow / blend
            (:class:`FrameInterpolator`) or RIFE (:class:`~.learned.LearnedInterpolator`).
        check_interrupt: called before every frame an upscale model or RIFE runs on (seconds each on a CPU;
            the stitcher checks between clips anyway).
    """

    def __init__(
        self,
        limit: int,
        factor: int,
        total_out: int,
        collect: bool,
        open_writer: Callable[[tuple[int, int]], VideoWriter],
        make_scaler: Callable[[tuple[int, int]], FrameScaler],
        interpolator: FrameInterpolator | None = None,
        check_interrupt: Callable[[], None] = lambda: None,
    ) -> None:
        self.limit, self.factor, self.total_out = limit, factor, total_out
        self.taken = 0
        self.open_writer, self.make_scaler = open_writer, make_scaler
        self.interpolator = interpolator if interpolator is not None else FrameInterpolator()
        self.check_interrupt = check_interrupt
        self.ts = [i / factor for i in range(1, factor)]
        self.writer: VideoWriter | None = None
        self.scaler: FrameScaler | None = None
        self.prev: tuple[np.ndarray, np.ndarray] | None = None  # (as rendered, as written)
        self.kept: list[np.ndarray] | None = [] if collect else None

    @property
    def size(self) -> tuple[int, int] | None:
        """``(height, width)`` of the written frames (None before the first frame)."""
        return None if self.scaler is None else self.scaler.size

    def start(self, size: tuple[int, int]) -> None:
        """Open the scaler and the writer for rendered frames of ``(height, width)``."""
        self.scaler = self.make_scaler(size)
        self.writer = self.open_writer(self.scaler.size)

    def push(self, frames: np.ndarray) -> None:
        """Timeline frames ``[T, h, w, 3]`` uint8 (views into a clip are fine: none is kept)."""
        frames = frames[: max(0, self.limit - self.taken)]
        if not len(frames):
            return
        if self.writer is None:
            self.start((int(frames.shape[1]), int(frames.shape[2])))
        self.taken += len(frames)
        slow = self.scaler.model is not None or (self.factor > 1 and self.interpolator.method == "rife")
        for lo in frames:
            if slow:
                self.check_interrupt()
            hi = self.scaler(lo)
            if self.factor > 1 and self.prev is not None:
                for mid in self.interpolator.between(self.prev[0], lo, self.ts, self.prev[1], hi):
                    self._write(mid)
            self._write(hi)
            self.prev = (lo, hi)
        lo, hi = self.prev
        kept_lo = lo.copy()  # do not keep the whole clip alive through a view
        self.interpolator.rebind(lo, kept_lo)
        self.prev = (kept_lo, kept_lo if hi is lo else hi)

    def _write(self, frame: np.ndarray) -> None:
        if self.writer.frames_written >= self.total_out:
            return
        self.writer.write(frame)
        if self.kept is not None:
            self.kept.append(frame[None].copy())

    def finish(self) -> None:
        """Hold the last frame for the final part of the audio (at most ``factor - 1`` frames)."""
        while self.prev is not None and self.writer.frames_written < self.total_out:
            self._write(self.prev[1])

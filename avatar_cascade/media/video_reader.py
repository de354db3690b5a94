"""Decode a video file frame by frame (PyAV), in constant memory.

:func:`read_video` checks the file and returns a :class:`VideoFrames`: the frame rate (exact
:class:`~fractions.Fraction`), size, and an iterator of ``[H, W, 3]`` uint8 RGB numpy frames in
presentation order. A file without a video stream, or one PyAV cannot decode, is an
:class:`~avatar_cascade.core.errors.InputError` naming the input.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from avatar_cascade.core.errors import InputError
from avatar_cascade.media.files import check_file


@dataclass
class VideoFrames:
    path: str
    fps: Fraction
    width: int
    height: int
    input_name: str = "video"

    def __iter__(self) -> Iterator[np.ndarray]:
        import av

        try:
            with av.open(self.path) as c:
                for frame in c.decode(c.streams.video[0]):
                    yield frame.to_ndarray(format="rgb24")
        except av.FFmpegError as exc:
            raise InputError(self.input_name, self.path, f"cannot be decoded ({exc})", "re-export the video") from None


def read_video(path: str | os.PathLike, input_name: str = "video") -> VideoFrames:
    """Open ``path`` for frame-by-frame decoding (see the module doc)."""
    import av

    p = check_file(path, input_name, "video")
    try:
        with av.open(str(p)) as c:
            if not c.streams.video:
                raise InputError(
                    input_name, str(path), "has no video stream", "give a video file (mp4, mov, mkv, webm)"
                )
            v = c.streams.video[0]
            rate = v.average_rate or v.guessed_rate
            if not rate:
                raise InputError(input_name, str(path), "declares no frame rate", "re-export it with a constant fps")
            return VideoFrames(str(p), Fraction(rate), int(v.width), int(v.height), input_name)
    except av.FFmpegError as exc:
        raise InputError(input_name, str(path), f"is not a readable video ({exc})", "re-export the video") from None

"""Reading a control video file: its frames (scaled down to a working size) and its exact frame rate."""

from __future__ import annotations

import os
from fractions import Fraction

import torch

from avatar_cascade.core.errors import InputError
from avatar_cascade.media.files import check_file

MAX_CONTROL_FRAMES = 100_000


def read_control_video(
    path: str | os.PathLike, input_name: str = "--control", max_side: int = 1024, max_frames: int = MAX_CONTROL_FRAMES
) -> tuple[torch.Tensor, Fraction]:
    """``([N, H, W, 3] uint8, fps)`` of a video file; frames larger than ``max_side`` are scaled down (aspect kept).

    The rate is the stream's average rate as an exact Fraction (30000/1001 for NTSC files).
    """
    import av

    p = check_file(path, input_name, "video")
    frames = []
    try:
        with av.open(str(p)) as c:
            if not c.streams.video:
                raise InputError(input_name, str(path), "has no video stream", "give a video file (mp4, webm, mov)")
            v = c.streams.video[0]
            rate = v.average_rate or v.guessed_rate
            if not rate:
                raise InputError(input_name, str(path), "has no frame rate", "re-encode it with a constant rate")
            scale = min(1.0, max_side / max(v.width, v.height))
            w, h = max(2, round(v.width * scale)), max(2, round(v.height * scale))
            for frame in c.decode(v):
                if len(frames) >= max_frames:
                    raise InputError(input_name, str(path), f"has over {max_frames} frames", "cut the video")
                frames.append(torch.from_numpy(frame.to_ndarray(format="rgb24", width=w, height=h)))
    except av.error.FFmpegError as exc:
        raise InputError(input_name, str(path), f"could not be decoded ({exc})", "re-export the video") from exc
    if not frames:
        raise InputError(input_name, str(path), "has no frames", "give a video with at least one frame")
    return torch.stack(frames), Fraction(rate)

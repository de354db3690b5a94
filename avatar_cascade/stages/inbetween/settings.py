"""Keyframes-from-images settings: segment length, frame rate and the refine size of the keys."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from avatar_cascade.artefacts.timeline import check_clip_frames, parse_fps
from avatar_cascade.core.settings import Settings, setting, validator
from avatar_cascade.sampling.settings import size_setting


@dataclass(frozen=True, kw_only=True)
class InbetweenSettings(Settings):
    """How drawn keys become keyframes + a timeline (see :func:`keyframes_from_images`).

    Attributes:
        segment_frames: frames from one key to the next, both keys included (4n+1).
        fps: video frame rate (Wan 2.1 is trained at 16).
        width / height: refine resolution of the keys (multiples of 16).
    """

    segment_frames: int = setting(
        17, tooltip="Frames from one key to the next, both keys included (4n+1): 17 = 15 new frames.",
        min=5, max=257, step=4, validate=validator(check_clip_frames), fix="use 17, 33 or 49",
    )  # fmt: skip
    fps: float | str | Fraction = setting(
        16.0, kind="FLOAT", tooltip="Video rate.", min=1.0, max=120.0, step=0.5, validate=validator(parse_fps),
        cli_text=True, fix="use a video rate such as 16 or 24",
    )  # fmt: skip
    width: int = size_setting(832, "Refine width.")
    height: int = size_setting(480, "Refine height.")

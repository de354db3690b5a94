"""Clip Stitcher settings: encoder, quality, pixel format, colour matching, joins, frame-rate doubling.

``colour_match`` defaults to 1.0 (node and CLI; the engine had 0.0): matching every clip to its
keyframes cancels the colour drift a long video accumulates, and the cascade always has the
keyframes. Callers without keyframes pass ``colour_match=0.0``.
"""

from __future__ import annotations

from dataclasses import dataclass

from avatar_cascade.core.settings import Settings, setting

CODECS = {"h264": "libx264", "h265": "libx265", "libx264": "libx264", "libx265": "libx265"}
PIX_FMTS = ("yuv420p", "yuv444p", "yuv420p10le")


@dataclass(frozen=True, kw_only=True)
class StitcherSettings(Settings):
    """How the joined video is encoded (see :func:`~avatar_cascade.stages.stitcher.stitcher.stitch_clips`).

    Attributes:
        codec: ``h264`` / ``h265`` or any FFmpeg video encoder name (e.g. ``libvpx-vp9`` for .webm).
        crf: quality, 0 (lossless) to 51, lower = better and bigger.
        pix_fmt: one of ``PIX_FMTS``.
        preset: encoder preset (e.g. ``ultrafast``, ``slow``); None = the encoder's default.
        colour_match: 0..1 strength of matching each clip's colours to its two keyframes.
        crossfade: blend frames rendered by two clips (timelines with overlap).
        double_fps: write at twice the timeline's rate with midpoint frames.
    """

    codec: str = setting(
        "h264", tooltip="H.264 plays everywhere; H.265 is smaller.", choices=("h264", "h265"), open_choices=True
    )
    crf: int = setting(19, tooltip="Quality (lower = better, bigger).", min=0, max=51, fix="use 17-23")
    pix_fmt: str = setting(
        "yuv420p", tooltip="yuv420p plays everywhere; yuv444p / 10-bit keep more colour.", choices=PIX_FMTS
    )
    preset: str | None = setting(
        None, tooltip="Encoder preset, e.g. ultrafast or slow ('' = the encoder's default).", none_as=""
    )
    colour_match: float = setting(
        1.0, tooltip="Match each clip's colours to its two keyframes (ramped across the clip) to "
        "cancel colour drift; 0 = off.", min=0.0, max=1.0, step=0.05, fix="use 1.0, or 0 without keyframes",
    )  # fmt: skip
    crossfade: bool = setting(True, tooltip="Blend frames rendered by two clips (timelines with overlap).")
    double_fps: bool = setting(False, tooltip="Write at twice the frame rate (e.g. 24 -> 48) with midpoint frames.")

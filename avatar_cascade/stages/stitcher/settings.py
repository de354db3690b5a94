"""Clip Stitcher settings: encoder, quality, pixel format, colour matching, joins, and the output stage
(frame interpolation, upscale tiles, output height).

``colour_match`` defaults to 1.0 (node and CLI; the engine had 0.0): matching every clip to its
keyframes cancels the colour drift a long video accumulates, and the cascade always has the
keyframes. Callers without keyframes pass ``colour_match=0.0``.
"""

from __future__ import annotations

from dataclasses import dataclass

from avatar_cascade.core.errors import InputError
from avatar_cascade.core.settings import Settings, setting

CODECS = {"h264": "libx264", "h265": "libx265", "libx264": "libx264", "libx265": "libx265"}
PIX_FMTS = ("yuv420p", "yuv444p", "yuv420p10le")
INTERPOLATIONS = ("flow", "blend", "rife")
RIFE_SCALES = (0.25, 0.5, 1.0, 2.0, 4.0)


def _check_rife_scale(name: str, value: float) -> None:
    if float(value) not in RIFE_SCALES:
        raise InputError(name, value, "is not a RIFE scale", "use 0.25, 0.5, 1.0, 2.0 or 4.0 (1.0 up to 1080p)")


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
        interpolate: output frames per timeline frame (2 = twice the rate, e.g. 24 -> 48 fps).
        interpolation: how in-between frames are made, one of ``INTERPOLATIONS`` (``rife`` needs an
            interpolator model: RIFE 4.x weights from ``models/frame_interpolation``).
        interpolator_scale: RIFE's ``scale`` (flow estimated at ``[8, 4, 2, 1] / scale`` of the frame;
            1.0 up to 1080p, 0.5 for 4K), one of ``RIFE_SCALES``.
        interpolator_ensemble: RIFE also runs on the swapped pair and averages (twice the time).
        output_height: height of the written frames in pixels (None = the clips' height, times the
            upscale model's scale when one is given).
        upscale_tile: tile side in input pixels when an upscale model runs.
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
    interpolate: int = setting(
        1, tooltip="Output frames per rendered frame: 2 doubles the frame rate (24 -> 48 fps, 25 -> 50) with "
        "motion-compensated in-between frames; 1 = as rendered.", min=1, max=4, fix="use 1 or 2",
    )  # fmt: skip
    interpolation: str = setting(
        "flow", tooltip="How in-between frames are made: flow = optical flow (OpenCV DIS) both ways, both "
        "neighbours warped to the middle, occlusion-aware (no weights needed); rife = the learned RIFE 4.x "
        "interpolator (connect its model, models/frame_interpolation); blend = a plain mix of the neighbours "
        "(ghosts on motion).", choices=INTERPOLATIONS,
    )  # fmt: skip
    interpolator_scale: float = setting(
        1.0, tooltip="RIFE only: 1.0 up to 1080p, 0.5 for 4K (the flow is estimated at 1/scale coarser levels; "
        "smaller = faster, less detail in small motions): 0.25, 0.5, 1, 2 or 4.", min=0.25, max=4.0, step=0.25,
        validate=_check_rife_scale,
    )  # fmt: skip
    interpolator_ensemble: bool = setting(
        False, tooltip="RIFE only: also run on the swapped frame pair and average (a little better, twice the time)."
    )
    output_height: int | None = setting(
        None, tooltip="Height of the video in pixels, e.g. 1080 (width follows the aspect ratio); frames are "
        "upscaled by the upscale model first when one is given. 0 = the clips' height (times the model's "
        "scale).", min=64, max=4320, none_as=0, fix="use 720 or 1080, or 0 to keep the size",
    )  # fmt: skip
    upscale_tile: int = setting(
        512, tooltip="Tile side in input pixels for the upscale model (smaller = less memory, halved "
        "automatically when the GPU runs out).", min=64, max=4096, step=64,
    )  # fmt: skip

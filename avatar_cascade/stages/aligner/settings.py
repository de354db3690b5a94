"""Audio Aligner settings: frame rate, sub-clip length, seam snapping, limits, feature extraction.

Chosen defaults where the node, the CLI and the engine used to differ:

* ``snap_seams_frames`` 8 (node and CLI; the engine had 0): cuts between words are the point of
  snapping, and 8 frames (two latent frames) is a small move at 16-30 fps;
* ``max_duration_s`` 3600 s (the CLI's; node 1800, engine no limit): an hour covers long talks
  while a wrong file (a 10-hour recording) is still refused before any work.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from avatar_cascade.artefacts.aligned_audio import AUDIO_WINDOW
from avatar_cascade.artefacts.timeline import check_clip_frames, parse_fps
from avatar_cascade.core.errors import InputError
from avatar_cascade.core.settings import Settings, setting, validator
from avatar_cascade.stages.aligner.features import MODES as FEATURE_MODES
from avatar_cascade.stages.aligner.seams import check_snap_tolerance

SEAM_DETECTORS = ("auto", "silero_vad", "loudness")


def check_fps(name: str, value: float | str | Fraction) -> None:
    """A frame rate as a number or an exact ratio (see :func:`~avatar_cascade.artefacts.timeline.parse_fps`)."""
    validator(parse_fps)(name, value)


def _multiple_of_4(name: str, value: int) -> None:
    if isinstance(value, int) and value % 4:
        raise InputError(name, value, "must be a multiple of 4 frames (one latent frame)", "use 0, 4 or 8")


def _odd(name: str, value: int) -> None:
    if isinstance(value, int) and value % 2 == 0:
        raise InputError(name, value, "must be an odd number of frames", "use 5 (InfiniteTalk)")


@dataclass(frozen=True, kw_only=True)
class AlignerSettings(Settings):
    """How the timeline is planned from the audio and how its features are extracted (see :func:`align_audio`)."""

    fps: float | str | Fraction = setting(
        25, kind="FLOAT", tooltip="Output video frame rate. 29.97 / 23.976 map to exact NTSC rates. "
        "InfiniteTalk-style models are trained at 25, Wan 2.1 at 16.",
        min=1.0, max=120.0, step=0.001, validate=check_fps, cli_text=True,
        fix="use a video rate such as 16, 24, 25 or 30000/1001",
    )  # fmt: skip
    clip_frames: int = setting(
        81, tooltip="Sub-clip length in frames, 4n+1 (Wan: 81).", min=5, max=257, step=4,
        validate=validator(check_clip_frames), fix="use 17, 33, 49, 65 or 81",
    )  # fmt: skip
    snap_seams_frames: int = setting(
        8, tooltip="Move each seam up to this many frames (in steps of 4, clips stay 4n+1) to the "
        "quietest nearby point so cuts fall between words. 0 = fixed grid.",
        min=0, max=64, step=4, validate=validator(check_snap_tolerance),
        fix="use 0 (no snapping) or e.g. 8 (seams move up to 8 frames, in steps of 4)",
    )  # fmt: skip
    max_duration_s: float | None = setting(
        3600.0, tooltip="Refuse audio longer than this many seconds (a safety limit for memory and time).",
        min=1.0, max=36000.0, step=1.0, optional=True, fix="use e.g. 3600",
    )  # fmt: skip
    loudness_lufs: float | None = setting(
        None, tooltip="Normalise the track to this loudness (LUFS, e.g. -23 as InfiniteTalk does) "
        "before features and muxing. 0 = leave the level as it is.",
        min=-70.0, max=0.0, step=0.5, none_as=0.0, fix="use -23 (broadcast)",
    )  # fmt: skip
    overlap_frames: int = setting(
        0, tooltip="Frames every clip also renders past each interior seam, for blending (multiple of 4).",
        min=0, max=64, validate=_multiple_of_4,
    )  # fmt: skip
    seam_detector: str = setting(
        "auto", tooltip="What finds the pauses seams snap to: 'silero_vad' (speech activity, package silero-vad), "
        "'loudness' (quiet places), 'auto' = Silero VAD when installed, else loudness.", choices=SEAM_DETECTORS,
    )  # fmt: skip
    pause_window_s: float = setting(
        0.2, tooltip="Span around a seam whose loudness is measured when snapping, seconds.", min=0.01, max=5.0,
    )  # fmt: skip
    max_clip_frames: int | None = setting(
        None, tooltip="Cap on clip lengths while snapping seams; 0 = clip_frames (snapping never makes a clip longer "
        "than the model's trained length, Wan: 81).", min=5, max=1025, none_as=0,
        validate=validator(check_clip_frames),
    )  # fmt: skip
    feature_pad_s: float = setting(
        0.5, tooltip="Audio context on both sides of each clip window, seconds.", min=0.0, max=10.0,
    )  # fmt: skip
    feature_mode: str = setting(
        "video", tooltip="wav2vec2 features at the video frame rate as InfiniteTalk reads them ('video') "
        "or at the encoder's own rate ('native').", choices=FEATURE_MODES,
    )  # fmt: skip
    feature_chunk_s: float | None = setting(
        30.0, tooltip="Long audio is encoded in chunks of this many seconds (0 = one pass).", min=1.0, max=3600.0,
        none_as=0.0,
    )  # fmt: skip
    feature_context_s: float = setting(
        4.0, tooltip="Audio context each chunk sees on both sides, seconds.", min=0.0, max=60.0,
    )  # fmt: skip
    window: int = setting(
        AUDIO_WINDOW, tooltip="Feature rows per frame window (odd; InfiniteTalk: 5).", min=1, max=65,
        validate=_odd,
    )  # fmt: skip

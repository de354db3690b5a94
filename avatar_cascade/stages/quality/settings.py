"""Quality report settings: detectors, identity sampling, lip-sync lag search."""

from __future__ import annotations

from dataclasses import dataclass

from avatar_cascade.core.settings import Settings, setting
from avatar_cascade.models.detectors.vad import METHODS as VAD_METHODS


@dataclass(frozen=True, kw_only=True)
class QualitySettings(Settings):
    """What the quality report measures with (see :func:`~avatar_cascade.stages.quality.report.quality_report`)."""

    face_detectors: bool = setting(
        True, tooltip="Use dlib's face detector, landmarks and face embedding when installed (else labelled proxies)."
    )
    landmarks_68: bool = setting(
        False, tooltip="Mouth openness from dlib's 68-point landmarks (iBUG 300-W data: NON-COMMERCIAL use only); "
        "off = the 5-point mouth-region measure.",
    )  # fmt: skip
    vad: str = setting(
        "auto", tooltip="Speech activity: 'silero_vad', 'energy' (loudness), 'auto' = Silero when installed.",
        choices=VAD_METHODS,
    )  # fmt: skip
    identity_every_s: float = setting(
        1.0, tooltip="Seconds between identity measurements (face detection + embedding); the face box found "
        "there is reused for the mouth landmarks of the frames in between.", min=0.04, max=60.0, step=0.04,
    )  # fmt: skip
    max_lag_frames: int = setting(
        5, tooltip="Largest audio-video offset (frames, both ways) the lip-sync proxy searches.", min=0, max=50
    )

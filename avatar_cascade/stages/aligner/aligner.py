"""Audio Aligner stage: audio in, the frame-exact master timeline (+ features) out.

Check inputs (any decoded track, ComfyUI AUDIO dict or file path; finite,
within ``max_duration_s``) -> optional loudness normalisation -> plan the
timeline (:mod:`.timeline`), optionally snapping seams into pauses
(:mod:`.seams`) -> extract wav2vec2 features once for the whole track at the
video frame rate (:mod:`.audio_features`, or ComfyUI's own
``AUDIO_ENCODER_OUTPUT``) -> package :class:`AlignedAudio`, the
``AVATAR_TIMELINE`` artefact every later stage reads.
"""

from __future__ import annotations

import logging
import math
import os
from fractions import Fraction
from typing import Any

import numpy as np
import torch

from avatar_cascade.artefacts.aligned_audio import AUDIO_WINDOW, AlignedAudio
from avatar_cascade.artefacts.timeline import plan_timeline
from avatar_cascade.core.errors import InputError
from avatar_cascade.core.runtime import Runtime
from avatar_cascade.media import AudioTrack, load_audio, to_mono
from avatar_cascade.stages.aligner.features import (
    FEATURE_RATE,
    extract_frame_features,
    features_from_comfy_output,
    resample_long,
)
from avatar_cascade.stages.aligner.loudness import normalise_loudness
from avatar_cascade.stages.aligner.seams import check_snap_tolerance, snap_to_pauses

log = logging.getLogger(__name__)

SILENCE_DBFS = -60.0


# -- input checks ----------------------------------------------------------


def sample_range(waveform: torch.Tensor) -> tuple[float, float]:
    """Lowest and highest sample in one pass without a copy (NaN if any sample is NaN)."""
    if not waveform.numel():
        return 0.0, 0.0
    lo, hi = torch.aminmax(waveform)
    return float(lo), float(hi)


def peak_dbfs(waveform: torch.Tensor) -> float:
    """Peak level in dB relative to full scale (-inf for digital silence)."""
    lo, hi = sample_range(waveform)
    peak = max(-lo, hi)
    return -float("inf") if peak <= 0 else 20.0 * math.log10(peak)


def _comfy_to_float(d: dict) -> dict:
    """Scale integer waveforms (int16/int32/uint8) of an AUDIO dict to -1..1 float."""
    wav = d.get("waveform")
    if isinstance(wav, np.ndarray):
        wav = torch.from_numpy(wav)
    if isinstance(wav, torch.Tensor) and not wav.is_floating_point():
        if wav.dtype == torch.uint8:
            wav = (wav.float() - 128.0) / 128.0
        elif wav.dtype != torch.bool:
            wav = wav.float() / float(2 ** (torch.iinfo(wav.dtype).bits - 1))
        d = {**d, "waveform": wav}
    return d


def as_audio_track(audio: Any, input_name: str = "audio", max_duration_s: float | None = None) -> AudioTrack:
    """Any audio an artist has -> a checked :class:`AudioTrack`.

    Accepts an ``AudioTrack``, a ComfyUI AUDIO dict (batch of one; float or integer
    samples) or a path to any file PyAV decodes (wav, flac, mp3, m4a/aac, ogg/opus, the
    audio track of mp4/mov/mkv). Refuses batches > 1, empty audio, NaN/inf samples,
    corrupt files, videos without sound and audio longer than ``max_duration_s``.
    Float audio peaking above full scale is scaled down to a peak of 1 (never clipped).
    """
    if max_duration_s is not None and not max_duration_s > 0:
        raise InputError("max_duration_s", max_duration_s, "must be a positive number of seconds", "use e.g. 1800")
    if isinstance(audio, (str, os.PathLike)):
        return load_audio(audio, input_name=input_name, max_duration_s=max_duration_s)
    if isinstance(audio, dict):
        track = AudioTrack.from_comfy(_comfy_to_float(audio), input_name=input_name)
    elif isinstance(audio, AudioTrack):
        track = audio
    else:
        raise InputError(input_name, type(audio).__name__, "is not audio", "pass an AUDIO, an AudioTrack or a file")
    if track.num_channels < 1 or track.num_samples < 1:
        raise InputError(input_name, tuple(track.waveform.shape), "holds no samples", "connect a non-empty AUDIO")
    lo, hi = sample_range(track.waveform)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise InputError(input_name, "NaN/inf samples", "the audio contains invalid samples", "re-export the audio")
    if max_duration_s is not None and track.duration_s > max_duration_s:
        raise InputError(
            input_name,
            f"{track.duration_s:.2f} s",
            f"is longer than the limit of {max_duration_s:g} s (max_duration_s)",
            "cut the audio shorter or raise max_duration_s",
        )
    if track.sample_rate < 8000:
        log.warning("%s: %d Hz is below 8 kHz; lip-sync features will be poor", input_name, track.sample_rate)
    peak = max(-lo, hi)
    if peak > 1.0:
        log.warning("%s: peak %.3f above full scale, scaling down to 1.0", input_name, peak)
        track = AudioTrack(track.waveform / peak, track.sample_rate)
    return track


# -- the stage ---------------------------------------------------------------


def align_audio(
    audio: AudioTrack | dict | str | os.PathLike,
    fps: float | str | Fraction,
    clip_frames: int,
    runtime: Runtime,
    audio_encoder: Any = None,
    feature_pad_s: float = 0.5,
    *,
    overlap_frames: int = 0,
    snap_seams_frames: int = 0,
    pause_window_s: float = 0.2,
    max_clip_frames: int | None = None,
    max_duration_s: float | None = None,
    loudness_lufs: float | None = None,
    audio_encoder_output: dict | None = None,
    feature_mode: str = "video",
    feature_chunk_s: float | None = 30.0,
    feature_context_s: float = 4.0,
    window: int = AUDIO_WINDOW,
) -> AlignedAudio:
    """Build the timeline for ``audio`` and (optionally) its per-frame features.

    Args:
        audio: an ``AudioTrack``, ComfyUI AUDIO dict or audio/video file path (see :func:`as_audio_track`).
        fps: output video frame rate (exact rationals accepted, e.g. "30000/1001").
        clip_frames: nominal sub-clip length (4n+1 frames).
        runtime: device and hooks for the encoder; receives a ``"timeline"`` preview image.
        audio_encoder: an ``AudioEncoder`` or None.
        feature_pad_s: audio context on both sides of each clip window, seconds.
        overlap_frames: frames every clip also renders past each interior seam, for blending
            (multiple of 4; declared per clip as ``render_start``/``render_end``).
        snap_seams_frames: move each seam up to this many frames (in steps of 4) into a pause;
            0 keeps the nominal grid (see :mod:`avatar_cascade.stages.aligner.seams` for the rule).
        pause_window_s: span around a seam whose loudness is measured, seconds.
        max_clip_frames: optional cap on clip lengths while snapping.
        max_duration_s: refuse longer audio (seconds); None = no limit.
        loudness_lufs: normalise the track to this integrated loudness first; None = as is.
        audio_encoder_output: ComfyUI ``AUDIO_ENCODER_OUTPUT`` to use instead of ``audio_encoder``.
        feature_mode: ``"video"`` (InfiniteTalk) or ``"native"``; see :mod:`avatar_cascade.stages.aligner.features`.
        feature_chunk_s / feature_context_s: chunking of long audio, seconds (None = one pass).
        window: feature rows per frame window for :meth:`AlignedAudio.frame_windows` (odd).
    """
    track = as_audio_track(audio, "audio", max_duration_s)
    check_snap_tolerance(snap_seams_frames)
    if window < 1 or window % 2 == 0:
        raise InputError("window", window, "must be an odd number of frames", "use 5 (InfiniteTalk)")
    loudness = None
    if loudness_lufs is not None:
        track, loudness = normalise_loudness(track, float(loudness_lufs))
    wf = track.waveform
    timeline = plan_timeline(track.num_samples, track.sample_rate, fps, clip_frames, feature_pad_s, overlap_frames)
    mono = to_mono(wf) if snap_seams_frames or audio_encoder is not None else None
    if snap_seams_frames and len(timeline.clips) > 1:
        nominal = [c.frame_start for c in timeline.clips[1:]]
        snap = snap_to_pauses(
            mono, track.sample_rate, timeline.fps, timeline.num_frames, nominal, snap_seams_frames, pause_window_s,
            max_clip_frames,
        )  # fmt: skip
        nominal_all = timeline.nominal_seams
        timeline = plan_timeline(
            track.num_samples, track.sample_rate, fps, clip_frames, feature_pad_s, overlap_frames, snap.seams
        )
        timeline.nominal_seams = nominal_all
        timeline.meta["seam_levels_db"] = [round(v, 2) for v in snap.levels_db]
        timeline.meta["seams_in_pause"] = snap.in_pause
        timeline.meta["loud_level_db"] = round(snap.reference_db, 2)
    timeline.snap_tolerance_frames = snap_seams_frames
    level = peak_dbfs(wf)
    timeline.meta["peak_dbfs"] = round(level, 2) if math.isfinite(level) else None  # None: digital silence
    if loudness is not None:
        timeline.meta["loudness"] = loudness
    if level < SILENCE_DBFS:
        msg = f"the audio is silent (peak {level:.1f} dBFS): the avatar will not speak"
        log.warning(msg)
        timeline.meta.setdefault("warnings", []).append(msg)

    times = torch.arange(timeline.num_frames, dtype=torch.float64) * (timeline.fps_den / timeline.fps_num)
    features = None
    if audio_encoder_output is not None:
        features = features_from_comfy_output(audio_encoder_output, times, track.duration_s)
        timeline.meta["features"] = {"source": "AUDIO_ENCODER_OUTPUT", "mode": "native"}
    elif audio_encoder is not None:
        mono16 = resample_long(mono, track.sample_rate, FEATURE_RATE)
        features = extract_frame_features(
            audio_encoder, mono16, times, runtime, feature_mode, feature_chunk_s, feature_context_s
        )
        timeline.meta["features"] = {"source": getattr(audio_encoder, "identity", "?"), "mode": feature_mode}
    if features is not None:
        timeline.meta["features"].update(layers=int(features.shape[1]), dim=int(features.shape[2]), window=window)
    aligned = AlignedAudio(timeline=timeline, audio=track, features=features, window=window)
    if runtime.preview is not None:
        from avatar_cascade.media.timeline_plot import render_timeline

        img = render_timeline(aligned, width=512)
        runtime.emit_preview("timeline", torch.from_numpy(np.array(img.convert("RGB"))))
    log.info(
        "timeline: %d frames at %s fps, %d clips of %d frames (%d seams snapped), %.2f s audio",
        timeline.num_frames,
        timeline.fps,
        len(timeline.clips),
        clip_frames,
        len(timeline.snapped_seams),
        timeline.duration_s,
    )
    return aligned

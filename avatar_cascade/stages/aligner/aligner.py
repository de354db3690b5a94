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
from typing import Any

import numpy as np
import torch

from avatar_cascade.artefacts.aligned_audio import AlignedAudio
from avatar_cascade.artefacts.timeline import MIN_CLIP_FRAMES, plan_timeline
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
from avatar_cascade.stages.aligner.seams import snap_to_pauses
from avatar_cascade.stages.aligner.settings import AlignerSettings

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
    settings: AlignerSettings,
    runtime: Runtime,
    *,
    audio_encoder: Any = None,
    audio_encoder_output: dict | None = None,
) -> AlignedAudio:
    """Build the timeline for ``audio`` and (optionally) its per-frame features.

    Args:
        audio: an ``AudioTrack``, ComfyUI AUDIO dict or audio/video file path (see :func:`as_audio_track`).
        settings: frame rate (exact rationals accepted, e.g. "30000/1001"), sub-clip length (4n+1
            frames), seam snapping (frames, in steps of 4; see :mod:`avatar_cascade.stages.aligner.seams`),
            blending overlap (frames), duration limit (seconds), loudness normalisation (LUFS) and the
            feature extraction (mode, chunking in seconds, window rows); see :class:`AlignerSettings`.
        runtime: device and hooks for the encoder; receives a ``"timeline"`` preview image.
        audio_encoder: an ``AudioEncoder`` or None.
        audio_encoder_output: ComfyUI ``AUDIO_ENCODER_OUTPUT`` to use instead of ``audio_encoder``.
    """
    settings.check()
    track = as_audio_track(audio, "audio", settings.max_duration_s)
    loudness = None
    if settings.loudness_lufs is not None:
        track, loudness = normalise_loudness(track, float(settings.loudness_lufs))
    need_mono = settings.snap_seams_frames or audio_encoder is not None
    mono = to_mono(track.waveform) if need_mono else None
    timeline = _plan(track, mono, settings)
    _describe_level(timeline, track.waveform, loudness)
    features = _features(timeline, track, mono, settings, runtime, audio_encoder, audio_encoder_output)
    aligned = AlignedAudio(timeline=timeline, audio=track, features=features, window=settings.window)
    if runtime.preview is not None:
        from avatar_cascade.media.timeline_plot import render_timeline

        img = render_timeline(aligned, width=512)
        runtime.emit_preview("timeline", torch.from_numpy(np.array(img.convert("RGB"))))
    log.info(
        "timeline: %d frames at %s fps, %d clips of %d frames (%d seams snapped; lengths %s), %.2f s audio",
        timeline.num_frames,
        timeline.fps,
        len(timeline.clips),
        settings.clip_frames,
        len(timeline.snapped_seams),
        ", ".join(f"{n} x {k}" for k, n in timeline.clip_length_histogram.items()),
        timeline.duration_s,
    )
    return aligned


def snap_grid(s: AlignerSettings) -> tuple[int, int | None]:
    """``(nominal clip length, cap)``. Without ``max_clip_frames``, ``clip_frames`` is the longest clip (Wan's
    trained 81): with snapping the grid is ``clip_frames - tolerance`` (4n+1) so seams can move both ways and
    no clip grows past ``clip_frames``. With ``max_clip_frames`` the grid is ``clip_frames``, capped there."""
    if s.max_clip_frames is not None:
        return s.clip_frames, s.max_clip_frames
    tol = (s.snap_seams_frames // 4) * 4
    return max(MIN_CLIP_FRAMES, s.clip_frames - tol), s.clip_frames


def _plan(track: AudioTrack, mono: torch.Tensor | None, s: AlignerSettings):
    """The timeline on the nominal grid, then with its seams snapped into pauses (when asked)."""
    n, sr = track.num_samples, track.sample_rate
    grid, cap = snap_grid(s)
    timeline = plan_timeline(n, sr, s.fps, grid, s.feature_pad_s, s.overlap_frames)
    if s.snap_seams_frames and len(timeline.clips) > 1:
        nominal = [c.frame_start for c in timeline.clips[1:]]
        snap = snap_to_pauses(
            mono, sr, timeline.fps, timeline.num_frames, nominal, s.snap_seams_frames, s.pause_window_s, cap,
        )  # fmt: skip
        nominal_all = timeline.nominal_seams
        timeline = plan_timeline(n, sr, s.fps, grid, s.feature_pad_s, s.overlap_frames, snap.seams)
        timeline.nominal_seams = nominal_all
        timeline.meta["seam_levels_db"] = [round(v, 2) for v in snap.levels_db]
        timeline.meta["seams_in_pause"] = snap.in_pause
        timeline.meta["loud_level_db"] = round(snap.reference_db, 2)
    timeline.snap_tolerance_frames = s.snap_seams_frames
    return timeline


def _describe_level(timeline, waveform: torch.Tensor, loudness: dict | None) -> None:
    """Peak level (and loudness normalisation) into the timeline's meta; warn about silent audio."""
    level = peak_dbfs(waveform)
    timeline.meta["peak_dbfs"] = round(level, 2) if math.isfinite(level) else None  # None: digital silence
    if loudness is not None:
        timeline.meta["loudness"] = loudness
    if level < SILENCE_DBFS:
        msg = f"the audio is silent (peak {level:.1f} dBFS): the avatar will not speak"
        log.warning(msg)
        timeline.meta.setdefault("warnings", []).append(msg)


def _features(timeline, track, mono, s: AlignerSettings, runtime, audio_encoder, audio_encoder_output):
    """Per-frame audio features ``[frames, layers, dim]`` (or None without an encoder)."""
    times = torch.arange(timeline.num_frames, dtype=torch.float64) * (timeline.fps_den / timeline.fps_num)
    features = None
    if audio_encoder_output is not None:
        features = features_from_comfy_output(audio_encoder_output, times, track.duration_s)
        timeline.meta["features"] = {"source": "AUDIO_ENCODER_OUTPUT", "mode": "native"}
        runtime.warn(
            "aligner",
            "ComfyUI's AUDIO_ENCODER_OUTPUT runs wav2vec2 at 50 Hz and is resampled to the frames afterwards; "
            "InfiniteTalk was trained on features resampled before the transformer (connect the pack's Load Audio "
            "Encoder instead for its trained regime)",
        )
    elif audio_encoder is not None:
        mono16 = resample_long(mono, track.sample_rate, FEATURE_RATE)
        features = extract_frame_features(
            audio_encoder, mono16, times, runtime, s.feature_mode, s.feature_chunk_s, s.feature_context_s
        )
        timeline.meta["features"] = {"source": audio_encoder.identity, "mode": s.feature_mode}
    if features is not None:
        timeline.meta["features"].update(layers=int(features.shape[1]), dim=int(features.shape[2]), window=s.window)
    return features

"""Clip stitcher: join sub-clips into one video file with the audio, at constant memory.

Sub-clip ``k`` covers timeline frames ``frame_start..frame_end`` (inclusive) and
consecutive clips share their seam keyframe, so every clip after the first
contributes its frames from the second on. The joined sequence has
``timeline.padded_frames`` frames; it is cut to exactly ``timeline.num_frames``
(the last clip may run up to 3 frames past the audio end, see
:mod:`avatar_cascade.timeline`). The audio is muxed with exactly
``timeline.num_samples`` samples, so picture and sound end together.

Clips arrive from an iterable (typically a generator that decodes or
generates one clip at a time) and only one clip is held at a time.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from .errors import InputError
from .media import AudioTrack, VideoWriter, resample
from .runtime import Runtime
from .timeline import Timeline

log = logging.getLogger(__name__)


@dataclass
class StitchResult:
    """What was written: ``num_frames`` frames of ``width`` x ``height`` at ``fps``,
    with ``audio_samples`` samples of audio at the timeline's sample rate."""

    path: Path
    num_frames: int
    width: int
    height: int
    fps: Fraction
    audio_samples: int


def match_audio_to_timeline(audio: AudioTrack, timeline: Timeline, input_name: str = "audio") -> AudioTrack:
    """Return ``audio`` at the timeline's rate with exactly ``timeline.num_samples`` samples.

    A track whose duration differs from the timeline's by more than one video
    frame is refused (it is not the audio the timeline was planned from);
    smaller differences (resampling rounding) are trimmed or padded with silence.
    """
    wav, sr = audio.waveform, audio.sample_rate
    if sr != timeline.sample_rate:
        wav, sr = resample(wav, sr, timeline.sample_rate), timeline.sample_rate
    n, want = int(wav.shape[1]), timeline.num_samples
    if abs(n - want) > timeline.frame_to_sample(1):
        raise InputError(
            input_name,
            f"{audio.duration_s:.3f} s",
            f"does not match the timeline ({timeline.duration_s:.3f} s)",
            "connect the same audio that built the timeline",
        )
    if n > want:
        wav = wav[:, :want]
    elif n < want:
        wav = torch.nn.functional.pad(wav, (0, want - n))
    return AudioTrack(wav.contiguous(), sr)


def _as_frames(clip: torch.Tensor | np.ndarray, k: int, expected: int, size: tuple[int, int] | None) -> np.ndarray:
    """Validate clip ``k`` (uint8 ``[T, H, W, 3]``) and return it as a numpy array."""
    arr = clip.detach().cpu().numpy() if isinstance(clip, torch.Tensor) else np.asarray(clip)
    shape = tuple(arr.shape)
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3:
        raise InputError(
            f"clips[{k}]", f"{arr.dtype} {shape}", "expected uint8 frames [T, H, W, 3]", "convert the clip to uint8 RGB"
        )
    if arr.shape[0] != expected:
        raise InputError(
            f"clips[{k}]",
            f"{arr.shape[0]} frames",
            f"the timeline's clip {k} has {expected} frames (seam keyframes included)",
            "re-generate the clip with the timeline it was planned for",
        )
    if size is not None and arr.shape[1:3] != size:
        raise InputError(
            f"clips[{k}]",
            f"{arr.shape[2]}x{arr.shape[1]}",
            f"differs from the first clip's size {size[1]}x{size[0]}",
            "render every clip at the same resolution",
        )
    return arr


def stitch_clips(
    clips: Iterable[torch.Tensor | np.ndarray],
    timeline: Timeline,
    audio: AudioTrack,
    out_path: str | Path,
    runtime: Runtime,
    codec: str = "libx264",
    crf: int = 19,
    pix_fmt: str = "yuv420p",
    metadata: dict[str, str] | None = None,
) -> StitchResult:
    """Stream the sub-clips of ``timeline`` into ``out_path`` with ``audio`` muxed in sync.

    Args:
        clips: clip ``k``'s frames as uint8 ``[T_k, H, W, 3]`` with
            ``T_k == timeline.clips[k].num_frames``, yielded lazily in order.
        timeline: the master timeline the clips were made for.
        audio: the track the timeline was planned from (resampled / trimmed to
            exactly ``timeline.num_samples`` samples at ``timeline.sample_rate`` Hz).
        out_path: video file (.mp4, .mov, .mkv, .webm); written atomically.
        runtime: progress (one step per clip) and interruption between clips.
        codec, crf, pix_fmt: video encoder settings.
        metadata: container tags, e.g. ``{"comment": workflow_json}``.

    An error or interruption leaves no file at ``out_path`` (an existing file
    there is replaced only on success).
    """
    out_path = Path(out_path)
    track = match_audio_to_timeline(audio, timeline)
    n_clips = len(timeline.clips)
    it = iter(clips)
    progress = runtime.progress(n_clips, "stitch")
    writer: VideoWriter | None = None
    size: tuple[int, int] | None = None
    try:
        for k, sub in enumerate(timeline.clips):
            runtime.check_interrupt()
            clip = next(it, None)
            if clip is None:
                raise InputError(
                    "clips", f"{k} clips", f"the timeline has {n_clips} clips", "pass one clip per sub-clip"
                )
            frames = _as_frames(clip, k, sub.num_frames, size)
            del clip
            if writer is None:
                size = (int(frames.shape[1]), int(frames.shape[2]))
                audio_codec = "libopus" if out_path.suffix.lower() == ".webm" else "aac"
                writer = VideoWriter(
                    out_path, timeline.fps, size[1], size[0], codec, crf, pix_fmt, track, audio_codec, metadata
                )
                writer.open()
            frames = frames if k == 0 else frames[1:]  # the seam keyframe was written by clip k-1
            frames = frames[: max(0, timeline.num_frames - writer.frames_written)]
            if len(frames):
                writer.write(frames)
            del frames
            progress.update(1)
        if next(it, None) is not None:
            raise InputError(
                "clips", f"more than {n_clips} clips", "the timeline has fewer clips", "pass one per sub-clip"
            )
        if writer.frames_written != timeline.num_frames:  # pragma: no cover - guarded by the shape checks above
            raise RuntimeError(f"wrote {writer.frames_written} frames, the timeline has {timeline.num_frames}")
        writer.close()
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    finally:
        progress.close()
    assert size is not None
    log.info("stitched %d clips -> %s (%d frames)", n_clips, out_path, timeline.num_frames)
    return StitchResult(out_path, timeline.num_frames, size[1], size[0], timeline.fps, track.num_samples)

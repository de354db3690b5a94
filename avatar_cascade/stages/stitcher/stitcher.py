"""Clip stitcher: join sub-clips into one video file with the audio, at constant memory.

Sub-clip ``k`` renders timeline frames ``render_start..render_end`` (inclusive;
``frame_start..frame_end`` when the timeline declares no overlap). Frames
rendered by two neighbouring clips are joined as follows:

* one shared frame (the seam keyframe, the default layout): kept once, from the
  earlier clip;
* ``m > 1`` shared frames (a timeline with blending overlap): with
  ``crossfade`` a linear blend, frame ``i`` of the overlap being
  ``(1 - w) * earlier + w * later`` with ``w = i / (m - 1)``; without it a cut
  just after the seam keyframe (the middle frame). In general every clip has a
  weight per frame that ramps up across its overlap with the previous clip and
  down across its overlap with the next (:func:`join_weight`), and a frame is
  the weighted mean of the clips that rendered it, so frames rendered by three
  clips (overlap of half a clip) are handled too.

Each clip can first be colour-matched to its two keyframes
(:mod:`avatar_cascade.stages.stitcher.colour`). The joined sequence is cut to exactly
``timeline.num_frames`` frames (the last clip may run up to 3 frames past the
audio end). The joined frames then go through the output stream
(:mod:`avatar_cascade.stages.stitcher.output`): an optional upscale model and / or
resize to ``output_height`` (:mod:`.upscale`), and with ``interpolate`` n > 1 the
``n - 1`` motion-compensated in-between frames of every pair of consecutive frames
(:mod:`.interpolate`), written at n times the rate: ``n (N - 1) + 1`` frames, plus
the last frame held while the audio needs it, so the video keeps the timeline rule
``frames = ceil(duration * fps)`` at the new rate (exact rational arithmetic). The
audio is muxed with exactly ``timeline.num_samples`` samples either way.

Clips arrive from an iterable (typically a generator that loads one clip at a
time); only the current clip and the previous clip's overlap frames are held.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch

from avatar_cascade.artefacts.timeline import Timeline, frames_for_samples
from avatar_cascade.core.errors import InputError
from avatar_cascade.core.runtime import Runtime
from avatar_cascade.media import AudioTrack, VideoWriter, resample
from avatar_cascade.media.output import container_codecs
from avatar_cascade.stages.stitcher.interpolate import FrameInterpolator
from avatar_cascade.stages.stitcher.output import OutputStream
from avatar_cascade.stages.stitcher.settings import CODECS, PIX_FMTS, StitcherSettings
from avatar_cascade.stages.stitcher.upscale import FrameScaler

log = logging.getLogger(__name__)

DEFAULT_IMAGE_FRAMES = 300


@dataclass
class StitchResult:
    """What was written: ``num_frames`` frames of ``width`` x ``height`` at ``fps``, with
    ``audio_samples`` samples of audio at the timeline's sample rate; ``frames`` holds the
    output frames ``[N, H, W, 3]`` uint8 when they were collected (short videos), else None."""

    path: Path
    num_frames: int
    width: int
    height: int
    fps: Fraction
    audio_samples: int
    frames: torch.Tensor | None = None


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


def resolve_codec(codec: str, pix_fmt: str) -> str:
    """The FFmpeg encoder for ``codec`` (``h264``/``h265`` or an encoder name), checked with ``pix_fmt``."""
    import av

    name = CODECS.get(codec, codec)
    try:
        enc = av.codec.Codec(name, "w")
    except Exception as exc:  # PyAV raises its own error types for unknown codecs
        raise InputError("codec", codec, "this PyAV/FFmpeg build has no such video encoder", "use h264") from exc
    formats = {f.name for f in (enc.video_formats or [])}
    if pix_fmt not in PIX_FMTS or (formats and pix_fmt not in formats):
        raise InputError("pix_fmt", pix_fmt, f"is not supported here with {name}", f"use one of {', '.join(PIX_FMTS)}")
    return name


class _EncoderWriter(VideoWriter):
    """``VideoWriter`` plus encoder options it does not take itself: a preset, a quiet x265, the
    ``hvc1`` tag players need for H.265 in mp4/mov."""

    def __init__(self, *args, preset: str | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._preset = preset

    def _add_stream(self, codec, input_name, rate, options):
        if input_name == "codec":
            options = dict(options)
            if self._preset:
                options["preset"] = self._preset
            if codec == "libx265":
                options["x265-params"] = "log-level=error"
        stream = super()._add_stream(codec, input_name, rate, options)
        if input_name == "codec" and codec == "libx265" and self.fmt in ("mp4", "mov"):
            stream.codec_tag = "hvc1"
        return stream


def clip_spans(timeline: Timeline) -> list[tuple[int, int]]:
    """``(render_start, render_end)`` of every clip, checked: the clips cover ``0..num_frames-1`` in
    order, each overlapping or abutting the previous one (starts and ends increase)."""
    spans = [(c.render_start, c.render_end) for c in timeline.clips]

    def bad(problem: str) -> InputError:
        return InputError("timeline", f"{len(spans)} clips", problem, "rebuild the timeline with the Audio Aligner")

    if not spans or spans[0][0] != 0:
        raise bad("the first clip must start at frame 0")
    for k in range(1, len(spans)):
        (a0, b0), (a1, b1) = spans[k - 1], spans[k]
        if a1 > b0 + 1 or a1 <= a0 or b1 <= b0:
            raise bad(f"clip {k} ({a1}-{b1}) does not follow clip {k - 1} ({a0}-{b0})")
    if spans[-1][1] + 1 < timeline.num_frames:
        raise bad(f"the clips end at frame {spans[-1][1]}, the video has {timeline.num_frames} frames")
    return spans


def join_weight(f: int, span: tuple[int, int], prev_end: int | None, next_start: int | None, crossfade: bool) -> float:
    """Weight of a clip rendering ``span`` at frame ``f``: ramps up across its overlap with the previous
    clip and down across its overlap with the next (linear; 0/1 around the seam keyframe without
    ``crossfade``). Neighbouring weights sum to 1; a single shared frame goes to the earlier clip."""
    rs, re = span
    w = 1.0
    if prev_end is not None and f <= prev_end:
        up = 0.0 if prev_end == rs else (f - rs) / (prev_end - rs)
        w = min(w, up if crossfade else float(up > 0.5))
    if next_start is not None and f >= next_start:
        down = 1.0 if re == next_start else (re - f) / (re - next_start)
        w = min(w, down if crossfade else float(down >= 0.5))
    return w


def blend(contributions: list[tuple[float, np.ndarray]]) -> np.ndarray:
    """One output frame from ``(weight, uint8 frame)`` pairs of the clips that rendered it."""
    live = [(w, fr) for w, fr in contributions if w > 0]
    if len(live) <= 1:
        return live[0][1] if live else contributions[-1][1]
    total = sum(w for w, _ in live)
    acc = sum(fr.astype(np.float32) * (w / total) for w, fr in live)
    return np.rint(acc).astype(np.uint8)


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
    settings: StitcherSettings,
    runtime: Runtime,
    *,
    metadata: dict[str, str] | None = None,
    keyframes: torch.Tensor | None = None,
    collect_frames: int = 0,
    upscale_model: Any = None,
    interpolator_model: Any = None,
) -> StitchResult:
    """Stream the sub-clips of ``timeline`` into ``out_path`` with ``audio`` muxed in sync.

    Args:
        clips: clip ``k``'s frames as uint8 ``[T_k, H, W, 3]`` with ``T_k`` its rendered
            frames (``render_frames``), yielded lazily in order.
        timeline: the master timeline the clips were made for.
        audio: the track the timeline was planned from (resampled / trimmed to
            exactly ``timeline.num_samples`` samples at ``timeline.sample_rate`` Hz).
        out_path: video file (.mp4, .mov, .mkv, .webm); written atomically.
        settings: codec, crf (0-51, lower = better), pix_fmt, preset, colour-match strength
            (0-1), crossfade, interpolate (output frames per timeline frame) and interpolation,
            output_height, upscale_tile; see :class:`StitcherSettings`.
        runtime: progress (one step per clip), interruption between frames, and the
            device colour matching and the upscale model run on.
        metadata: container tags, e.g. ``{"prompt": ..., "workflow": ...}``.
        keyframes: ``[clips + 1, H', W', 3]`` uint8, needed when ``settings.colour_match > 0``.
        collect_frames: also return the output frames when there are at most this many.
        upscale_model: a spandrel image model (ComfyUI's ``UPSCALE_MODEL``) run on every frame
            before the resize to ``settings.output_height``; None = resize only.
        interpolator_model: a RIFE IFNet (:mod:`avatar_cascade.models.rife`), needed and used when
            ``settings.interpolation`` is ``"rife"``.

    An error or interruption leaves no file at ``out_path`` (an existing file
    there is replaced only on success).
    """
    settings.check()
    out_path = Path(out_path)
    video_codec, audio_codec = container_codecs(out_path, settings.codec)  # .webm: VP9 + Opus
    encoder = resolve_codec(video_codec, settings.pix_fmt)
    track = match_audio_to_timeline(audio, timeline)
    spans = clip_spans(timeline)
    n_clips = len(spans)
    if settings.colour_match > 0 and (keyframes is None or len(keyframes) != n_clips + 1):
        got = "none" if keyframes is None else f"{len(keyframes)} keyframes"
        raise InputError(
            "keyframes", got, f"colour matching needs {n_clips + 1} keyframes", "connect the clips' keyframes"
        )
    interpolator = _interpolator(settings, interpolator_model, runtime)
    sink = _output_stream(
        out_path, (encoder, audio_codec), track, timeline, settings, runtime, metadata, collect_frames, upscale_model
    )
    sink.interpolator = interpolator  # flow / blend, or RIFE
    total, fps = sink.total_out, timeline.fps * settings.interpolate
    rife = getattr(interpolator, "model", None)
    try:
        with runtime.use_models(upscale_model.model if upscale_model is not None else None, rife):
            _stream(clips, spans, sink, timeline, settings, keyframes, runtime)
            sink.finish()
        if sink.writer.frames_written != total:  # pragma: no cover - guarded by the layout and shape checks
            raise RuntimeError(f"wrote {sink.writer.frames_written} frames, expected {total}")
        sink.writer.close()
    except BaseException:
        if sink.writer is not None:
            sink.writer.abort()
        raise
    log.info("stitched %d clips -> %s (%d frames at %s fps)", n_clips, out_path, total, fps)
    kept = torch.from_numpy(np.concatenate(sink.kept)) if sink.kept else None
    height, width = sink.size
    return StitchResult(out_path, total, width, height, fps, track.num_samples, kept)


def _interpolator(settings: StitcherSettings, model: Any, runtime: Runtime):
    """The in-between frame maker of ``settings.interpolation`` (``rife``: the learned model, which must be given)."""
    if settings.interpolation != "rife" or settings.interpolate == 1:
        if model is not None:
            why = "interpolate is 1" if settings.interpolate == 1 else f"interpolation is {settings.interpolation}"
            runtime.warn("stitcher", f"the interpolator model is not used: {why}")
        return FrameInterpolator("flow" if settings.interpolation == "rife" else settings.interpolation)
    if model is None:
        raise InputError(
            "interpolator_model", "none", "interpolation 'rife' needs RIFE weights",
            "connect Load Frame Interpolator (models/frame_interpolation) or use --interpolator-model NAME; "
            "or choose interpolation 'flow', which needs no weights",
        )  # fmt: skip
    from avatar_cascade.stages.stitcher.learned import LearnedInterpolator

    return LearnedInterpolator(model, settings.interpolator_scale, settings.interpolator_ensemble)


def _output_stream(
    out_path: Path, codecs: tuple[str, str], track: AudioTrack, timeline: Timeline, settings: StitcherSettings,
    runtime: Runtime, metadata, collect_frames: int, upscale_model,
) -> OutputStream:  # fmt: skip
    """The output stream of ``stitch_clips``: its frame count and rate from the audio (exact rational
    arithmetic), the scaler (upscale model / resize) and writer made at the first frame. ``codecs`` are the
    video encoder and the audio codec (AAC; Opus in .webm)."""
    encoder, audio_codec = codecs
    if upscale_model is not None:
        from avatar_cascade.models.upscale import check_upscale_model

        check_upscale_model(upscale_model)
    factor = settings.interpolate
    fps = timeline.fps * factor
    total = frames_for_samples(timeline.num_samples, fps, timeline.sample_rate) if factor > 1 else timeline.num_frames

    def open_writer(size: tuple[int, int]) -> VideoWriter:
        crf, pix_fmt = settings.crf, settings.pix_fmt
        writer = _EncoderWriter(
            out_path, fps, size[1], size[0], encoder, crf, pix_fmt, track, audio_codec, metadata, preset=settings.preset
        )
        writer.open()
        return writer

    def make_scaler(size: tuple[int, int]) -> FrameScaler:
        return FrameScaler(size, settings.output_height, upscale_model, settings.upscale_tile)

    sink = OutputStream(
        timeline.num_frames,
        factor,
        total,
        0 < total <= collect_frames,
        open_writer,
        make_scaler,
        None,  # stitch_clips sets it
        runtime.check_interrupt,
    )
    return sink


def _stream(clips, spans, sink: OutputStream, timeline, settings: StitcherSettings, keyframes, runtime) -> None:
    """Check, colour-match and join every clip into ``sink`` (its writer opened at the first clip)."""
    colour_device = runtime.device if runtime.device.type == "cuda" else torch.device("cpu")
    n_clips = len(spans)
    it = iter(clips)
    progress = runtime.progress(n_clips, "stitch")
    size: tuple[int, int] | None = None
    pending: dict[int, list[tuple[float, np.ndarray]]] = {}  # frames a later clip also renders
    try:
        for k, (start, end) in enumerate(spans):
            runtime.check_interrupt()
            clip = next(it, None)
            if clip is None:
                raise InputError(
                    "clips", f"{k} clips", f"the timeline has {n_clips} clips", "pass one clip per sub-clip"
                )
            frames = _as_frames(clip, k, end - start + 1, size)
            del clip
            if sink.writer is None:
                size = (int(frames.shape[1]), int(frames.shape[2]))
                sink.start(size)
            if settings.colour_match > 0:
                frames = _colour(frames, keyframes, k, timeline, settings.colour_match, colour_device)
            _join(sink, frames, spans, k, pending, settings.crossfade)
            del frames
            progress.update(1)
        if next(it, None) is not None:
            raise InputError(
                "clips", f"more than {n_clips} clips", "the timeline has fewer clips", "pass one per sub-clip"
            )
    finally:
        progress.close()


def _join(sink: OutputStream, frames: np.ndarray, spans, k: int, pending: dict, crossfade: bool) -> None:
    """Write clip ``k``'s frames that no later clip renders (blended with earlier clips' renderings of
    them); keep copies of the rest, weighted, in ``pending``."""
    start, end = spans[k]
    prev_end = spans[k - 1][1] if k > 0 else None
    next_start = spans[k + 1][0] if k + 1 < len(spans) else None
    final = end if next_start is None else next_start - 1
    out = frames[: max(0, final - start + 1)]
    patched = False
    for f in range(start, end + 1):
        if f > final:
            w = join_weight(f, spans[k], prev_end, next_start, crossfade)
            pending.setdefault(f, []).append((w, frames[f - start].copy()))
        elif f in pending:
            if not patched:
                out, patched = out.copy(), True
            w = join_weight(f, spans[k], prev_end, next_start, crossfade)
            out[f - start] = blend([*pending.pop(f), (w, frames[f - start])])
    sink.push(out)


def _colour(frames: np.ndarray, keyframes: torch.Tensor, k: int, timeline: Timeline, strength: float, device):
    from avatar_cascade.stages.stitcher.colour import match_clip_colour

    c = timeline.clips[k]
    offsets = c.keyframe_offsets
    out = match_clip_colour(torch.from_numpy(frames), keyframes[k], keyframes[k + 1], strength, offsets, device=device)
    return out.numpy()

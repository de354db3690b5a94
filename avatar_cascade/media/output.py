"""Output video files checked before the render: the container of the extension, and an encoder it can hold.

:data:`VIDEO_SUFFIXES` is every extension offered; :func:`container_codecs` gives the encoders a
container is written with, and :func:`check_video_output` opens the container and its streams in
memory (no file, no frames), so a combination FFmpeg refuses is one clear error before any model runs.
WebM holds only VP8/VP9/AV1 + Opus/Vorbis: H.264 / H.265 (the default) become VP9 there, with a warning.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

from avatar_cascade.core.errors import InputError
from avatar_cascade.core.paths import check_output_file

log = logging.getLogger(__name__)

CONTAINERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm"}
VIDEO_SUFFIXES = tuple(CONTAINERS)
_WEBM_VIDEO = ("libvpx-vp9", "libvpx", "libsvtav1", "libaom-av1")
_H26X = ("h264", "h265", "libx264", "libx265")
_ALIASES = {"h264": "libx264", "h265": "libx265"}


def container_codecs(path: str | Path, codec: str) -> tuple[str, str]:
    """``(video codec, audio codec)`` for writing ``path``: ``codec`` as given, except H.264/H.265 in a
    .webm (which cannot hold them) become ``libvpx-vp9``; audio is Opus in .webm, AAC elsewhere."""
    if Path(path).suffix.lower() != ".webm":
        return codec, "aac"
    if codec in _H26X:
        log.warning("%s: WebM holds VP9/AV1, not %s: encoding with libvpx-vp9 (use .mp4 for H.264)", path, codec)
        codec = "libvpx-vp9"
    return codec, "libopus"


def check_video_output(
    path: str | Path, codec: str, input_name: str = "out", codec_name: str = "codec"
) -> tuple[str, str]:
    """Check an output video path and its encoders before rendering; returns ``container_codecs``.

    The path: a known extension, not a folder, a writable place. The encoders: the container and
    both streams are opened in memory (PyAV), so an encoder the container cannot hold is refused now.
    """
    import av

    check_output_file(Path(path), input_name, VIDEO_SUFFIXES)
    fmt = CONTAINERS[Path(path).suffix.lower()]
    video, audio = container_codecs(path, codec)
    video = _ALIASES.get(video, video)
    try:
        av.codec.Codec(video, "w")
    except Exception as exc:  # PyAV raises its own error types for unknown codecs
        raise InputError(codec_name, codec, "this PyAV/FFmpeg build has no such video encoder", "use h264") from exc
    container = av.open(io.BytesIO(), "w", format=fmt)
    try:
        for name, what, rate in ((video, codec_name, 16), (audio, "audio", 48000)):
            try:
                container.add_stream(name, rate=rate)
            except Exception as exc:  # PyAV raises ValueError, FFmpegError or its own codec errors
                raise InputError(
                    what, name, f"cannot be written to a {Path(path).suffix} file ({exc})", "use .mp4 with h264"
                ) from exc
    finally:
        container.close()
    return video, audio

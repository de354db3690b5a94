"""Video: stream frames + audio into a file (PyAV), and probe media files exactly."""

from __future__ import annotations

import errno
import logging
import os
import tempfile
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch

from avatar_cascade.core.errors import InputError
from avatar_cascade.core.locks import hold, sweep_stale
from avatar_cascade.media.audio import AudioTrack, decode_audio, resample
from avatar_cascade.media.files import check_file

log = logging.getLogger(__name__)

_CONTAINER_FORMATS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm"}
_CRF_CODECS = {"libx264", "libx265", "libvpx-vp9", "libaom-av1", "libsvtav1"}


class VideoWriter:
    """Stream RGB frames (and optionally an audio track) into a video file.

    Frames go straight to the encoder (nothing is accumulated); frame ``i`` has
    ``pts = i`` in ``time_base = 1/fps``. Audio is interleaved as frames arrive
    and exactly ``audio.num_samples`` samples are encoded (resampled first if
    the audio codec cannot take its rate). Odd width/height are padded by one
    edge-replicated row/column for yuv420p. The file is written to a hidden
    ``.partial`` file in the same folder and renamed to ``path`` only on a
    clean close; any exception (KeyboardInterrupt included) removes it.
    ``metadata`` (e.g. ``{"comment": workflow_json}``) is stored in the container.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        fps: Fraction,
        width: int,
        height: int,
        codec: str = "libx264",
        crf: int = 19,
        pix_fmt: str = "yuv420p",
        audio: AudioTrack | None = None,
        audio_codec: str = "aac",
        metadata: dict[str, str] | None = None,
    ) -> None:
        self.path = Path(path)
        self.fps = Fraction(fps)
        self.width, self.height = int(width), int(height)
        if self.width < 2 or self.height < 2:
            raise InputError("size", f"{width}x{height}", "video frames are too small", "use at least 2x2 pixels")
        pad = pix_fmt in ("yuv420p", "yuv420p10le", "nv12")
        self.out_width = self.width + (self.width % 2 if pad else 0)
        self.out_height = self.height + (self.height % 2 if pad else 0)
        self.fmt = _CONTAINER_FORMATS.get(self.path.suffix.lower())
        if self.fmt is None:
            raise InputError(
                "path", str(path), "unknown video container", f"end the name in {sorted(_CONTAINER_FORMATS)}"
            )
        self.codec, self.crf, self.pix_fmt, self.audio_codec = codec, crf, pix_fmt, audio_codec
        self.audio, self.metadata = audio, dict(metadata or {})
        self.frames_written = 0
        self._container: Any = None
        self._tmp: Path | None = None

    def __enter__(self) -> VideoWriter:
        self.open()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def open(self) -> None:
        import av

        self.path.parent.mkdir(parents=True, exist_ok=True)
        sweep_stale(self.path.parent, (f".{self.path.name}.*.partial",))  # left by killed writers
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".partial")
        hold(fd)  # locked while written: a sweep by another writer leaves it alone
        self._tmp, self._tmp_fd = Path(tmp), fd
        try:
            if self.audio is not None:
                self._prepare_audio()
            options = {"movflags": "use_metadata_tags"} if self.fmt in ("mp4", "mov") else {}
            if self.audio is not None and self.fmt in ("mp4", "mov"):
                options["movie_timescale"] = str(self._audio_sr)  # edit list exact to the sample
            self._container = av.open(str(self._tmp), "w", format=self.fmt, options=options)
            for k, v in self.metadata.items():
                self._container.metadata[str(k)] = str(v)
            opts = {"crf": str(self.crf)} if self.codec in _CRF_CODECS else {}
            self._video = self._add_stream(self.codec, "codec", self.fps, opts)
            self._video.width, self._video.height, self._video.pix_fmt = self.out_width, self.out_height, self.pix_fmt
            self._video.time_base = self._video.codec_context.time_base = 1 / self.fps
            if self.audio is not None:
                self._open_audio()
        except BaseException:
            self.abort()
            raise

    def _add_stream(self, codec: str, input_name: str, rate: Any, options: dict) -> Any:
        import av

        try:
            return self._container.add_stream(codec, rate=rate, options=options)
        except (av.FFmpegError, ValueError) as exc:
            raise InputError(
                input_name,
                codec,
                f"cannot be written to a {self.fmt} file ({exc})",
                "use libx264 + aac for .mp4, or pick another container",
            ) from exc

    def _prepare_audio(self) -> None:
        """Check the audio codec; resample/downmix the track to what it accepts."""
        import av

        try:
            self._acodec = av.codec.Codec(self.audio_codec, "w")
        except ValueError as exc:
            raise InputError("audio_codec", self.audio_codec, "is not an audio encoder FFmpeg has", "use aac") from exc
        sr, wav = self.audio.sample_rate, self.audio.waveform
        rates = self._acodec.audio_rates
        if rates and sr not in rates:
            target = min((r for r in rates if r >= sr), default=max(rates))
            log.info("audio: resampling %d -> %d Hz for %s", sr, target, self.audio_codec)
            wav, sr = resample(wav, sr, target), target
        if wav.shape[0] > 8:  # beyond 7.1 no common codec/layout exists: downmix
            log.info("audio: %d channels downmixed to mono", wav.shape[0])
            wav = wav.mean(dim=0, keepdim=True)
        self._audio_np = np.ascontiguousarray(wav.detach().cpu().float().numpy())
        self._audio_sr, self._audio_pos = sr, 0

    def _open_audio(self) -> None:
        ch = self._audio_np.shape[0]
        self._layout = {1: "mono", 2: "stereo"}.get(ch, f"{ch}c")
        self._astream = self._add_stream(self.audio_codec, "audio_codec", self._audio_sr, {})
        self._astream.layout = self._layout
        self._astream.bit_rate = min(96000 * ch, 512000)  # FFmpeg's 128 kb/s AAC default is audibly lossy in stereo
        formats = [f.name for f in (self._acodec.audio_formats or [])]
        self._astream.format = next((f for f in ("fltp", "flt") if f in formats), formats[0] if formats else "fltp")

    def _mux_audio_until(self, end: int) -> None:
        import av

        end = min(end, self._audio_np.shape[1])
        while self._audio_pos < end:
            n = min(end - self._audio_pos, 4096)
            # packed (interleaved) float: PyAV's planar from_ndarray mishandles 8 channels
            chunk = np.ascontiguousarray(self._audio_np[:, self._audio_pos : self._audio_pos + n].T).reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(chunk, format="flt", layout=self._layout)
            frame.sample_rate, frame.pts, frame.time_base = self._audio_sr, self._audio_pos, Fraction(1, self._audio_sr)
            self._container.mux(self._astream.encode(frame))
            self._audio_pos += n

    def write(self, frames: torch.Tensor | np.ndarray) -> None:
        """Encode uint8 RGB frames ``[N, H, W, 3]`` (or one ``[H, W, 3]``)."""
        import av

        if self._container is None:
            raise RuntimeError("VideoWriter is not open; use it as a context manager")
        arr = frames.detach().cpu().numpy() if isinstance(frames, torch.Tensor) else np.asarray(frames)
        arr = arr[None] if arr.ndim == 3 else arr
        if arr.ndim != 4 or arr.shape[1:] != (self.height, self.width, 3) or arr.dtype != np.uint8:
            raise InputError(
                "frames",
                f"{arr.dtype} {tuple(arr.shape)}",
                "do not match the video",
                f"pass uint8 frames of shape [N, {self.height}, {self.width}, 3]",
            )
        if (self.out_height, self.out_width) != (self.height, self.width):
            ph, pw = self.out_height - self.height, self.out_width - self.width
            arr = np.pad(arr, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="edge")
        try:
            for img in arr:
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
                frame.pts = self.frames_written
                self._container.mux(self._video.encode(frame))
                self.frames_written += 1
            if self.audio is not None:
                t = Fraction(self.frames_written) / self.fps
                self._mux_audio_until(int(t * self._audio_sr))
        except OSError as exc:
            self.abort()
            self._raise_disk_full(exc)
            raise

    def close(self) -> None:
        """Flush the encoders, mux the rest of the audio and move the file into place."""
        if self._container is None:
            return
        try:
            if self.frames_written == 0:
                raise InputError("frames", 0, "no frames were written", "write at least one frame before closing")
            self._container.mux(self._video.encode(None))
            if self.audio is not None:
                self._mux_audio_until(self._audio_np.shape[1])
                self._container.mux(self._astream.encode(None))
            self._container.close()
            self._container = None
            os.chmod(self._tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a finished video is a normal file
            os.replace(self._tmp, self.path)
            self._tmp = None
            self._release_tmp()
        except OSError as exc:
            self.abort()
            self._raise_disk_full(exc)
            raise
        except BaseException:
            self.abort()
            raise
        log.info("wrote %s (%d frames)", self.path, self.frames_written)

    def _raise_disk_full(self, exc: OSError) -> None:
        """Turn "no space left on device" into an error that says what to do (the partial is gone)."""
        if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
            raise InputError(
                "output",
                str(self.path),
                "the disk is full (no space left on device); nothing was written there",
                "free some disk space, or write the video to another drive",
            ) from exc

    def abort(self) -> None:
        """Drop the partial file; nothing is left at ``path``."""
        if self._container is not None:
            try:
                self._container.close()
            except Exception:  # closing a half-written file may fail; it is deleted anyway
                log.debug("closing a partial video failed", exc_info=True)
            self._container = None
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)
            self._tmp = None
        self._release_tmp()

    def _release_tmp(self) -> None:
        if getattr(self, "_tmp_fd", None) is not None:
            os.close(self._tmp_fd)
            self._tmp_fd = None


def probe_media(path: str | os.PathLike) -> dict:
    """Describe a media file by decoding it (exact counts, for tests and checks).

    Returns ``{"streams": [{"type", "codec"}], "metadata": {...}, "duration_s",
    "video": {"frames", "fps", "width", "height", "duration_s"} | None,
    "audio": {"samples", "sample_rate", "channels", "codec", "duration_s"} | None}``,
    plus flat shortcuts ``video_frames``, ``fps``, ``width``, ``height``,
    ``audio_samples``, ``sample_rate`` (None for a missing stream). Audio samples
    are decoded and trimmed of codec padding like :func:`load_audio`.
    """
    import av

    p = check_file(path, "path", "media")
    info: dict = {"video": None, "audio": None}
    with av.open(str(p)) as c:
        info["streams"] = [
            {"type": s.type, "codec": s.codec_context.name if s.codec_context else None} for s in c.streams
        ]
        info["metadata"] = dict(c.metadata)
        info["duration_s"] = None if c.duration is None else c.duration / 1_000_000
        if c.streams.video:
            v = c.streams.video[0]
            fps = v.average_rate or v.guessed_rate
            frames = sum(1 for _ in c.decode(v))
            info["video"] = {
                "frames": frames,
                "fps": Fraction(fps) if fps else None,
                "width": v.width,
                "height": v.height,
                "duration_s": float(frames / fps) if fps else None,
            }
    if info["streams"] and any(s["type"] == "audio" for s in info["streams"]):
        wav, sr, codec = decode_audio(p, "path", None)
        info["audio"] = {
            "samples": wav.shape[1],
            "sample_rate": sr,
            "channels": wav.shape[0],
            "codec": codec,
            "duration_s": wav.shape[1] / sr,
        }
    v, a = info["video"] or {}, info["audio"] or {}
    info.update(video_frames=v.get("frames"), fps=v.get("fps"), width=v.get("width"), height=v.get("height"))
    info.update(audio_samples=a.get("samples"), sample_rate=a.get("sample_rate"))
    return info


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask

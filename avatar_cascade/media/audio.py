"""Audio: decode any file PyAV reads into an :class:`AudioTrack` (``[C, T]`` float32, Hz)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch

from avatar_cascade.core.errors import InputError
from avatar_cascade.media.files import check_file

log = logging.getLogger(__name__)

#: Decoded AAC/MP3 comes back padded to whole codec frames; excess up to this many
#: samples beyond the stream's declared duration is trimmed as padding.
MAX_CODEC_PADDING = 8192


@dataclass
class AudioTrack:
    """Audio as ``waveform`` ``[C, T]`` float32 in -1..1 at ``sample_rate`` Hz."""

    waveform: torch.Tensor
    sample_rate: int

    def __post_init__(self) -> None:
        if self.waveform.ndim != 2:
            raise InputError("audio", tuple(self.waveform.shape), "waveform must be [channels, samples]", "pass [C, T]")
        if int(self.sample_rate) <= 0:
            raise InputError("audio", self.sample_rate, "sample rate must be positive", "pass the real rate in Hz")
        self.sample_rate = int(self.sample_rate)

    @property
    def num_samples(self) -> int:
        return int(self.waveform.shape[1])

    @property
    def num_channels(self) -> int:
        return int(self.waveform.shape[0])

    @property
    def duration_s(self) -> float:
        return self.num_samples / self.sample_rate

    def mono(self) -> torch.Tensor:
        """Mean of the channels, ``[T]``."""
        return to_mono(self.waveform)

    def to_comfy(self) -> dict:
        """ComfyUI AUDIO: ``{"waveform": [1, C, T], "sample_rate": sr}``."""
        return {"waveform": self.waveform.unsqueeze(0), "sample_rate": self.sample_rate}

    @classmethod
    def from_comfy(cls, d: Any, input_name: str = "audio") -> AudioTrack:
        """Accept a ComfyUI AUDIO dict holding a batch of one."""
        if not isinstance(d, dict) or "waveform" not in d or "sample_rate" not in d:
            raise InputError(
                input_name,
                type(d).__name__,
                "is not an AUDIO (needs waveform and sample_rate)",
                "connect an AUDIO output such as Load Audio",
            )
        wav = torch.as_tensor(d["waveform"])
        if wav.ndim == 3:
            if wav.shape[0] != 1:
                raise InputError(
                    input_name,
                    f"batch of {wav.shape[0]}",
                    "only one audio track can drive a video",
                    "split the batch and pick one track",
                )
            wav = wav[0]
        if wav.ndim != 2 or wav.shape[-1] == 0:
            raise InputError(
                input_name, tuple(wav.shape), "expected waveform [1, C, T] with T > 0", "connect a non-empty AUDIO"
            )
        wav = _integer_to_float(wav.detach().cpu(), input_name).float().contiguous()
        if not torch.isfinite(wav).all():
            raise InputError(
                input_name, "waveform with NaN/inf", "contains NaN or infinite samples", "fix or re-export the audio"
            )
        peak = float(wav.abs().max())
        if peak > 1.0:  # like load_audio: scaled down, never clipped (and never fed to the aligner at 1e30)
            log.warning("%s: peak %.3g above full scale, scaling down to 1.0", input_name, peak)
            wav = wav / peak
        return cls(wav, int(d["sample_rate"]))


def _integer_to_float(wav: torch.Tensor, input_name: str) -> torch.Tensor:
    """Integer PCM samples (an int16 / int32 / uint8 AUDIO tensor) scaled to -1..1; float passes through."""
    if wav.is_floating_point():
        return wav
    if wav.dtype == torch.uint8:
        log.info("%s: 8-bit unsigned samples scaled to -1..1", input_name)
        return (wav.float() - 128.0) / 128.0
    if wav.dtype in (torch.int16, torch.int32, torch.int64):
        bits = {torch.int16: 15, torch.int32: 31, torch.int64: 31}[wav.dtype]
        log.info("%s: %s samples scaled to -1..1", input_name, str(wav.dtype).replace("torch.", ""))
        return wav.double().div(float(2**bits)).float()
    raise InputError(input_name, str(wav.dtype), "is not a sample type audio can have", "pass float32 samples in -1..1")


def resample(waveform: torch.Tensor, sample_rate: int, target_rate: int) -> torch.Tensor:
    """Resample ``[C, T]`` (or ``[T]``) from ``sample_rate`` to ``target_rate`` Hz (torchaudio sinc)."""
    if int(sample_rate) == int(target_rate):
        return waveform
    import torchaudio.functional as AF

    return AF.resample(waveform.float(), int(sample_rate), int(target_rate))


def to_mono(waveform: torch.Tensor) -> torch.Tensor:
    """Downmix ``[C, T]`` to ``[T]`` by the channel mean; ``[T]`` is returned as is."""
    return waveform if waveform.ndim == 1 else waveform.mean(dim=0)


def _frame_to_float(frame: Any, state: dict) -> np.ndarray:
    """One decoded audio frame as ``[C, n]`` float32."""
    import av
    from av.audio.frame import format_dtypes

    channels = frame.layout.nb_channels
    # s64 has no numpy path in PyAV, and PyAV miscounts the planes of planar frames with
    # 8+ channels (reading them crashes): let swresample interleave those to packed float
    if frame.format.name not in format_dtypes or (frame.format.is_planar and channels >= 8):
        if "resampler" not in state:
            state["resampler"] = av.AudioResampler(format="flt", layout=frame.layout, rate=frame.sample_rate)
        return np.concatenate([_frame_to_float(f, state) for f in state["resampler"].resample(frame)], axis=1)
    arr = frame.to_ndarray()
    if not frame.format.is_planar:
        arr = arr.reshape(-1, channels).T
    if arr.dtype == np.uint8:
        return (arr.astype(np.float32) - 128.0) / 128.0
    if arr.dtype.kind == "i":
        return (arr.astype(np.float32) / float(2 ** (8 * arr.dtype.itemsize - 1))).astype(np.float32)
    return arr.astype(np.float32)


def _declared_samples(stream: Any, container: Any, sample_rate: int) -> int | None:
    if stream.duration is not None and stream.time_base is not None:
        return round(stream.duration * stream.time_base * sample_rate)
    if container.duration is not None:
        return round(Fraction(container.duration, 1_000_000) * sample_rate)
    return None


def decode_audio(path: Path, input_name: str, max_duration_s: float | None) -> tuple[np.ndarray, int, str]:
    """Decode the first audio stream of ``path``: ``([C, T] float32, sample_rate, codec name)``."""
    import av

    fix = "re-export it as WAV, FLAC, MP3 or M4A"
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                if container.streams.video:
                    raise InputError(
                        input_name,
                        str(path),
                        "has no audio stream",
                        "add a sound track to the video, or pick the audio file itself",
                    )
                raise InputError(input_name, str(path), "contains no audio stream", "pick an audio file")
            stream = container.streams.audio[0]
            chunks: list[np.ndarray] = []
            state: dict = {}
            total, sr, ch = 0, None, None
            for frame in container.decode(stream):
                if sr is None:
                    sr, ch = frame.sample_rate, frame.layout.nb_channels
                elif (frame.sample_rate, frame.layout.nb_channels) != (sr, ch):
                    raise InputError(input_name, str(path), "changes sample rate or channel count mid-stream", fix)
                chunk = _frame_to_float(frame, state)
                chunks.append(chunk)
                total += chunk.shape[1]
                if max_duration_s is not None and total > max_duration_s * sr + MAX_CODEC_PADDING:
                    raise InputError(
                        input_name,
                        str(path),
                        f"is longer than the limit of {max_duration_s:g} s",
                        "cut the audio shorter or raise the limit",
                    )
            codec = stream.codec_context.name
            declared = _declared_samples(stream, container, sr) if sr else None
    except av.FFmpegError as exc:
        raise InputError(input_name, str(path), f"could not be decoded as audio ({exc})", fix) from exc
    if total == 0 or sr is None:
        raise InputError(input_name, str(path), "contains no audio samples (0 s)", "pick a track with sound")
    wav = np.concatenate(chunks, axis=1)
    if declared is not None and 0 < declared < total <= declared + MAX_CODEC_PADDING:
        wav = wav[:, :declared]  # codec padding past the stream's real end (AAC, MP3)
    return wav, sr, codec


def load_audio(path: str | os.PathLike, input_name: str = "audio", max_duration_s: float | None = None) -> AudioTrack:
    """Decode the first audio stream of any file PyAV reads (audio or video container).

    Integer samples are scaled to -1..1; float audio whose peak exceeds 1 is
    scaled down to a peak of 1 (never clipped). Codec padding is trimmed to the
    stream's declared duration. Refuses missing, empty, corrupt or silent-length
    files, NaN/inf samples and audio longer than ``max_duration_s`` seconds.
    """
    p = check_file(path, input_name, "audio")
    wav, sr, _ = decode_audio(p, input_name, max_duration_s)
    if not np.isfinite(wav).all():
        raise InputError(input_name, str(path), "contains NaN or infinite samples", "re-export the audio")
    if max_duration_s is not None and wav.shape[1] > max_duration_s * sr:
        raise InputError(
            input_name,
            str(path),
            f"lasts {wav.shape[1] / sr:.2f} s, over the limit of {max_duration_s:g} s",
            "cut the audio shorter or raise the limit",
        )
    peak = float(np.abs(wav).max())
    if peak > 1.0:
        log.warning("%s: peak %.3f above full scale, scaling down to 1.0", input_name, peak)
        wav = wav / peak
    return AudioTrack(torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32)), sr)

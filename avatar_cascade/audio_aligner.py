"""Audio Aligner stage: audio in, the frame-exact master timeline out.

Also extracts wav2vec2-family features once for the whole track (when an audio
encoder is given) and resamples them to the video frame rate, so every
sub-clip can slice its own time-aligned window.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import InputError
from .media import AudioTrack, resample, to_mono
from .runtime import Runtime
from .timeline import Timeline, plan_timeline

log = logging.getLogger(__name__)

FEATURE_RATE = 16000
SILENCE_DBFS = -60.0


@dataclass
class AlignedAudio:
    """The ``AVATAR_TIMELINE`` artefact: timeline + the audio it was built from.

    Attributes:
        timeline: the master timeline.
        audio: the (validated) audio track, original rate and channels, for muxing.
        features: optional ``[layers, padded_frames, dim]`` fp16 audio features at
            video fps (one row per output frame; rows past the audio end are zero).
    """

    timeline: Timeline
    audio: AudioTrack
    features: torch.Tensor | None = None

    def save(self, folder: Path) -> None:
        """Write ``timeline.json`` (and ``audio_features.safetensors``) into ``folder``."""
        from safetensors.torch import save_file

        folder.mkdir(parents=True, exist_ok=True)
        (folder / "timeline.json").write_text(self.timeline.to_json())
        if self.features is not None:
            save_file({"features": self.features.contiguous()}, str(folder / "audio_features.safetensors"))


def peak_dbfs(waveform: torch.Tensor) -> float:
    peak = float(waveform.abs().max()) if waveform.numel() else 0.0
    return -float("inf") if peak <= 0 else 20.0 * torch.log10(torch.tensor(peak)).item()


def features_to_video_rate(hidden: torch.Tensor, num_frames: int) -> torch.Tensor:
    """Linearly resample ``[layers, T_feat, dim]`` features to ``num_frames`` rows."""
    import torch.nn.functional as F

    x = hidden.permute(0, 2, 1).float()  # [L, D, T]
    x = F.interpolate(x, size=num_frames, mode="linear", align_corners=False)
    return x.permute(0, 2, 1)


def align_audio(
    audio: AudioTrack,
    fps: float | str,
    clip_frames: int,
    runtime: Runtime,
    audio_encoder=None,
    feature_pad_s: float = 0.5,
) -> AlignedAudio:
    """Build the timeline for ``audio`` and (optionally) its per-frame features.

    Args:
        audio: decoded audio (any rate / channel count).
        fps: output video frame rate (exact rationals accepted, e.g. "30000/1001").
        clip_frames: nominal sub-clip length (4n+1 frames).
        runtime: device and hooks for the encoder.
        audio_encoder: an ``AudioEncoder`` or None (timeline only).
        feature_pad_s: audio context on both sides of each clip window, seconds.
    """
    wf = audio.waveform
    if not torch.isfinite(wf).all():
        raise InputError("audio", "NaN/inf samples", "the audio contains invalid samples", "re-export the audio track")
    timeline = plan_timeline(audio.num_samples, audio.sample_rate, fps, clip_frames, feature_pad_s)
    level = peak_dbfs(wf)
    timeline.meta["peak_dbfs"] = level
    if level < SILENCE_DBFS:
        msg = f"the audio is silent (peak {level:.1f} dBFS): the avatar will not speak"
        log.warning(msg)
        timeline.meta.setdefault("warnings", []).append(msg)

    features = None
    if audio_encoder is not None:
        mono16 = resample(to_mono(wf)[None], audio.sample_rate, FEATURE_RATE)[0]
        with runtime.use_models(audio_encoder.model):
            hidden = audio_encoder.encode(mono16.to(runtime.device))
        feats = features_to_video_rate(hidden.cpu(), timeline.num_frames)
        tail = timeline.padded_frames - timeline.num_frames  # frames past the audio end hear silence
        if tail:
            feats = torch.cat([feats, feats.new_zeros(feats.shape[0], tail, feats.shape[2])], dim=1)
        features = feats.half()
    log.info(
        "timeline: %d frames at %s fps, %d clips of %d frames, %.2f s audio",
        timeline.num_frames,
        timeline.fps,
        len(timeline.clips),
        clip_frames,
        timeline.duration_s,
    )
    return AlignedAudio(timeline=timeline, audio=audio, features=features)

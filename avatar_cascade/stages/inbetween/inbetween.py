"""Keyframes from images: ToonCrafter-style generative in-betweening of drawn keys.

Any batch of ``S >= 2`` images becomes the cascade's keyframes plus a matching
timeline, so the First-Last-Frame Refiner generates the frames between every
pair of consecutive keys and the Clip Stitcher chains the segments:

* segment ``k`` runs from key ``k`` to key ``k+1``, both included, and has
  ``segment_frames`` frames (4n+1, a Wan length);
* key ``k`` is the last frame of segment ``k-1`` and the first frame of segment
  ``k``: the stitcher writes it once, so the video has exactly
  ``(S - 1) * (segment_frames - 1) + 1`` frames and key ``k`` sits at frame
  ``k * (segment_frames - 1)``;
* the audio is the given track cut or padded with silence to the video's
  duration (``frame_to_sample(num_frames)`` samples), or silence.

Keys are fitted to ``width`` x ``height`` by centre-cropping to that aspect
ratio and resizing (no stretching).
"""

from __future__ import annotations

import logging

import torch

from avatar_cascade.artefacts.aligned_audio import AlignedAudio
from avatar_cascade.artefacts.keyframes import Keyframes
from avatar_cascade.artefacts.storyline import Shot, Storyline
from avatar_cascade.artefacts.timeline import Timeline, check_clip_frames, frame_to_sample, parse_fps, plan_timeline
from avatar_cascade.core.errors import InputError
from avatar_cascade.media import AudioTrack
from avatar_cascade.media.frames import resize_uint8
from avatar_cascade.stages.inbetween.settings import InbetweenSettings

log = logging.getLogger(__name__)

SILENCE_RATE = 16000
KEY_STYLE = "same style, colours and characters as the keyframes"
DEFAULT_NEGATIVE = "blurry, low quality, flicker, distorted, deformed, duplicate frames, watermark"


def fit_images(images: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """``[S, H, W, C]`` float 0..1 (C = 3 or 4) -> ``[S, height, width, 3]`` uint8, centre-cropped then resized."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[-1] not in (3, 4):
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise InputError("images", shape, "expected an IMAGE batch [S, H, W, 3]", "connect an IMAGE output")
    if images.shape[0] < 2:
        raise InputError(
            "images", f"{images.shape[0]} image", "in-betweening needs at least two keyframes", "batch 2+ images"
        )
    if not torch.isfinite(images).all():
        raise InputError("images", "NaN/inf pixels", "the images contain invalid values", "re-load the images")
    u8 = (images[..., :3].float().clamp(0, 1) * 255).round().to(torch.uint8)
    h, w = u8.shape[1:3]
    target = width / height
    if w / h > target:  # too wide: crop the sides
        cw = max(1, round(h * target))
        u8 = u8[:, :, (w - cw) // 2 : (w - cw) // 2 + cw]
    elif w / h < target:  # too tall: crop top and bottom
        ch = max(1, round(w / target))
        u8 = u8[:, (h - ch) // 2 : (h - ch) // 2 + ch]
    return resize_uint8(u8, height, width)


def inbetween_timeline(num_keys: int, segment_frames: int, fps, audio: AudioTrack | None) -> AlignedAudio:
    """Timeline of ``num_keys - 1`` segments of ``segment_frames`` frames, and its audio (given or silent)."""
    check_clip_frames(segment_frames)
    fps_q = parse_fps(fps)
    num_frames = (num_keys - 1) * (segment_frames - 1) + 1
    sr = audio.sample_rate if audio is not None else SILENCE_RATE
    num_samples = frame_to_sample(num_frames, fps_q, sr)
    if audio is None:
        track = AudioTrack(torch.zeros(1, num_samples), sr)
    else:
        wav = audio.waveform[:, :num_samples]
        if wav.shape[1] < num_samples:
            log.info("in-between audio %.2f s padded with silence to %.2f s", audio.duration_s, num_samples / sr)
            wav = torch.nn.functional.pad(wav, (0, num_samples - wav.shape[1]))
        elif audio.num_samples > num_samples:
            log.info("in-between audio %.2f s cut to the video's %.2f s", audio.duration_s, num_samples / sr)
        track = AudioTrack(wav.contiguous(), sr)
    timeline = plan_timeline(num_samples, sr, fps_q, clip_frames=segment_frames)
    if timeline.num_frames != num_frames or len(timeline.clips) != num_keys - 1:  # pragma: no cover - exact math
        raise RuntimeError(f"in-between timeline has {timeline.num_frames} frames, expected {num_frames}")
    timeline.meta["source"] = "keyframes from images"
    return AlignedAudio(timeline=timeline, audio=track)


def inbetween_storyline(timeline: Timeline, prompt: str, negative: str = DEFAULT_NEGATIVE) -> Storyline:
    """One shot per segment, every shot prompted with ``prompt`` (the refiner reads shot prompts)."""
    text = " ".join((prompt or "").split()) or "smooth natural motion between the keyframes"
    shots = [
        Shot(c.index, c.frame_start, c.frame_end, "", "", "", "", text, negative, "artist") for c in timeline.clips
    ]
    return Storyline(character="", scene="", style=KEY_STYLE, emotional_arc="", shots=shots)


def keyframes_from_images(
    images: torch.Tensor,
    settings: InbetweenSettings,
    *,
    audio: AudioTrack | None = None,
    prompt: str = "",
) -> tuple[Keyframes, AlignedAudio, Storyline]:
    """Keyframes, timeline and storyline for in-betweening ``images`` (see the module docstring).

    Args:
        images: ``[S, H, W, C]`` float 0..1, ``S >= 2`` keys in order.
        settings: segment length (4n+1), video frame rate, refine width / height (multiples of 16).
        audio: track to mux (cut / padded to the video), or None for silence.
        prompt: text for every segment.
    """
    settings.check()
    keys = fit_images(images, settings.width, settings.height)
    aligned = inbetween_timeline(len(keys), settings.segment_frames, settings.fps, audio)
    tl = aligned.timeline
    kf = Keyframes(
        images=keys,
        frame_indices=tl.seams,
        source_indices=[None] * len(keys),
        scores=[{"source": "image"} for _ in range(len(keys))],
    )
    log.info(
        "in-betweening %d keys: %d segments of %d frames, %d frames in all",
        len(keys),
        len(tl.clips),
        settings.segment_frames,
        tl.num_frames,
    )
    return kf, aligned, inbetween_storyline(tl, prompt)

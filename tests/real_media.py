"""Real test media from installed packages (no file of ours, nothing downloaded).

* faces: scikit-image's bundled photographs — ``astronaut`` (Eileen Collins, NASA, public domain),
  ``camera`` (the cameraman), and ``lfw_subset`` (25x25 Labeled Faces in the Wild crops of other
  people); ``coffee`` / ``chelsea`` (a cup, a cat) show no human face;
* edits of a real face: an open mouth drawn on the astronaut, a hand-coloured block over the face,
  a blur, a flip;
* speech: the pack's own ``sample_speech.flac`` (espeak-ng, see ``avatar_cascade/assets``) cut into
  phrases with planted pauses of known times.

Tests that need scikit-image / dlib / silero-vad are skipped (saying so) when the ``detectors`` extra
is not installed; CI installs it with ``.[test]``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

SR = 16000
#: Where the astronaut's mouth is (pixels of the 512x512 photo; found by dlib's 68-point model).
MOUTH = (223, 146)


def skimage_data():
    return pytest.importorskip("skimage.data", reason="scikit-image (extra 'detectors') is not installed")


def need_face_models():
    from avatar_cascade.models.detectors.face import available

    if not available():
        pytest.skip("dlib-bin / face-recognition-models (extra 'detectors') are not installed")


def need_silero():
    from avatar_cascade.models.detectors.vad import silero_weights

    if silero_weights() is None:
        pytest.skip("silero-vad (extra 'detectors') is not installed")


def astronaut(size: int | None = None) -> np.ndarray:
    """The astronaut photo ``[H, W, 3]`` uint8, optionally resized to ``size`` x ``size``."""
    img = skimage_data().astronaut()
    return img if size is None else resize(img, size)


def resize(img: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(img).resize((size, size), Image.BICUBIC)).copy()


def open_mouth(img: np.ndarray, height_px: int, scale: float = 1.0) -> np.ndarray:
    """The astronaut with a dark open mouth ``height_px`` tall drawn over hers (``scale``: image size / 512)."""
    from PIL import Image, ImageDraw

    im = Image.fromarray(img.copy())
    cx, cy = MOUTH[0] * scale, MOUTH[1] * scale
    h = height_px * scale / 2
    ImageDraw.Draw(im).ellipse((cx - 18 * scale, cy - h, cx + 18 * scale, cy + h), fill=(40, 10, 15))
    return np.asarray(im).copy()


def occluded(img: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """A hand-coloured block over the eyes, nose and mouth."""
    out = img.copy()
    out[int(95 * scale) : int(165 * scale), int(170 * scale) : int(275 * scale)] = (196, 150, 120)
    return out


def blurred(img: np.ndarray, radius: float) -> np.ndarray:
    from PIL import Image, ImageFilter

    return np.asarray(Image.fromarray(img).filter(ImageFilter.GaussianBlur(radius))).copy()


def other_people(count: int = 8, size: int = 200) -> list[np.ndarray]:
    """The first ``count`` faces of scikit-image's LFW subset, upscaled to ``size`` and made RGB."""
    faces = skimage_data().lfw_subset()[:count]
    return [np.stack([resize((np.clip(f, 0, 1) * 255).astype(np.uint8), size)] * 3, -1) for f in faces]


def face_on_background(face: np.ndarray, size: int = 512) -> np.ndarray:
    """``face`` pasted in the astronaut photo's face position on a grey canvas (a portrait of someone else)."""
    canvas = np.full((size, size, 3), 120, np.uint8)
    fh, fw = face.shape[:2]
    top, left = 40, 120
    canvas[top : top + fh, left : left + fw] = face
    return canvas


# ------------------------------------------------------------------------------------------- speech


def speech_phrases() -> tuple[torch.Tensor, torch.Tensor, int]:
    """Two phrases of continuous speech from the bundled sample ("I am your avatar", "and I will speak
    for you"), mono at its own rate."""
    from avatar_cascade.media import load_audio, sample_audio_path, to_mono

    track = load_audio(sample_audio_path())
    x, sr = to_mono(track.waveform), track.sample_rate
    return x[int(0.8 * sr) : int(1.82 * sr)], x[int(3.04 * sr) : int(4.19 * sr)], sr


def speech_with_pauses(
    pauses: int = 4, pause_s: float = 0.6, soft_gain: float = 1.0, noise: float = 0.0, seed: int = 0
) -> tuple[torch.Tensor, int, list[tuple[float, float]]]:
    """Phrase A, then ``pauses`` x (phrase B at ``soft_gain``, a planted pause, phrase A): ``([1, T], sr,
    pause spans in seconds)``. The pause holds white noise at ``noise`` x the speech RMS (0 = silence)."""
    a, b, sr = speech_phrases()
    g = torch.Generator().manual_seed(seed)
    rms = float(a.pow(2).mean().sqrt())
    parts, spans, t = [a], [], a.numel() / sr
    for _ in range(pauses):
        gap = torch.randn(int(pause_s * sr), generator=g) * rms * noise
        parts += [b * soft_gain, gap, a]
        start = t + b.numel() / sr
        spans.append((start, start + gap.numel() / sr))
        t = start + (gap.numel() + a.numel()) / sr
    return torch.cat(parts)[None], sr, spans


# --------------------------------------------------------------------------------------- video clips


def loudness_envelope(wave: torch.Tensor, sr: int, fps: int, frames: int) -> np.ndarray:
    """RMS of the audio under each video frame, divided by its 95th percentile and clipped to [0, 1]."""
    hop = sr // fps
    x = torch.nn.functional.pad(wave.flatten(), (0, max(0, frames * hop - wave.numel())))[: frames * hop]
    rms = x.view(frames, hop).square().mean(1).sqrt().numpy()
    return np.clip(rms / max(np.percentile(rms, 95), 1e-9), 0, 1)


def talking_clip(
    path,
    size: int = 256,
    fps: int = 25,
    lag_frames: int = 0,
    cut_at_s: float | None = None,
    other_from_s: float | None = None,
    tint_from_s: float | None = None,
):
    """An mp4 of the astronaut whose drawn mouth opens with the loudness of real speech (``speech_with_pauses``),
    ``lag_frames`` late; optional defects: a hard cut (the picture jumps 40 px) at ``cut_at_s``, another
    person from ``other_from_s``, a warm tint from ``tint_from_s``. Returns ``(path, wave, sr, reference)``."""
    from avatar_cascade.media import AudioTrack, VideoWriter

    wave, sr, _ = speech_with_pauses(pauses=2)
    n = int(wave.shape[1] / sr * fps)
    env = loudness_envelope(wave, sr, fps, n)
    scale = size / 512
    ref = astronaut(size)
    other = resize(face_on_background(other_people(1)[0]), size)
    with VideoWriter(path, fps, size, size, crf=18, audio=AudioTrack(wave, sr)) as w:
        for i in range(n):
            t = i / fps
            level = env[max(0, i - lag_frames)] if i >= lag_frames else 0.0
            frame = open_mouth(ref, 2 + 22 * level, scale) if level > 0.05 else ref.copy()
            if other_from_s is not None and t >= other_from_s:
                frame = other.copy()
            if cut_at_s is not None and t >= cut_at_s:
                frame = np.roll(frame, 40, axis=1)
            if tint_from_s is not None and t >= tint_from_s:
                frame = np.clip(frame.astype(np.int16) + np.array([30, 5, -25]), 0, 255).astype(np.uint8)
            w.write(torch.from_numpy(frame)[None])
    return path, wave, sr, torch.from_numpy(ref).float() / 255

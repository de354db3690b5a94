"""Media IO, audio: real files in many formats and codecs, written with PyAV and read back by
``load_audio``; bad files refused, resampling, mono mixing and the ComfyUI AUDIO round trip.
(Images: ``test_media_image.py``; the video writer: ``test_media_video.py``.)"""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest
import torch

from avatar_cascade.core.errors import InputError
from avatar_cascade.media import AudioTrack, VideoWriter, load_audio, resample, to_mono
from tests.helpers import dominant_hz, sines

# -- helpers -----------------------------------------------------------------


def _to_sample_fmt(wav: np.ndarray, fmt: str) -> np.ndarray:
    planar = fmt.endswith("p")
    base = fmt.rstrip("p")
    if base == "u8":
        data = np.clip(np.round(wav * 127 + 128), 0, 255).astype(np.uint8)
    elif base == "s16":
        data = np.round(wav * 32767).astype(np.int16)
    elif base == "s32":
        data = np.round(wav * (2**31 - 1)).astype(np.int32)
    elif base == "dbl":
        data = wav.astype(np.float64)
    else:
        data = wav.astype(np.float32)
    return np.ascontiguousarray(data if planar else data.T.reshape(1, -1))


def write_media(path, wav, sr, codec, sample_fmt, container_format=None, video=False, options=None):
    """Write ``wav`` [C, T] with PyAV (optionally next to a tiny H.264 video stream)."""
    channels = wav.shape[0]
    layout = {1: "mono", 2: "stereo"}.get(channels, f"{channels}c")
    with av.open(str(path), "w", format=container_format) as out:
        if video:
            vs = out.add_stream("libx264", rate=25)
            vs.width, vs.height, vs.pix_fmt = 64, 64, "yuv420p"
        if codec == "vorbis":  # FFmpeg's own vorbis encoder is marked experimental
            options = {**(options or {}), "strict": "experimental"}
        stream = out.add_stream(codec, rate=sr, options=options or {})
        stream.layout, stream.format = layout, sample_fmt
        if codec == "aac":
            stream.bit_rate = 96000 * channels  # FFmpeg's 128 kb/s default distorts pure tones in stereo
        if video:
            for i in range(int(wav.shape[1] / sr * 25)):
                f = av.VideoFrame.from_ndarray(np.full((64, 64, 3), i * 5 % 255, np.uint8), format="rgb24")
                f.pts = i
                out.mux(vs.encode(f))
            out.mux(vs.encode(None))
        for pos in range(0, wav.shape[1], 1000):
            frame_fmt = (
                "s32" if sample_fmt == "s64" else sample_fmt
            )  # PyAV cannot build s64 frames; the encoder converts
            chunk = _to_sample_fmt(wav[:, pos : pos + 1000], frame_fmt)
            frame = av.AudioFrame.from_ndarray(chunk, format=frame_fmt, layout=layout)
            frame.sample_rate, frame.pts = sr, pos
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))


# (name, suffix, codec, sample_fmt, sr, channels, container format, with video, exact length)
AUDIO_CASES = [
    ("wav-s16-8k-mono", ".wav", "pcm_s16le", "s16", 8000, 1, None, False, True),
    ("wav-s32-44k1-stereo", ".wav", "pcm_s32le", "s32", 44100, 2, None, False, True),
    ("wav-f32-22k05-6ch", ".wav", "pcm_f32le", "flt", 22050, 6, None, False, True),
    ("wav-f64-16k-mono", ".wav", "pcm_f64le", "dbl", 16000, 1, None, False, True),
    ("wav-u8-11k025-mono", ".wav", "pcm_u8", "u8", 11025, 1, None, False, True),
    ("wav-s64-16k-stereo", ".wav", "pcm_s64le", "s64", 16000, 2, None, False, True),
    ("flac-192k-8ch", ".flac", "flac", "s32", 192000, 8, None, False, True),
    ("mp3-44k1-stereo", ".mp3", "libmp3lame", "fltp", 44100, 2, None, False, False),
    ("m4a-aac-22k05-4ch", ".m4a", "aac", "fltp", 22050, 4, "mp4", False, False),
    ("ogg-opus-48k-stereo", ".ogg", "libopus", "flt", 48000, 2, "ogg", False, False),
    ("ogg-vorbis-44k1-stereo", ".ogg", "vorbis", "fltp", 44100, 2, "ogg", False, False),
    ("mp4-h264-aac-44k1-stereo", ".mp4", "aac", "fltp", 44100, 2, None, True, False),
    ("mkv-h264-aac-16k-mono", ".mkv", "aac", "fltp", 16000, 1, None, True, False),
    ("mov-h264-pcm-8k-mono", ".mov", "pcm_s16le", "s16", 8000, 1, None, True, True),
]


@pytest.mark.parametrize("case", AUDIO_CASES, ids=[c[0] for c in AUDIO_CASES])
def test_load_audio_formats(tmp_path, case):
    name, suffix, codec, fmt, sr, channels, cfmt, video, exact = case
    seconds = 0.6 if sr < 100000 else 0.25
    wav = sines(channels, sr, seconds, base=300.0)
    path = tmp_path / f"{name}{suffix}"
    try:
        write_media(path, wav, sr, codec, fmt, cfmt, video)
    except (av.FFmpegError, ValueError) as exc:  # e.g. an encoder this FFmpeg build lacks
        pytest.skip(f"cannot write {name} with this FFmpeg build: {exc}")
    track = load_audio(path)
    assert track.sample_rate == sr
    assert track.num_channels == channels
    assert track.waveform.dtype == torch.float32
    assert float(track.waveform.abs().max()) <= 1.0
    n = wav.shape[1]
    if exact:
        assert track.num_samples == n
    else:  # lossy codecs: within one codec frame (AAC 1024, MP3 1152, Opus 960)
        assert abs(track.num_samples - n) <= 1152, (track.num_samples, n)
    for c in range(channels):  # each channel keeps its own pitch: no interleaving mix-up
        want = 300.0 * (1 + c / 2)
        got = dominant_hz(track.waveform[c, : min(n, track.num_samples)], sr)
        assert abs(got - want) < 0.03 * want, (c, got, want)
    mid = track.waveform[0, n // 4 : 3 * n // 4]
    rms = float(mid.pow(2).mean().sqrt())
    assert abs(rms - 0.5 / np.sqrt(2)) < 0.04, rms  # sample values scaled to -1..1 correctly


def test_aac_padding_is_trimmed(tmp_path):
    # 0.6 s at 22.05 kHz = 13230 samples, not a multiple of 1024: the decoder pads, load_audio trims
    wav = sines(1, 22050, 0.6)
    path = tmp_path / "a.m4a"
    write_media(path, wav, 22050, "aac", "fltp", "mp4", options=None)
    with av.open(str(path)) as c:
        raw = sum(f.samples for f in c.decode(audio=0))
    assert raw % 1024 == 0 and raw > wav.shape[1]
    track = load_audio(path)
    assert abs(track.num_samples - wav.shape[1]) <= 22  # within the mp4 edit list's 1 ms rounding


def test_load_audio_refuses_bad_files(tmp_path):
    with pytest.raises(InputError, match="file not found"):
        load_audio(tmp_path / "nope.wav")
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        load_audio(tmp_path / "empty.wav")
    (tmp_path / "junk.wav").write_bytes(b"RIFF\x00\x00garbage" + bytes(range(256)) * 4)
    with pytest.raises(InputError, match="could not be decoded|no audio"):
        load_audio(tmp_path / "junk.wav")


def test_video_without_audio_track(tmp_path):
    path = tmp_path / "silent.mp4"
    with VideoWriter(path, Fraction(25), 64, 64) as w:
        w.write(np.zeros((5, 64, 64, 3), np.uint8))
    with pytest.raises(InputError, match="has no audio stream.*add a sound track") as info:
        load_audio(path, input_name="speech")
    assert info.value.input_name == "speech"


def test_zero_length_audio(tmp_path):
    path = tmp_path / "zero.wav"
    with av.open(str(path), "w") as out:
        s = out.add_stream("pcm_s16le", rate=16000)
        s.layout = "mono"
        out.start_encoding()  # header only, no samples
    with pytest.raises(InputError, match="no audio samples"):
        load_audio(path)


def test_nan_audio_refused(tmp_path):
    wav = sines(1, 16000, 0.2)
    wav[0, 100] = np.nan
    path = tmp_path / "nan.wav"
    write_media(path, wav, 16000, "pcm_f32le", "flt")
    with pytest.raises(InputError, match="NaN or infinite"):
        load_audio(path)


def test_loud_float_audio_scaled_not_clipped(tmp_path):
    wav = sines(1, 16000, 0.2) * 4.0  # peak 2.0
    path = tmp_path / "loud.wav"
    write_media(path, wav, 16000, "pcm_f32le", "flt")
    track = load_audio(path)
    assert float(track.waveform.abs().max()) == pytest.approx(1.0)
    np.testing.assert_allclose(track.waveform[0].numpy(), wav[0] / 2.0, atol=1e-6)


def test_max_duration(tmp_path):
    path = tmp_path / "one_second.wav"
    write_media(path, sines(1, 8000, 1.0), 8000, "pcm_s16le", "s16")
    assert load_audio(path, max_duration_s=2.0).num_samples == 8000
    with pytest.raises(InputError, match="limit of 0.5 s"):
        load_audio(path, max_duration_s=0.5)


def test_resample_and_mono():
    x = torch.from_numpy(sines(2, 44100, 1.0))
    y = resample(x, 44100, 16000)
    assert y.shape == (2, 16000)
    assert abs(dominant_hz(y[0], 16000) - 440) < 3 and abs(dominant_hz(y[1], 16000) - 660) < 3
    assert resample(x, 44100, 44100) is x
    m = to_mono(torch.tensor([[1.0, 0.0], [0.0, -1.0]]))
    assert torch.equal(m, torch.tensor([0.5, -0.5]))


def test_audio_track_comfy_roundtrip():
    wav = torch.from_numpy(sines(2, 16000, 0.1))
    track = AudioTrack(wav, 16000)
    assert track.num_samples == 1600 and track.duration_s == pytest.approx(0.1)
    d = track.to_comfy()
    assert d["waveform"].shape == (1, 2, 1600) and d["sample_rate"] == 16000
    back = AudioTrack.from_comfy(d)
    assert torch.equal(back.waveform, wav) and back.sample_rate == 16000
    assert torch.allclose(back.mono(), wav.mean(0))
    with pytest.raises(InputError, match="only one audio track"):
        AudioTrack.from_comfy({"waveform": torch.zeros(2, 1, 100), "sample_rate": 16000})
    with pytest.raises(InputError, match="needs waveform and sample_rate"):
        AudioTrack.from_comfy({"waveform": torch.zeros(1, 1, 100)}, input_name="voice")
    with pytest.raises(InputError, match="NaN"):
        AudioTrack.from_comfy({"waveform": torch.full((1, 1, 10), float("nan")), "sample_rate": 16000})
    with pytest.raises(InputError, match="T > 0"):
        AudioTrack.from_comfy({"waveform": torch.zeros(1, 1, 0), "sample_rate": 16000})

"""Media IO: real files in many formats, written with PyAV / PIL and read back."""

from __future__ import annotations

import struct
import zlib
from fractions import Fraction

import av
import numpy as np
import pytest
import torch
from PIL import Image

from avatar_cascade.core.errors import InputError
from avatar_cascade.media import (
    AudioTrack,
    VideoWriter,
    check_image_tensor,
    load_audio,
    load_image,
    probe_media,
    resample,
    sample_audio_path,
    sample_image_path,
    to_mono,
)

# -- helpers -----------------------------------------------------------------


def sines(channels: int, sr: int, seconds: float, base: float = 440.0) -> np.ndarray:
    """[C, T] float32; channel c is a sine at base * (1 + c/2) Hz, amplitude 0.5."""
    t = np.arange(int(round(sr * seconds))) / sr
    return np.stack([0.5 * np.sin(2 * np.pi * base * (1 + c / 2) * t) for c in range(channels)]).astype(np.float32)


def dominant_hz(x: np.ndarray | torch.Tensor, sr: int) -> float:
    x = np.asarray(x, dtype=np.float64)
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spec) * sr / len(x))


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


# -- images ------------------------------------------------------------------


def test_load_image_modes(tmp_path):
    rgba = np.zeros((64, 80, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:, :40, 3] = 255  # left half opaque red-ish, right half fully transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    img = load_image(tmp_path / "rgba.png")
    assert img.shape == (64, 80, 3) and img.dtype == torch.float32
    assert torch.allclose(img[0, 0], torch.tensor([200 / 255, 0.0, 0.0]))
    assert torch.allclose(img[0, 79], torch.ones(3))  # transparent -> white

    grey = np.tile(np.arange(64, dtype=np.uint8)[None] * 4, (64, 1))
    Image.fromarray(grey, "L").save(tmp_path / "grey.png")
    g = load_image(tmp_path / "grey.png")
    assert g.shape == (64, 64, 3) and torch.equal(g[..., 0], g[..., 2])
    assert g[0, 10, 0] == pytest.approx(40 / 255)

    deep = np.full((64, 64), 257, np.uint16)
    deep[0, 0], deep[0, 1] = 65535, 32768
    Image.fromarray(deep).save(tmp_path / "deep.png")
    d = load_image(tmp_path / "deep.png")
    assert d[0, 0, 0] == pytest.approx(1.0) and d[0, 1, 1] == pytest.approx(32768 / 65535)
    assert d[5, 5, 2] == pytest.approx(257 / 65535)  # 16-bit precision kept, not clipped to 255

    pal = Image.fromarray(grey, "L").convert("P")
    pal.info["transparency"] = int(np.asarray(pal)[0, 0])
    pal.save(tmp_path / "pal.png", transparency=int(np.asarray(pal)[0, 0]))
    p = load_image(tmp_path / "pal.png")
    assert torch.allclose(p[0, 0], torch.ones(3)) and p.shape == (64, 64, 3)


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    return b"\x89PNG\r\n\x1a\n" + ihdr + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def test_load_image_size_limits(tmp_path):
    Image.new("RGB", (32, 100)).save(tmp_path / "tiny.png")
    with pytest.raises(InputError, match=r"32x100.*between 64 and 8192"):
        load_image(tmp_path / "tiny.png")
    Image.new("1", (9000, 64)).save(tmp_path / "wide.png")  # 1-bit: a few KB on disk and in memory
    with pytest.raises(InputError, match=r"9000x64.*between 64 and 8192"):
        load_image(tmp_path / "wide.png")
    (tmp_path / "bomb.png").write_bytes(_png_header_only(30000, 30000))  # header only, never allocated
    with pytest.raises(InputError, match="8192"):
        load_image(tmp_path / "bomb.png")


def test_load_image_bad_files(tmp_path):
    with pytest.raises(InputError, match="file not found") as info:
        load_image(tmp_path / "missing.png", input_name="reference")
    assert info.value.input_name == "reference"
    (tmp_path / "zero.png").write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        load_image(tmp_path / "zero.png")
    (tmp_path / "text.png").write_text("this is not an image")
    with pytest.raises(InputError, match="could not be read as an image"):
        load_image(tmp_path / "text.png")
    Image.new("RGB", (128, 128), (10, 200, 30)).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="damaged|could not be read"):
        load_image(tmp_path / "cut.png")


def test_check_image_tensor():
    batch = torch.rand(2, 8, 9, 4)
    out = check_image_tensor(batch)
    assert out.shape == (8, 9, 3) and torch.equal(out, batch[0, ..., :3])
    grey = check_image_tensor(torch.rand(8, 9, 1))
    assert grey.shape == (8, 9, 3) and torch.equal(grey[..., 0], grey[..., 1])
    u8 = check_image_tensor(torch.full((1, 4, 4, 3), 255, dtype=torch.uint8))
    assert torch.all(u8 == 1.0)
    with pytest.raises(InputError, match="NaN"):
        check_image_tensor(torch.full((1, 4, 4, 3), float("nan")), "ref")
    with pytest.raises(InputError, match="C = 1, 3 or 4"):
        check_image_tensor(torch.rand(1, 4, 4, 2))


def test_bundled_samples():
    img = load_image(sample_image_path())
    assert img.shape == (256, 256, 3) and float(img.std()) > 0.1
    speech = load_audio(sample_audio_path())
    assert speech.sample_rate == 16000 and speech.num_channels == 1
    assert 3.0 < speech.duration_s < 6.0
    assert float(speech.waveform.abs().max()) > 0.5


# -- video -------------------------------------------------------------------


def _frame(i: int, h: int = 64, w: int = 64) -> np.ndarray:
    return np.full((h, w, 3), (i * 8) % 256, np.uint8)


def test_video_writer_h264_aac(tmp_path):
    sr, n_audio = 44100, 52921  # odd count, not a multiple of the AAC frame (1024)
    audio = AudioTrack(torch.from_numpy(sines(2, sr, n_audio / sr)), sr)
    path = tmp_path / "out" / "v.mp4"
    meta = {"comment": '{"workflow": 1}', "workflow": '{"nodes": []}'}
    with VideoWriter(path, Fraction(25), 64, 64, audio=audio, metadata=meta) as w:
        w.write(np.stack([_frame(i) for i in range(10)]))
        w.write(torch.from_numpy(np.stack([_frame(i) for i in range(10, 30)])))
        w.write(_frame(30))
    info = probe_media(path)
    assert sorted(s["type"] for s in info["streams"]) == ["audio", "video"]
    assert {s["codec"] for s in info["streams"]} == {"h264", "aac"}
    assert info["video"]["frames"] == 31 and info["video"]["fps"] == Fraction(25)
    assert (info["video"]["width"], info["video"]["height"]) == (64, 64)
    assert info["audio"]["samples"] == n_audio and info["audio"]["sample_rate"] == sr
    assert info["metadata"]["comment"] == meta["comment"] and info["metadata"]["workflow"] == meta["workflow"]
    assert [p.name for p in path.parent.iterdir()] == ["v.mp4"]  # no partial file left behind
    with av.open(str(path)) as c:  # frame-exact timestamps and content order
        decoded = [(f.time, int(f.to_ndarray(format="rgb24")[32, 32, 0])) for f in c.decode(video=0)]
    for i, (t, level) in enumerate(decoded):
        assert t == pytest.approx(i / 25, abs=1e-6)
        assert abs(level - (i * 8) % 256) <= 3


def test_video_writer_ntsc_odd_size(tmp_path):
    path = tmp_path / "ntsc.mp4"
    with VideoWriter(path, Fraction(30000, 1001), 65, 63) as w:
        w.write(np.stack([_frame(i, 63, 65) for i in range(7)]))
    info = probe_media(path)
    assert info["video"]["fps"] == Fraction(30000, 1001) and info["video"]["frames"] == 7
    assert (info["video"]["width"], info["video"]["height"]) == (66, 64)  # padded to even for yuv420p
    assert info["audio"] is None


@pytest.mark.parametrize("exc_type", [RuntimeError, KeyboardInterrupt])
def test_video_writer_failure_leaves_no_file(tmp_path, exc_type):
    path = tmp_path / "broken.mp4"
    with pytest.raises(exc_type):
        with VideoWriter(path, Fraction(25), 64, 64) as w:
            w.write(np.stack([_frame(i) for i in range(5)]))
            raise exc_type("stop")
    assert list(tmp_path.iterdir()) == []


def test_video_writer_bad_input(tmp_path):
    with pytest.raises(InputError, match="do not match"):
        with VideoWriter(tmp_path / "a.mp4", Fraction(25), 64, 64) as w:
            w.write(np.zeros((2, 32, 32, 3), np.uint8))
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(InputError, match="unknown video container"):
        VideoWriter(tmp_path / "a.avi", Fraction(25), 64, 64)
    with pytest.raises(InputError, match="cannot be written"):
        with VideoWriter(tmp_path / "a.mp4", Fraction(25), 64, 64, codec="no_such_codec"):
            pass
    assert list(tmp_path.iterdir()) == []


def test_video_writer_surround_audio_roundtrip(tmp_path):
    # 8 planar AAC channels: PyAV cannot read such frames directly; load_audio must not crash
    wav = sines(8, 16000, 1.0, base=200.0)
    path = tmp_path / "surround.mp4"
    with VideoWriter(path, Fraction(25), 64, 64, audio=AudioTrack(torch.from_numpy(wav), 16000)) as w:
        w.write(np.stack([_frame(i) for i in range(25)]))
    track = load_audio(path)
    assert track.num_channels == 8 and track.num_samples == 16000
    for c in (0, 1, 2, 4, 5, 6, 7):  # channel 3 is the 7.1 LFE, low-passed by the encoder
        want = 200.0 * (1 + c / 2)
        assert abs(dominant_hz(track.waveform[c], 16000) - want) < 0.03 * want


def test_video_writer_resamples_audio_the_codec_cannot_take(tmp_path):
    sr = 192000  # AAC tops out at 96 kHz
    audio = AudioTrack(torch.from_numpy(sines(1, sr, 0.5)), sr)
    path = tmp_path / "hi.mp4"
    with VideoWriter(path, Fraction(24), 64, 64, audio=audio) as w:
        w.write(np.stack([_frame(i) for i in range(12)]))
    info = probe_media(path)
    assert info["audio"]["sample_rate"] == 96000 and info["audio"]["samples"] == 48000
    track = load_audio(path)
    assert abs(dominant_hz(track.waveform[0], 96000) - 440) < 5


def test_video_writer_refuses_empty_video_and_bad_audio_codec(tmp_path):
    with pytest.raises(InputError, match="no frames were written"):
        with VideoWriter(tmp_path / "empty.mp4", Fraction(25), 64, 64):
            pass
    audio = AudioTrack(torch.zeros(1, 1600), 16000)
    with pytest.raises(InputError, match="audio_codec"):
        with VideoWriter(tmp_path / "a.mp4", Fraction(25), 64, 64, audio=audio, audio_codec="no_such_codec"):
            pass
    assert list(tmp_path.iterdir()) == []

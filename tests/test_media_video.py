"""Media IO, video: the ``VideoWriter`` (H.264 + AAC with metadata, odd sizes and NTSC rates, no
partial file on failure, surround and high-rate audio) checked with PyAV and ``probe_media``.
(Audio: ``test_media_audio.py``; images: ``test_media_image.py``.)"""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest
import torch

from avatar_cascade.core.errors import InputError
from avatar_cascade.media import AudioTrack, VideoWriter, load_audio, probe_media
from tests.helpers import dominant_hz, sines

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

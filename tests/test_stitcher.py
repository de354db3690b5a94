"""Clip stitcher: seams kept once, exact frame/sample counts, streaming, clean interrupts."""

from __future__ import annotations

import weakref
from fractions import Fraction

import av
import numpy as np
import pytest
import torch

from avatar_cascade.errors import InputError, Interrupted
from avatar_cascade.media import AudioTrack, probe_media
from avatar_cascade.runtime import Runtime
from avatar_cascade.stitcher import StitchResult, stitch_clips
from avatar_cascade.timeline import plan_timeline

SR = 16000
SIZE = 64
BITS = 8  # frame index encoded as 8 vertical black/white stripes (survives H.264)


def marked_frame(index: int) -> np.ndarray:
    frame = np.zeros((SIZE, SIZE, 3), np.uint8)
    width = SIZE // BITS
    for b in range(BITS):
        if index >> b & 1:
            frame[:, b * width : (b + 1) * width] = 255
    return frame


def read_marks(path) -> list[int]:
    width = SIZE // BITS
    marks = []
    with av.open(str(path)) as c:
        for f in c.decode(video=0):
            img = f.to_ndarray(format="rgb24").astype(np.float32)
            bits = [img[8:-8, b * width + 2 : (b + 1) * width - 2].mean() > 127 for b in range(BITS)]
            marks.append(sum(1 << b for b, on in enumerate(bits) if on))
    return marks


def clip_frames(timeline, k: int) -> np.ndarray:
    sub = timeline.clips[k]
    return np.stack([marked_frame(i) for i in range(sub.frame_start, sub.frame_end + 1)])


def speech(num_samples: int, sr: int = SR) -> AudioTrack:
    t = torch.arange(num_samples) / sr
    return AudioTrack((0.3 * torch.sin(2 * torch.pi * 220 * t))[None], sr)


def quiet_runtime(**kw) -> Runtime:
    return Runtime(device=torch.device("cpu"), show_progress=False, **kw)


@pytest.fixture
def timeline():
    # 1.23 s at 25 fps -> 31 frames; clips of 9 frames: 0-8, 8-16, 16-24, 24-32 (2 frames past the audio end)
    tl = plan_timeline(19680, SR, 25, clip_frames=9)
    assert tl.num_frames == 31 and tl.padded_frames == 33 and len(tl.clips) == 4
    return tl


def test_stitch_dedups_seams_and_trims(tmp_path, timeline):
    updates = []

    class Recorder:
        def __init__(self, total, desc):
            updates.append((total, desc))

        def update(self, n=1, preview=None):
            updates.append(n)

        def close(self):
            updates.append("closed")

    runtime = quiet_runtime(progress_factory=Recorder)
    clips = (torch.from_numpy(clip_frames(timeline, k)) for k in range(len(timeline.clips)))
    out = tmp_path / "avatar.mp4"
    result = stitch_clips(clips, timeline, speech(timeline.num_samples), out, runtime, metadata={"comment": "wf"})
    assert isinstance(result, StitchResult)
    assert (result.path, result.num_frames, result.width, result.height) == (out, 31, SIZE, SIZE)
    assert result.fps == Fraction(25) and result.audio_samples == timeline.num_samples
    assert read_marks(out) == list(range(timeline.num_frames))  # no duplicated seam, none missing, in order
    info = probe_media(out)
    assert info["video"]["frames"] == timeline.num_frames and info["video"]["fps"] == timeline.fps
    assert info["audio"]["samples"] == timeline.num_samples and info["audio"]["sample_rate"] == SR
    assert (info["video_frames"], info["fps"], info["audio_samples"]) == (31, Fraction(25), timeline.num_samples)
    assert info["metadata"]["comment"] == "wf"
    assert updates == [(4, "stitch"), 1, 1, 1, 1, "closed"]
    assert [p.name for p in tmp_path.iterdir()] == ["avatar.mp4"]


def test_stitch_holds_one_clip_at_a_time(tmp_path, timeline):
    alive = []

    def clips():
        for k in range(len(timeline.clips)):
            assert all(ref() is None for ref in alive), f"clip {k - 1} still held when clip {k} is made"
            arr = clip_frames(timeline, k)
            alive.append(weakref.ref(arr))
            yield arr
            del arr

    stitch_clips(clips(), timeline, speech(timeline.num_samples), tmp_path / "v.mp4", quiet_runtime())
    assert len(alive) == 4


def test_stitch_resamples_matching_audio(tmp_path, timeline):
    audio_48k = speech(timeline.num_samples * 3, sr=48000)  # same duration at another rate
    clips = (clip_frames(timeline, k) for k in range(len(timeline.clips)))
    result = stitch_clips(clips, timeline, audio_48k, tmp_path / "v.mp4", quiet_runtime())
    info = probe_media(result.path)
    assert info["audio"]["sample_rate"] == SR and info["audio"]["samples"] == timeline.num_samples


def test_interrupt_leaves_no_file(tmp_path, timeline):
    calls = []
    made = []

    def interrupt_check():
        calls.append(1)
        if len(calls) == 3:  # before clip 2
            raise Interrupted("stop")

    def clips():
        for k in range(len(timeline.clips)):
            made.append(k)
            yield clip_frames(timeline, k)

    out = tmp_path / "v.mp4"
    with pytest.raises(Interrupted):
        stitch_clips(
            clips(), timeline, speech(timeline.num_samples), out, quiet_runtime(interrupt_check=interrupt_check)
        )
    assert made == [0, 1]  # clip 2 was never requested
    assert list(tmp_path.iterdir()) == []


def test_interrupt_keeps_existing_file(tmp_path, timeline):
    out = tmp_path / "v.mp4"
    out.write_bytes(b"previous render")

    def boom():
        raise KeyboardInterrupt

    clips = (clip_frames(timeline, k) for k in range(len(timeline.clips)))
    with pytest.raises(KeyboardInterrupt):
        stitch_clips(clips, timeline, speech(timeline.num_samples), out, quiet_runtime(interrupt_check=boom))
    assert out.read_bytes() == b"previous render" and [p.name for p in tmp_path.iterdir()] == ["v.mp4"]


def _bad_clips(timeline, k_bad, bad):
    for k in range(len(timeline.clips)):
        yield bad if k == k_bad else clip_frames(timeline, k)


@pytest.mark.parametrize(
    ("k_bad", "make_bad", "message"),
    [
        (1, lambda tl: clip_frames(tl, 1)[:-1], r"clips\[1\].*has 9 frames"),
        (2, lambda tl: np.zeros((9, 32, 32, 3), np.uint8), r"differs from the first clip's size"),
        (0, lambda tl: clip_frames(tl, 0).astype(np.float32), r"uint8"),
    ],
    ids=["short-clip", "other-size", "float-frames"],
)
def test_bad_clips_refused(tmp_path, timeline, k_bad, make_bad, message):
    clips = _bad_clips(timeline, k_bad, make_bad(timeline))
    with pytest.raises(InputError, match=message):
        stitch_clips(clips, timeline, speech(timeline.num_samples), tmp_path / "v.mp4", quiet_runtime())
    assert list(tmp_path.iterdir()) == []


def test_wrong_clip_count_and_audio_refused(tmp_path, timeline):
    audio = speech(timeline.num_samples)
    few = (clip_frames(timeline, k) for k in range(3))
    with pytest.raises(InputError, match="the timeline has 4 clips"):
        stitch_clips(few, timeline, audio, tmp_path / "v.mp4", quiet_runtime())
    many = (clip_frames(timeline, k % 4) for k in range(5))
    with pytest.raises(InputError, match="more than 4 clips"):
        stitch_clips(many, timeline, audio, tmp_path / "v.mp4", quiet_runtime())
    other = speech(timeline.num_samples * 2)
    with pytest.raises(InputError, match="does not match the timeline"):
        stitch_clips(iter([]), timeline, other, tmp_path / "v.mp4", quiet_runtime())
    assert list(tmp_path.iterdir()) == []

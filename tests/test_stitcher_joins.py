"""Clip stitcher, joining clips: seams kept once, exact frame/sample counts, streaming, clean interrupts,
bad clips refused, overlapping clips crossfaded or cut, 2x fps. (Codecs, collected frames, colour
matching, constant memory and the node: ``test_stitcher_output.py``.)"""

from __future__ import annotations

import dataclasses
import weakref
from fractions import Fraction

import numpy as np
import pytest
import torch

from avatar_cascade.artefacts.timeline import plan_timeline
from avatar_cascade.core.errors import InputError, Interrupted
from avatar_cascade.media import probe_media
from avatar_cascade.stages.stitcher.stitcher import StitchResult
from tests.helpers import SR, clip_frames, marked_frame, read_marks, stitch
from tests.helpers import STITCH_SIZE as SIZE
from tests.helpers import cpu_runtime as quiet_runtime
from tests.helpers import tone_track as speech

# ``timeline`` (1.23 s at 25 fps -> 31 frames; clips of 9 frames: 0-8, 8-16, 16-24, 24-32, 2 frames past the
# audio end) comes from conftest.py; speech(n) is n samples of a 220 Hz tone.


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
    result = stitch(clips, timeline, speech(timeline.num_samples), out, runtime, metadata={"comment": "wf"})
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

    stitch(clips(), timeline, speech(timeline.num_samples), tmp_path / "v.mp4", quiet_runtime())
    assert len(alive) == 4


def test_stitch_resamples_matching_audio(tmp_path, timeline):
    audio_48k = speech(timeline.num_samples * 3, sr=48000)  # same duration at another rate
    clips = (clip_frames(timeline, k) for k in range(len(timeline.clips)))
    result = stitch(clips, timeline, audio_48k, tmp_path / "v.mp4", quiet_runtime())
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
        stitch(clips(), timeline, speech(timeline.num_samples), out, quiet_runtime(interrupt_check=interrupt_check))
    assert made == [0, 1]  # clip 2 was never requested
    assert list(tmp_path.iterdir()) == []


def test_interrupt_keeps_existing_file(tmp_path, timeline):
    out = tmp_path / "v.mp4"
    out.write_bytes(b"previous render")

    def boom():
        raise KeyboardInterrupt

    clips = (clip_frames(timeline, k) for k in range(len(timeline.clips)))
    with pytest.raises(KeyboardInterrupt):
        stitch(clips, timeline, speech(timeline.num_samples), out, quiet_runtime(interrupt_check=boom))
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
        stitch(clips, timeline, speech(timeline.num_samples), tmp_path / "v.mp4", quiet_runtime())
    assert list(tmp_path.iterdir()) == []


def test_wrong_clip_count_and_audio_refused(tmp_path, timeline):
    audio = speech(timeline.num_samples)
    few = (clip_frames(timeline, k) for k in range(3))
    with pytest.raises(InputError, match="the timeline has 4 clips"):
        stitch(few, timeline, audio, tmp_path / "v.mp4", quiet_runtime())
    many = (clip_frames(timeline, k % 4) for k in range(5))
    with pytest.raises(InputError, match="more than 4 clips"):
        stitch(many, timeline, audio, tmp_path / "v.mp4", quiet_runtime())
    other = speech(timeline.num_samples * 2)
    with pytest.raises(InputError, match="does not match the timeline"):
        stitch(iter([]), timeline, other, tmp_path / "v.mp4", quiet_runtime())
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- overlap, crossfade, 2x fps


def overlap_timeline():
    # 25 frames at 25 fps, clips of 9 frames with 4 frames of blending overlap past every interior seam
    tl = plan_timeline(16000, SR, 25, clip_frames=9, overlap_frames=4)
    assert [(c.render_start, c.render_end) for c in tl.clips] == [(0, 12), (4, 20), (12, 24)]
    return tl


def rendered(timeline, k: int, fill=None) -> np.ndarray:
    """Clip ``k``'s rendered frames: index markers, or a flat grey ``fill``."""
    c = timeline.clips[k]
    if fill is not None:
        return np.full((c.render_frames, SIZE, SIZE, 3), fill, np.uint8)
    return np.stack([marked_frame(i) for i in range(c.render_start, c.render_end + 1)])


def test_overlapping_clips_are_joined_without_duplicated_or_missing_frames(tmp_path):
    tl = overlap_timeline()
    clips = (rendered(tl, k) for k in range(3))
    result = stitch(clips, tl, speech(tl.num_samples), tmp_path / "o.mp4", quiet_runtime(), crf=0)
    assert read_marks(result.path) == list(range(tl.num_frames)) and result.num_frames == 25
    info = probe_media(result.path)
    assert (info["video_frames"], info["audio_samples"]) == (25, tl.num_samples)


@pytest.mark.parametrize("crossfade", [True, False])
def test_overlap_frames_are_crossfaded_linearly_or_cut_after_the_seam(tmp_path, crossfade):
    tl = overlap_timeline()
    fills = (40, 120, 200)
    clips = (rendered(tl, k, fills[k]) for k in range(3))
    result = stitch(
        clips, tl, speech(tl.num_samples), tmp_path / "o.mp4", quiet_runtime(), crossfade=crossfade, collect_frames=100
    )
    level = result.frames[:, 0, 0, 0].tolist()
    # frames 4..12 are rendered by clips 0 and 1 (seam at 8), frames 12..20 by clips 1 and 2 (seam at 16)
    if crossfade:
        ramp = [round(40 + 80 * i / 8) for i in range(9)]
        assert level[4:13] == ramp and level[12:21] == [round(120 + 80 * i / 8) for i in range(9)]
        assert level[8] == 80  # the seam keyframe: the mean of the two clips' renderings
    else:
        assert level == [40] * 9 + [120] * 8 + [200] * 8  # cut just after each seam keyframe
    assert level[:4] == [40] * 4 and level[21:] == [200] * 4


def test_blend_interpolation_inserts_midpoints_and_keeps_audio_exact(tmp_path, timeline):
    clips = (clip_frames(timeline, k) for k in range(len(timeline.clips)))
    result = stitch(
        clips,
        timeline,
        speech(timeline.num_samples),
        tmp_path / "d.mp4",
        quiet_runtime(),
        interpolate=2,
        interpolation="blend",
        collect_frames=1000,
        crf=0,
    )
    n = timeline.num_frames  # 31 frames at 25 fps for 1.23 s -> 61 at 50 fps (ceil(1.23 * 50) = 62: one held)
    assert result.fps == Fraction(50) and result.num_frames == 62 == -(-timeline.num_samples * 50 // SR)
    f = result.frames.numpy().astype(int)
    originals = np.stack([marked_frame(i) for i in range(n)]).astype(int)
    assert np.array_equal(f[0 : 2 * n : 2], originals)
    assert np.array_equal(f[1 : 2 * n - 1 : 2], (originals[:-1] + originals[1:] + 1) // 2)
    assert np.array_equal(f[-1], originals[-1])  # the held last frame
    info = probe_media(result.path)
    assert info["video_frames"] == 62 and info["fps"] == Fraction(50)
    assert info["audio_samples"] == timeline.num_samples and info["sample_rate"] == SR
    assert read_marks(result.path)[0::2][:n] == list(range(n))


def test_doubled_frame_count_follows_the_audio(tmp_path):
    # 2N - 1 frames (every pair gets a midpoint) when the audio ends in the first half of the last frame,
    # plus the last frame held when it ends later: frames = ceil(duration * 2 fps), as the timeline rule.
    for samples, want in ((24 * 640 + 100, 49), (SR, 50)):  # 24.16 and 25 frames at 25 fps
        tl = plan_timeline(samples, SR, 25, clip_frames=9)
        assert tl.num_frames == 25
        clips = (clip_frames(tl, k) for k in range(len(tl.clips)))
        result = stitch(clips, tl, speech(samples), tmp_path / "d.mp4", quiet_runtime(), interpolate=2)
        info = probe_media(result.path)
        assert result.num_frames == want == info["video_frames"] and info["audio_samples"] == samples


def test_gapped_timeline_is_refused(tmp_path, timeline):
    bad = dataclasses.replace(timeline.clips[2], frame_start=18)  # frame 17 rendered by no clip
    tl = dataclasses.replace(timeline, clips=[*timeline.clips[:2], bad, *timeline.clips[3:]])
    with pytest.raises(InputError, match="timeline.*does not follow"):
        stitch(iter([]), tl, speech(tl.num_samples), tmp_path / "v.mp4", quiet_runtime())

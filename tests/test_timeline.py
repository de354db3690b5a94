"""The master timeline: exact tiling of frames and samples at any length and rate, with seam
snapping and blending overlap."""

from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from avatar_cascade.artefacts.timeline import Timeline, frame_to_sample, nominal_clip_starts, parse_fps, plan_timeline
from avatar_cascade.core.errors import InputError
from avatar_cascade.stages.aligner.seams import snap_seams

FPS = [Fraction(16), Fraction(24), Fraction(25), Fraction(30000, 1001), Fraction(48)]
RATES = [8000, 16000, 22050, 44100, 48000, 96000, 192000]


def _count_cover(starts: np.ndarray, ends: np.ndarray, length: int) -> np.ndarray:
    """How many of the inclusive ranges ``[starts[i], ends[i]]`` hold each frame ``0..length-1``."""
    diff = np.zeros(length + 1, np.int64)
    np.add.at(diff, starts, 1)
    np.add.at(diff, ends + 1, -1)
    return np.cumsum(diff)[:length]


def check_invariants(tl: Timeline, snapped: bool = False) -> None:
    clips = tl.clips
    # Clips tile the frames, sharing exactly one seam frame between neighbours.
    assert clips[0].frame_start == 0
    for a, b in zip(clips, clips[1:]):
        assert b.frame_start == a.frame_end
    assert all((c.num_frames - 1) % 4 == 0 and c.num_frames >= 5 for c in clips)
    assert all((c.render_frames - 1) % 4 == 0 for c in clips)
    if not snapped:
        assert all(c.num_frames == tl.clip_frames for c in clips[:-1])
    else:  # snapping keeps the clip count and moves each seam at most the tolerance
        assert len(tl.seams) == len(tl.nominal_seams)
        assert all(abs(a - b) <= tl.snap_tolerance_frames for a, b in zip(tl.seams[:-1], tl.nominal_seams[:-1]))
    # Rendered ranges: only the declared seam and overlap frames are rendered by more than one clip.
    starts = np.array([c.render_start for c in clips])
    ends = np.array([c.render_end for c in clips])
    cover = _count_cover(starts, ends, tl.padded_frames)
    declared = _count_cover(starts[1:], ends[:-1], tl.padded_frames) > 0  # [render_start_k, render_end_(k-1)]
    assert all(c.overlap_before == min(tl.overlap_frames, c.frame_start) for c in clips[1:])
    assert np.array_equal(cover > 1, declared)
    assert (cover >= 1).all()
    assert clips[0].render_start == 0 and clips[-1].render_end == tl.padded_frames - 1
    # The rendered frames cover the audio, with less than one clip-rounding (4 frames) of tail.
    assert tl.padded_frames >= tl.num_frames
    assert tl.padded_frames - tl.num_frames < 4 or len(clips) == 1
    # Owned audio ranges tile [0, num_samples) exactly.
    assert clips[0].sample_range[0] == 0
    for a, b in zip(clips, clips[1:]):
        assert a.sample_range[1] == b.sample_range[0]
    assert clips[-1].sample_range[1] == tl.num_samples
    # Feature windows contain the owned range and every sample the rendered frames hear.
    fps, sr = tl.fps, tl.sample_rate
    for c in clips:
        assert c.feature_window[0] <= c.sample_range[0] and c.feature_window[1] >= c.sample_range[1]
        assert c.feature_window[0] <= max(0, frame_to_sample(c.render_start, fps, sr) - tl.feature_pad_samples)
        assert c.feature_window[1] >= min(tl.num_samples, frame_to_sample(c.render_end + 1, fps, sr))
    # Video duration equals audio duration within one frame.
    video_s = Fraction(tl.num_frames) / tl.fps
    audio_s = Fraction(tl.num_samples, tl.sample_rate)
    assert 0 <= video_s - audio_s < 1 / tl.fps
    # The last frame starts inside the audio.
    assert tl.frame_to_sample(tl.num_frames - 1) < tl.num_samples


@pytest.mark.slow  # 300 hypothesis examples
@settings(max_examples=300, deadline=None)
@given(
    seconds=st.floats(min_value=0.01, max_value=3600.0),
    fps=st.sampled_from(FPS),
    sr=st.sampled_from(RATES),
    clip_frames=st.sampled_from([5, 17, 33, 81, 121]),
)
def test_clips_tile_frames_and_samples_exactly(seconds, fps, sr, clip_frames):
    n = max(1, int(seconds * sr))
    check_invariants(plan_timeline(n, sr, fps, clip_frames))


@pytest.mark.parametrize("fps", FPS)
def test_no_drift_at_sixty_minutes(fps):
    sr = 48000
    tl = plan_timeline(60 * 60 * sr, sr, fps, 81)
    check_invariants(tl)
    # Every seam's sample position is the exact rational frame time (no float accumulation).
    for f in tl.seams:
        assert tl.frame_to_sample(f) == (Fraction(f) / fps * sr).__floor__()


def test_ntsc_rate_is_exact():
    assert parse_fps(29.97) == Fraction(30000, 1001)
    assert parse_fps("30000/1001") == Fraction(30000, 1001)
    assert parse_fps(23.976) == Fraction(24000, 1001)
    assert frame_to_sample(30000, Fraction(30000, 1001), 48000) == 1001 * 48000


def test_audio_shorter_than_one_clip_gives_one_short_clip():
    tl = plan_timeline(16000 // 10, 16000, 25, 81)  # 0.1 s -> 3 frames
    assert tl.num_frames == 3
    assert len(tl.clips) == 1 and tl.clips[0].num_frames == 5
    assert tl.seams == [0, 4]


def test_remainder_rule_last_clip_is_shortest_4n1_reaching_the_end():
    # 100 frames at 25 fps with 81-frame clips: clip 0 = [0, 80], remainder needs frames 80..99 (20 frames).
    tl = plan_timeline(4 * 16000, 16000, 25, 81)
    assert tl.num_frames == 100
    assert [(c.frame_start, c.frame_end) for c in tl.clips] == [(0, 80), (80, 100)]
    assert tl.padded_frames == 101


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"num_samples": 0}, "audio"),
        ({"fps": 0}, "fps"),
        ({"fps": -5}, "fps"),
        ({"fps": 10_000}, "fps"),
        ({"fps": "abc"}, "fps"),
        ({"clip_frames": 80}, "clip_frames"),
        ({"clip_frames": 1}, "clip_frames"),
    ],
)
def test_bad_values_name_the_input(kwargs, name):
    args = {"num_samples": 16000, "sample_rate": 16000, "fps": 25, "clip_frames": 81, **kwargs}
    with pytest.raises(InputError) as e:
        plan_timeline(**args)
    assert e.value.input_name == name
    assert "Fix:" in str(e.value)


def test_json_round_trip():
    tl = plan_timeline(123457, 44100, "30000/1001", 33)
    back = Timeline.from_dict(__import__("json").loads(tl.to_json()))
    assert back == tl


@pytest.mark.slow  # 40 hypothesis examples with seam snapping
@settings(max_examples=40, deadline=None)
@given(
    seconds=st.floats(min_value=0.01, max_value=3600.0),
    fps=st.sampled_from(FPS),
    sr=st.sampled_from(RATES),
    clip_frames=st.sampled_from([5, 17, 33, 81, 121]),
    tolerance=st.sampled_from([0, 4, 8, 12, 40]),
    overlap=st.sampled_from([0, 4, 8]),
    seed=st.integers(0, 2**31 - 1),
)
def test_snapped_and_overlapping_timelines_still_tile_exactly(seconds, fps, sr, clip_frames, tolerance, overlap, seed):
    """Snapping (to random loudness) and overlap keep every invariant of the plain timeline."""
    n = max(1, int(seconds * sr))
    overlap = min(overlap, clip_frames - 1)
    base = plan_timeline(n, sr, fps, clip_frames, overlap_frames=overlap)
    levels = torch.rand(base.num_frames, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * -60
    nominal = [c.frame_start for c in base.clips[1:]]
    seams = snap_seams(nominal, levels, base.num_frames, tolerance)
    tl = plan_timeline(n, sr, fps, clip_frames, overlap_frames=overlap, seams=seams)
    tl.nominal_seams, tl.snap_tolerance_frames = base.nominal_seams, tolerance
    assert tl.num_frames == base.num_frames and len(tl.clips) == len(base.clips)
    check_invariants(tl, snapped=True)


def test_snapping_picks_the_quietest_candidates_and_respects_a_length_cap():
    num_frames = 400
    nominal = nominal_clip_starts(num_frames, 81)[1:]  # [80, 160, 240, 320]
    levels = torch.zeros(num_frames, dtype=torch.float64)
    levels[72], levels[172], levels[236] = -80, -80, -80  # quiet spots 8 before / 12 after / 4 before
    assert snap_seams(nominal, levels, num_frames, 12, length_penalty_db=0) == [72, 172, 236, 320]
    assert snap_seams(nominal, levels, num_frames, 4, length_penalty_db=0) == [80, 160, 236, 320]  # out of reach
    assert snap_seams(nominal, levels, num_frames, 0) == nominal
    # A cap of 81 frames: 72 -> 172 would need a 101-frame clip, so the best feasible plan drops one.
    capped = snap_seams(nominal, levels, num_frames, 12, max_clip_frames=81)
    assert all(b - a <= 80 for a, b in zip([0, *capped], capped))
    levels_flat = torch.zeros(num_frames, dtype=torch.float64)
    assert snap_seams(nominal, levels_flat, num_frames, 12) == nominal  # no dip: seams stay put


def test_the_length_penalty_prefers_equal_clip_lengths():
    """A shallow dip (2 dB) does not pay for two unequal clips; a deep pause (80 dB) does."""
    num_frames = 400
    nominal = nominal_clip_starts(num_frames, 81)[1:]  # [80, 160, 240, 320]
    shallow = torch.zeros(num_frames, dtype=torch.float64)
    shallow[156] = -0.5  # moving seam 2 by 4 frames: 0.5 dB quieter, two clips 4 frames off the nominal length
    assert snap_seams(nominal, shallow, num_frames, 8) == nominal
    assert snap_seams(nominal, shallow, num_frames, 8, length_penalty_db=0) == [80, 156, 240, 320]
    deep = torch.zeros(num_frames, dtype=torch.float64)
    deep[156] = -80
    snapped = snap_seams(nominal, deep, num_frames, 8)
    assert snapped[1] == 156 and snapped[0] == 80  # the later seams follow, so the clips keep one length


def test_overlap_declares_render_ranges_and_keyframe_offsets():
    tl = plan_timeline(
        10 * 16000, 16000, 25, 81, overlap_frames=8
    )  # 250 frames: clips [0,80] [80,160] [160,240] [240,252]
    a, b, c, d = tl.clips
    assert (a.render_start, a.render_end, a.keyframe_offsets) == (0, 88, (0, 80))
    assert (b.render_start, b.render_end, b.keyframe_offsets) == (72, 168, (8, 88))
    assert (c.render_start, c.render_end) == (152, 248)
    assert (d.render_start, d.render_end, d.num_frames) == (232, 252, 13)
    assert tl.overlap_frames == 8 and all((x.render_frames - 1) % 4 == 0 for x in tl.clips)
    plain = plan_timeline(10 * 16000, 16000, 25, 81)
    assert [x.sample_range for x in tl.clips] == [x.sample_range for x in plain.clips]  # owned audio unchanged


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"overlap_frames": 3}, "overlap_frames"),
        ({"overlap_frames": -4}, "overlap_frames"),
        ({"overlap_frames": 84}, "overlap_frames"),
        ({"seams": [81]}, "seams"),
        ({"seams": [80, 82]}, "seams"),
        ({"seams": [160, 80]}, "seams"),
        ({"seams": [0]}, "seams"),
        ({"seams": [400]}, "seams"),
    ],
)
def test_bad_overlap_and_seams_name_the_input(kwargs, name):
    with pytest.raises(InputError) as e:
        plan_timeline(16000 * 10, 16000, 25, 81, **kwargs)
    assert e.value.input_name == name


def test_json_round_trip_with_overlap_and_snapping_and_old_files():
    tl = plan_timeline(16000 * 4, 16000, "30000/1001", 33, overlap_frames=4, seams=[28, 60, 96])  # 120 frames
    tl.snap_tolerance_frames = 4
    assert tl.nominal_seams == [0, 32, 64, 96, 120] and tl.seams == [0, 28, 60, 96, 120]
    back = Timeline.from_dict(__import__("json").loads(tl.to_json()))
    assert back == tl and back.snapped_seams == [1, 2]
    old = tl.to_dict()
    for key in ("overlap_frames", "snap_tolerance_frames", "nominal_seams"):
        old.pop(key)
    for c in old["clips"]:
        c.pop("overlap_before"), c.pop("overlap_after")
    legacy = Timeline.from_dict(old)  # timeline.json written before overlap/snapping existed
    assert legacy.overlap_frames == 0 and legacy.snapped_seams == [] and legacy.seams == tl.seams

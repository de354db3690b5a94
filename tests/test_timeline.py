"""The master timeline: exact tiling of frames and samples at any length and rate."""

from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from avatar_cascade.errors import InputError
from avatar_cascade.timeline import Timeline, frame_to_sample, parse_fps, plan_timeline

FPS = [Fraction(16), Fraction(24), Fraction(25), Fraction(30000, 1001), Fraction(48)]
RATES = [8000, 16000, 22050, 44100, 48000, 96000, 192000]


def check_invariants(tl: Timeline) -> None:
    clips = tl.clips
    # Clips tile the frames, sharing exactly one seam frame between neighbours.
    assert clips[0].frame_start == 0
    for a, b in zip(clips, clips[1:]):
        assert b.frame_start == a.frame_end
    assert all((c.num_frames - 1) % 4 == 0 and c.num_frames >= 5 for c in clips)
    assert all(c.num_frames == tl.clip_frames for c in clips[:-1])
    # The rendered frames cover the audio, with less than one clip-rounding (4 frames) of tail.
    assert tl.padded_frames >= tl.num_frames
    assert tl.padded_frames - tl.num_frames < 4 or len(clips) == 1
    # Owned audio ranges tile [0, num_samples) exactly.
    assert clips[0].sample_range[0] == 0
    for a, b in zip(clips, clips[1:]):
        assert a.sample_range[1] == b.sample_range[0]
    assert clips[-1].sample_range[1] == tl.num_samples
    # Feature windows contain the owned range.
    for c in clips:
        assert c.feature_window[0] <= c.sample_range[0] and c.feature_window[1] >= c.sample_range[1]
    # Video duration equals audio duration within one frame.
    video_s = Fraction(tl.num_frames) / tl.fps
    audio_s = Fraction(tl.num_samples, tl.sample_rate)
    assert 0 <= video_s - audio_s < 1 / tl.fps
    # The last frame starts inside the audio.
    assert tl.frame_to_sample(tl.num_frames - 1) < tl.num_samples


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

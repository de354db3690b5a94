"""Control input on the timeline: each sub-clip's control slice is frame-exact at any duration, output
rate and control rate (exact rational arithmetic), sparse sketch keys land on their frames, masks follow
their frames, and bad control input is refused with a clear error."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from avatar_cascade.artefacts.control import ControlVideo, control_from_images
from avatar_cascade.artefacts.timeline import plan_timeline
from avatar_cascade.core.errors import InputError

FPS = [Fraction(16), Fraction(24), Fraction(25), Fraction(30000, 1001), Fraction(48), Fraction(24000, 1001)]
CONTROL_FPS = [Fraction(8), Fraction(12), Fraction(15), Fraction(24), Fraction(25), Fraction(30000, 1001), Fraction(60)]


def _indexed_frames(n: int, size: int = 8) -> torch.Tensor:
    """Control frame ``i`` carries its own index in its pixels (R = i % 256, G = i // 256)."""
    i = torch.arange(n)
    px = torch.stack([i % 256, i // 256, torch.full_like(i, 7)], dim=1).to(torch.uint8)
    return px[:, None, None, :].expand(n, size, size, 3).contiguous()


def _decode(video: torch.Tensor) -> list[int]:
    """Indices written by :func:`_indexed_frames`, back from a ``[3,T,H,W]`` slice in [-1, 1] (-1 = no control)."""
    px = ((video[:, :, 0, 0] + 1) * 127.5).round().long()  # [3, T]
    return [int(r + 256 * g) if b == 7 else -1 for r, g, b in px.T.tolist()]


def _expected(frame: int, fps: Fraction, cfps: Fraction, start: int, n: int) -> int:
    if frame < start:
        return -1
    i = math.floor(Fraction(frame - start) / fps * cfps)  # the control frame whose span holds the frame's start
    return i if i < n else -1


@pytest.mark.slow  # 150 hypothesis examples
@settings(max_examples=150, deadline=None)
@given(
    seconds=st.floats(min_value=0.05, max_value=40.0),
    fps=st.sampled_from(FPS),
    cfps=st.sampled_from(CONTROL_FPS),
    clip_frames=st.sampled_from([5, 17, 33, 81]),
    overlap=st.sampled_from([0, 4]),
    start=st.integers(min_value=0, max_value=9),
    shortfall=st.integers(min_value=0, max_value=20),
)
def test_every_clip_gets_its_exact_control_slice(seconds, fps, cfps, clip_frames, overlap, start, shortfall):
    sr = 16000
    overlap = overlap if overlap < clip_frames - 1 else 0
    tl = plan_timeline(max(1, int(seconds * sr)), sr, fps, clip_frames, overlap_frames=overlap)
    need = math.ceil(Fraction(tl.padded_frames) / fps * cfps) + 1
    n = max(1, need - shortfall)  # sometimes shorter than the video: its tail gets no control
    control = ControlVideo(_indexed_frames(n), fps=cfps, start_frame=start)
    seen: dict[int, int] = {}
    for c in tl.clips:
        video, masks, idx = control.clip_slice(c.render_start, c.render_frames, tl.fps, 8, 8)
        assert video.shape == (3, c.render_frames, 8, 8) and masks.shape == (c.render_frames, 8, 8)
        got = _decode(video)
        want = [_expected(f, tl.fps, cfps, start, n) for f in range(c.render_start, c.render_end + 1)]
        assert got == want
        assert [-1 if i is None else i for i in idx] == want
        assert torch.equal(masks, torch.ones_like(masks))
        for f, i in zip(range(c.render_start, c.render_end + 1), got):  # a frame rendered twice agrees
            assert seen.setdefault(f, i) == i
    assert sorted(seen) == list(range(tl.padded_frames))


@pytest.mark.parametrize("fps", [Fraction(25), None])  # None: one control frame per output frame
def test_same_rate_control_maps_frame_to_frame(fps):
    tl = plan_timeline(16000 * 2, 16000, 25, 17)
    control = ControlVideo(_indexed_frames(tl.padded_frames), fps=fps)
    c = tl.clips[1]
    video, _, _ = control.clip_slice(c.render_start, c.render_frames, tl.fps, 8, 8)
    assert _decode(video) == list(range(c.render_start, c.render_end + 1))


def test_sparse_sketch_keys_sit_on_their_frames_only():
    frames = _indexed_frames(3)
    control = ControlVideo(frames, keys=(3, 9, 30))
    video, masks, idx = control.clip_slice(0, 17, Fraction(16), 8, 8)
    got = _decode(video)
    assert [f for f, i in enumerate(got) if i >= 0] == [3, 9]
    assert got[3] == 0 and got[9] == 1 and idx[9] == 1
    assert float(video[:, 0].abs().max()) == 0.0  # no control: grey
    assert torch.equal(masks, torch.ones_like(masks))
    video2, _, _ = control.clip_slice(16, 17, Fraction(16), 8, 8)
    assert [f for f, i in enumerate(_decode(video2)) if i >= 0] == [14]


def test_masks_follow_their_control_frames():
    frames = _indexed_frames(4)
    masks = torch.stack([torch.full((8, 8), v) for v in (0.0, 1.0, 0.0, 1.0)])
    control = ControlVideo(frames, fps=Fraction(8), masks=masks)
    _, m, idx = control.clip_slice(0, 8, Fraction(16), 8, 8)  # output 16 fps: each control frame twice
    assert idx == [0, 0, 1, 1, 2, 2, 3, 3]
    assert [float(x[0, 0]) for x in m] == [0, 0, 1, 1, 0, 0, 1, 1]


def test_control_frames_are_framed_like_keyframes_not_stretched():
    wide = torch.zeros(1, 8, 32, 3, dtype=torch.uint8)
    wide[:, :, 12:20] = 255  # a white bar in the middle third-ish
    control = ControlVideo(wide, fps=Fraction(16))
    video, _, _ = control.clip_slice(0, 1, Fraction(16), 8, 8)  # square target: centre crop 8x8
    assert float(video[:, 0].min()) == 1.0  # the crop is the white centre, not a squeezed bar


def test_identity_changes_with_what_the_control_does():
    frames = _indexed_frames(3)
    a = ControlVideo(frames, fps=Fraction(16)).identity()
    assert a == ControlVideo(frames.clone(), fps=Fraction(16)).identity()
    assert a != ControlVideo(frames, fps=Fraction(16), strength=0.5).identity()
    assert a != ControlVideo(frames, fps=Fraction(8)).identity()
    other = frames.clone()
    other[1, 0, 0, 0] += 1
    assert a != ControlVideo(other, fps=Fraction(16)).identity()


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"frames": torch.zeros(2, 8, 8, 3)}, "control"),  # float, not uint8
        ({"frames": torch.zeros(0, 8, 8, 3, dtype=torch.uint8), "fps": Fraction(1)}, "control"),
        ({"frames": torch.zeros(2, 8, 8, 3, dtype=torch.uint8), "fps": 0}, "control_fps"),
        ({"frames": torch.zeros(2, 8, 8, 3, dtype=torch.uint8), "keys": (1, 1)}, "sketch_frames"),
        ({"frames": torch.zeros(2, 8, 8, 3, dtype=torch.uint8), "fps": 8, "masks": torch.ones(3, 8, 8)},
         "control_masks"),
        ({"frames": torch.zeros(2, 8, 8, 3, dtype=torch.uint8), "fps": 8, "strength": -1.0}, "control_strength"),
    ],
)
def test_bad_control_input_is_named(kwargs, name):
    with pytest.raises(InputError) as err:
        ControlVideo(**kwargs)
    assert err.value.input_name == name


def test_images_become_uint8_control_frames():
    img = torch.rand(2, 6, 6, 4)
    out = control_from_images(img)
    assert out.dtype == torch.uint8 and out.shape == (2, 6, 6, 3)
    assert torch.equal(out, (img[..., :3] * 255).round().to(torch.uint8))
    with pytest.raises(InputError):
        control_from_images(torch.full((1, 4, 4, 3), float("nan")))

"""Frame interpolation in the stitcher's stream: motion-compensated in-between frames beat the blend on
rendered moving content (the true middle frame is known), occlusions take the visible side, and the
frame count / audio stay exact at the new rate."""

from __future__ import annotations

from fractions import Fraction

import cv2
import numpy as np
import pytest

from avatar_cascade.artefacts.timeline import plan_timeline
from avatar_cascade.media import probe_media
from avatar_cascade.stages.stitcher.interpolate import FrameInterpolator, blend_frames
from tests.helpers import SR, clip_frames, stitch
from tests.helpers import cpu_runtime as quiet_runtime
from tests.helpers import tone_track as speech

H, W = 120, 160


def texture(n: int = 640, seed: int = 0) -> np.ndarray:
    """A square uint8 texture with detail at several scales and sharp-edged discs."""
    rng = np.random.default_rng(seed)
    img = np.zeros((n, n, 3), np.float32)
    for s in (4, 16, 64):
        img += cv2.resize(rng.random((n // s + 1, n // s + 1, 3)).astype(np.float32), (n, n), cv2.INTER_CUBIC)
    img = (img / 3 * 255).clip(0, 255).astype(np.uint8)
    for _ in range(30):
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        cv2.circle(img, tuple(int(v) for v in rng.integers(0, n, 2)), int(rng.integers(3, 15)), colour, -1)
    return img


def render(tex: np.ndarray, tau: float, shift=(8.0, 4.0), degrees: float = 3.0) -> np.ndarray:
    """The texture turned by ``degrees * tau`` about its centre and moved by ``shift * tau`` pixels, seen
    through an ``H`` x ``W`` window (rendered at 2x and area-downscaled, so it is sampled cleanly)."""
    n = tex.shape[0]
    m = cv2.getRotationMatrix2D((n / 2, n / 2), degrees * tau, 1.0)
    m[:, 2] += [shift[0] * tau - (n / 2 - W / 2), shift[1] * tau - (n / 2 - H / 2)]
    big = cv2.warpAffine(tex, 2 * m, (2 * W, 2 * H), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
    return cv2.resize(big, (W, H), interpolation=cv2.INTER_AREA)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255**2 / max(1e-6, np.mean((a.astype(np.float64) - b) ** 2))))


def test_flow_interpolation_beats_the_blend_by_3_db_on_a_translating_rotating_pattern():
    tex = texture()
    ip = FrameInterpolator("flow")
    gains = []
    for tau in (0.0, 2.0, 5.0):
        a, truth, b = render(tex, tau), render(tex, tau + 0.5), render(tex, tau + 1)
        flow = ip.between(a, b, [0.5])[0]
        blend = blend_frames(a, b, 0.5)
        gains.append(psnr(flow, truth) - psnr(blend, truth))
        assert psnr(flow, truth) > 30, tau
    assert min(gains) >= 3.0, gains  # measured: ~16 dB (flow ~36 dB, blend ~20 dB)


def test_interpolation_is_exact_at_any_time_for_a_pure_translation():
    tex = texture(seed=1)
    ip = FrameInterpolator()
    a, b = render(tex, 0, degrees=0), render(tex, 1, degrees=0)
    for t, got in zip((0.25, 0.5, 0.75), ip.between(a, b, [0.25, 0.5, 0.75])):
        truth = render(tex, t, degrees=0)
        inner = (slice(12, -12), slice(12, -12))  # pixels that were in view in both frames
        assert psnr(got[inner], truth[inner]) > 34, t
        assert psnr(got[inner], truth[inner]) - psnr(blend_frames(a, b, t)[inner], truth[inner]) > 10, t


def test_a_fast_rotation_is_followed_to_the_middle():
    """10 degrees per frame: the flow differs across the frame, so the in-between pixel must read the flow
    where it came from (the fixed point ``d = F01(x - t d)``), not where it lands."""
    tex = texture()
    a, truth, b = render(tex, 0, degrees=10), render(tex, 0.5, degrees=10), render(tex, 1, degrees=10)
    inner = (slice(10, -10), slice(10, -10))
    got = FrameInterpolator().between(a, b, [0.5])[0]
    assert psnr(got[inner], truth[inner]) > 38  # measured 42.2 dB; reading the flow at x + t d: 30.6 dB


def test_occluded_pixels_come_from_the_frame_that_shows_them(monkeypatch):
    """A textured disc moves 12 px over a still textured background: the background it is about to cover
    exists only in the first frame, the background it uncovers only in the second. Weighting each
    neighbour by how well its sample is a fixed point of the flow takes each pixel from the side that
    shows it; equal weights mix in the disc (a ghost). Measured on the covered + uncovered pixels."""
    import avatar_cascade.stages.stitcher.interpolate as interp

    bg, fg = texture(seed=2)[:H, :W], texture(seed=3)[:H, : W + 64]

    def disc_mask(x: int) -> np.ndarray:
        mask = np.zeros((H, W), np.uint8)
        cv2.circle(mask, (x, H // 2), 30, 1, -1)
        return mask > 0

    def scene(x: int) -> np.ndarray:
        img = bg.copy()
        img[disc_mask(x)] = np.roll(fg, x, axis=1)[:, :W][disc_mask(x)]  # the disc's texture moves with it
        return img

    a, truth, b = scene(60), scene(66), scene(72)
    region = disc_mask(60) ^ disc_mask(72)
    aware = psnr(FrameInterpolator().between(a, b, [0.5])[0][region], truth[region])
    monkeypatch.setattr(interp, "_visibility", lambda miss: np.ones(miss.shape, np.float32))
    equal = psnr(FrameInterpolator().between(a, b, [0.5])[0][region], truth[region])
    assert aware > equal + 0.75, (aware, equal)  # measured: 24.8 dB against 23.4 dB


@pytest.mark.parametrize(("fps", "factor"), [(24, 2), (25, 2), (24, 3)])
def test_interpolated_video_keeps_audio_exact_at_the_new_rate(tmp_path, fps, factor):
    samples = int(3.37 * SR)  # a duration that is no whole number of frames at either rate
    tl = plan_timeline(samples, SR, fps, clip_frames=17)
    clips = (clip_frames(tl, k) for k in range(len(tl.clips)))
    result = stitch(clips, tl, speech(samples), tmp_path / "v.mp4", quiet_runtime(), interpolate=factor)
    rate = Fraction(fps * factor)
    assert result.fps == rate and result.num_frames == -(-samples * rate.numerator // SR)  # ceil(duration * fps)
    info = probe_media(result.path)
    assert info["video_frames"] == result.num_frames and info["fps"] == rate
    assert info["audio_samples"] == samples == result.audio_samples
    assert abs(Fraction(info["video_frames"]) / rate - Fraction(samples, SR)) < 1 / rate  # within one output frame


@pytest.mark.parametrize("factor", [2, 3])
def test_stitched_in_between_frames_are_motion_compensated(tmp_path, factor):
    """Through ``stitch_clips``: the frames between two rendered ones are the in-between frames at
    ``t = 1/n .. (n-1)/n``, close to the truth at those times."""
    tex = texture(seed=4)
    tl = plan_timeline(int(1.0 * SR), SR, 8, clip_frames=5)  # 8 frames in clips 0-4, 4-8
    truth = [render(tex, i / factor) for i in range(factor * tl.clips[-1].frame_end + 1)]

    def clips():
        for c in tl.clips:
            yield np.stack([truth[factor * i] for i in range(c.frame_start, c.frame_end + 1)])

    result = stitch(
        clips(), tl, speech(SR), tmp_path / "v.mp4", quiet_runtime(), interpolate=factor, collect_frames=100
    )
    frames = result.frames.numpy()
    n = factor * tl.num_frames
    assert result.num_frames == n and frames.shape == (n, H, W, 3)
    for i in range(factor * (tl.num_frames - 1)):
        k, j = divmod(i, factor)
        if j:
            blend = blend_frames(truth[factor * k], truth[factor * (k + 1)], j / factor)
            assert psnr(frames[i], truth[i]) > max(30.0, psnr(blend, truth[i]) + 3), i  # measured ~36 dB
        else:
            assert np.array_equal(frames[i], truth[i])  # rendered frames pass through untouched
    assert all(np.array_equal(f, frames[-factor]) for f in frames[-factor + 1 :])  # the last frame held

"""Keyframes from images: exact in-between timeline, audio fitting, and drawn keys chained through the
refiner and stitcher with every key written once."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch

from avatar_cascade.artefacts.timeline import frame_to_sample
from avatar_cascade.core.errors import InputError
from avatar_cascade.media import AudioTrack, probe_media
from avatar_cascade.stages.inbetween.inbetween import fit_images, keyframes_from_images
from avatar_cascade.stages.inbetween.settings import InbetweenSettings as IB
from tests.helpers import cpu_runtime


def keys(n: int, h: int = 40, w: int = 60) -> torch.Tensor:
    g = torch.Generator().manual_seed(n)
    return torch.rand(n, h, w, 3, generator=g)


@pytest.mark.parametrize(
    ("n", "segment", "fps"),
    [(2, 5, 16), (4, 9, 24), (3, 17, "30000/1001"), (6, 81, 25), (5, 13, 23.976)],
)
def test_timeline_puts_key_k_at_frame_k_times_segment(n, segment, fps):
    kf, aligned, story = keyframes_from_images(keys(n), IB(segment_frames=segment, fps=fps, width=32, height=16))
    tl = aligned.timeline
    assert tl.num_frames == (n - 1) * (segment - 1) + 1
    assert tl.seams == kf.frame_indices == [k * (segment - 1) for k in range(n)]
    assert [c.num_frames for c in tl.clips] == [segment] * (n - 1) and tl.padded_frames == tl.num_frames
    assert aligned.audio.num_samples == tl.num_samples == frame_to_sample(tl.num_frames, tl.fps, tl.sample_rate)
    assert aligned.audio.waveform.abs().max() == 0  # silence
    assert kf.images.shape == (n, 16, 32, 3) and kf.images.dtype == torch.uint8
    assert len(story.shots) == n - 1


def test_audio_is_cut_or_padded_to_the_video():
    sr = 22050
    long = AudioTrack(torch.ones(2, sr * 5), sr)
    _, aligned, _ = keyframes_from_images(keys(3), IB(segment_frames=9, fps=16, width=16, height=16), audio=long)
    want = frame_to_sample(17, Fraction(16), sr)
    assert aligned.audio.num_samples == want and aligned.audio.waveform.shape[0] == 2
    short = AudioTrack(torch.ones(1, 1000), sr)
    _, aligned, _ = keyframes_from_images(keys(3), IB(segment_frames=9, fps=16, width=16, height=16), audio=short)
    assert (
        aligned.audio.num_samples == want and aligned.audio.waveform[0, 999] == 1 and aligned.audio.waveform[0, -1] == 0
    )


def test_keys_are_centre_cropped_not_stretched():
    img = torch.zeros(1, 20, 60, 3)
    img[:, :, :20] = 1.0  # white left third, black centre and right: a 2:1 crop keeps x = 10..50
    img[:, :, 40:, 0] = 1.0  # red right third
    out = fit_images(torch.cat([img, img]), 32, 16)
    assert out.shape == (2, 16, 32, 3)
    assert (
        out[0, :, 0].float().mean() > 200
        and out[0, :, 16].float().mean() < 10
        and out[0, :, -1, 0].float().mean() > 200
    )


def test_bad_inputs_name_the_input():
    with pytest.raises(InputError, match="images.*at least two keyframes"):
        keyframes_from_images(keys(1), IB(segment_frames=9, fps=16, width=32, height=32))
    with pytest.raises(InputError, match="segment_frames.*4n\\+1"):
        keyframes_from_images(keys(2), IB(segment_frames=8, fps=16, width=32, height=32))
    with pytest.raises(InputError, match="width"):
        keyframes_from_images(keys(2), IB(segment_frames=9, fps=16, width=30, height=32))
    with pytest.raises(InputError, match="images"):
        keyframes_from_images(torch.rand(2, 8, 8), IB(segment_frames=9, fps=16, width=32, height=32))


def test_node_builds_keyframes_timeline_and_storyline():
    from nodes import NODE_CLASS_MAPPINGS

    node = NODE_CLASS_MAPPINGS["AvatarCascadeKeyframesFromImages"]
    assert node.VALIDATE_INPUTS(segment_frames=17, fps=16.0, width=832, height=480) is True
    msg = node.VALIDATE_INPUTS(segment_frames=16, fps=16.0, width=832, height=480)
    assert isinstance(msg, str) and msg.startswith("segment_frames") and "4n+1" in msg
    audio = {"waveform": torch.zeros(1, 1, 8000), "sample_rate": 16000}
    kf, aligned, story = node().build(keys(3), 5, 16.0, 32, 32, "a cat jumps", audio=audio)
    assert aligned.timeline.num_frames == 9 and len(kf.images) == 3 and "a cat jumps" in story.shot_prompt(1)


def test_drawn_keys_are_chained_through_refiner_and_stitcher_once_each(wan_models, tmp_path):
    """``wan_models``: the tiny demo DiT, VAE and text encoder (conftest.py)."""
    from avatar_cascade.sampling.settings import SamplerSettings
    from avatar_cascade.stages.refiner.refiner import RefinerSettings, refine_clips
    from avatar_cascade.stages.stitcher.settings import StitcherSettings
    from avatar_cascade.stages.stitcher.stitcher import stitch_clips

    small = IB(segment_frames=5, fps=16, width=16, height=16)
    kf, aligned, story = keyframes_from_images(keys(3), small, prompt="a ball bounces")
    rt = cpu_runtime()
    settings = RefinerSettings(seed=1, batch_size=2, sampler=SamplerSettings(steps=2, guidance=3.0, shift=3.0))
    clips = refine_clips(wan_models, kf, aligned, story, settings, rt, cache_dir=tmp_path / "clips")
    plain = StitcherSettings(colour_match=0.0)  # the drawn keys are the colours
    out = stitch_clips(
        clips.iter_frames(), aligned.timeline, aligned.audio, tmp_path / "inbetween.mp4", plain, rt, collect_frames=100
    )
    a, b = clips.frames(0), clips.frames(1)
    assert a.shape[0] == b.shape[0] == 5
    # 9 frames: segment 0 whole, then segment 1 without its first frame (key 1, already written as segment 0's last)
    assert out.num_frames == 9 and torch.equal(out.frames, torch.cat([a, b[1:]]))
    info = probe_media(out.path)
    assert info["video_frames"] == 9 and info["fps"] == 16 and info["audio_samples"] == aligned.timeline.num_samples
    assert np.isclose(info["audio"]["duration_s"], 9 / 16, atol=1 / 16)

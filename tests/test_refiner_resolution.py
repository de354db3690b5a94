"""The refiner above the keyframes' resolution (KlingAvatar 2.0's spatio-temporal cascade: 480p keyframes, sub-clips
refined at 720p): the keyframes framed to the refiner's bucket before the VAE, clips and keyframes at that size,
the timeline (frame counts, audio) untouched, the cache keyed by it, the artist told about the regime."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from avatar_cascade.artefacts.keyframes import Keyframes
from avatar_cascade.media.framing import fit_frames
from avatar_cascade.models.handle import WanModels
from avatar_cascade.models.presets import regime_warnings
from avatar_cascade.sampling.settings import SamplerSettings
from avatar_cascade.stages.refiner import refiner as refiner_module
from avatar_cascade.stages.refiner.refiner import RefinerSettings, refine_clips
from avatar_cascade.stages.refiner.resolution import refine_size
from tests.helpers import cpu_runtime as quiet
from tests.helpers import refiner_inputs as make_inputs

SETTINGS = RefinerSettings(seed=7, batch_size=2, sampler=SamplerSettings(steps=2, guidance=3.0, shift=3.0))


def _run(models, cache, settings, inputs, runtime=None, dit=None):
    kf, aligned, story = inputs
    m = WanModels(*models) if dit is None else WanModels(dit, *models[1:])
    return refine_clips(m, kf, aligned, story, settings, runtime or quiet(), cache_dir=cache)


def _wide_inputs():
    """3 clips with 16x32 (w x h = 32 x 16, aspect 2) random keyframes."""
    kf, aligned, story = make_inputs()
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (len(kf.images), 16, 32, 3), generator=g, dtype=torch.uint8)
    return Keyframes(images, kf.frame_indices, kf.source_indices), aligned, story


def test_the_refiner_bucket_keeps_the_keyframes_aspect():
    kf = Keyframes(torch.zeros(2, 480, 832, 3, dtype=torch.uint8), [0, 80], [None, None])
    assert refine_size(kf, None, 16) == (832, 480) and refine_size(kf, 480, 16) == (832, 480)
    assert refine_size(kf, 720, 16) == (1248, 720)  # 832 x 480 at 720 rows: 1248 x 720, multiples of 16
    kf = Keyframes(torch.zeros(2, 832, 480, 3, dtype=torch.uint8), [0, 80], [None, None])
    assert refine_size(kf, 1280, 16) == (736, 1280)  # portrait: 480 / 832 * 1280 = 738 -> 736


def test_keyframes_of_another_aspect_are_centre_cropped_not_stretched(models):
    """30 x 16 keyframes (aspect 1.875) at 32 rows: the bucket is 48 x 32 (1.5); the middle 24 x 16 is kept."""
    from avatar_cascade.stages.refiner.resolution import at_refine_size

    g = torch.Generator().manual_seed(2)
    kf = Keyframes(torch.randint(0, 256, (2, 16, 30, 3), generator=g, dtype=torch.uint8), [0, 4], [None, None])
    out = at_refine_size(kf, 32, models[0], quiet())
    assert (out.width, out.height) == (48, 32)
    assert torch.equal(out.images, fit_frames(kf.images[:, :, 3:27], 48, 32, "crop"))  # centre 24 of 30 columns
    x = kf.images.permute(0, 3, 1, 2).float()
    stretched = torch.nn.functional.interpolate(x, size=(32, 48), mode="bicubic", align_corners=False, antialias=True)
    stretched = stretched.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
    assert (out.images.float() - stretched.float()).abs().mean() > 10  # the check can fail: a stretch differs


def test_clips_render_at_the_refiner_size_with_the_keyframes_framed_to_it(models, tmp_path, monkeypatch):
    """Keyframes 32 x 16 -> the refiner at 32 rows renders 64 x 32: the VAE conditions on the keyframes
    framed to 64 x 32 (not stretched, not the small ones), at the same clip ends as at the keyframes' size."""
    seen = []
    real = refiner_module.encode_condition

    def spy(vae, reqs, height, width):
        seen.append(((height, width), [dict(r.known) for r in reqs]))
        return real(vae, reqs, height, width)

    monkeypatch.setattr(refiner_module, "encode_condition", spy)
    inputs = _wide_inputs()
    kf, aligned, _ = inputs
    clips = _run(models, tmp_path / "c", dataclasses.replace(SETTINGS, height=32), inputs)
    assert (clips.width, clips.height) == (64, 32)
    want = fit_frames(kf.images, 64, 32, "crop")
    assert torch.equal(clips.keyframes, want)  # what the stitcher colour-matches to, at the clips' size
    tl = aligned.timeline
    assert [r.num_frames for r in clips.records] == [c.render_frames for c in tl.clips]  # the timeline untouched
    for r in clips.records:
        assert tuple(clips.frames(r.index).shape) == (r.num_frames, 32, 64, 3)
    assert {size for size, _ in seen} == {(32, 64)}
    known = [k for _, batch in seen for k in batch]
    assert len(known) == len(tl.clips)
    model_frames = want.permute(0, 3, 1, 2).float().div(127.5).sub(1)
    for c, frames in zip(tl.clips, known):
        assert sorted(frames) == [0, c.render_frames - 1]
        assert torch.allclose(frames[0], model_frames[c.index]) and torch.allclose(
            frames[c.render_frames - 1], model_frames[c.index + 1]
        )


def test_the_refiner_size_is_part_of_the_cache_key(models, tmp_path, counter):
    inputs = make_inputs()
    cache = tmp_path / "c"
    small = _run(models, cache, SETTINGS, inputs)
    big = _run(models, cache, dataclasses.replace(SETTINGS, height=32), inputs)
    assert (small.height, big.height) == (16, 32)
    assert {r.key for r in small.records}.isdisjoint(r.key for r in big.records)
    assert counter.take() > 0
    again = _run(models, cache, dataclasses.replace(SETTINGS, height=32), inputs)
    assert counter.take() == 0 and all(r.cached for r in again.records)  # reused, not re-rendered
    assert torch.equal(again.frames(1), big.frames(1))


def test_the_artist_is_told_about_upsampled_keyframes_and_the_trained_resolutions(models, tmp_path):
    rt = quiet()
    _run(models, tmp_path / "c", dataclasses.replace(SETTINGS, height=32), make_inputs(), runtime=rt)
    lines = [w for w in rt.warnings if w.startswith("refiner: ")]
    assert any("sub-clips at 32x32 from keyframes of 16x16" in m and "Keyframe Extractor" in m for m in lines)
    rt = quiet()
    flf = dataclasses.replace(models[0], variant="wan2.1-flf2v-14b")  # a real family: its trained sizes apply
    _run(models, tmp_path / "d", dataclasses.replace(SETTINGS, height=32), make_inputs(), runtime=rt, dit=flf)
    lines = [w for w in rt.warnings if w.startswith("refiner: ")]
    assert any("frames of 32x32" in m and "832x480 (480p) and 1280x720 (720p)" in m for m in lines), lines


def test_regime_warnings_check_the_rendered_size(models):
    i2v = dataclasses.replace(models[0], variant="wan2.1-i2v-14b")
    assert regime_warnings(i2v, size=(1248, 720)) == [] and regime_warnings(i2v, size=(832, 480)) == []
    (far,) = regime_warnings(i2v, size=(1920, 1088))
    assert "frames of 1920x1088" in far and "1280x720 (720p)" in far
    (odd,) = regime_warnings(i2v, size=(840, 480))
    assert "multiples of 16" in odd


def test_the_refiner_height_is_a_node_widget_and_a_cli_flag(tmp_path):
    from avatar_cascade.cli import run_config
    from avatar_cascade.media import sample_audio_path, sample_image_path
    from nodes.refiner import AvatarCascadeFLFRefiner, refiner_widgets

    spec = AvatarCascadeFLFRefiner.INPUT_TYPES()["optional"]["height"]
    assert spec[0] == "INT" and spec[1]["default"] == 0
    assert refiner_widgets().build({"height": 720}).height == 720
    assert refiner_widgets().build({"height": 0}).height is None
    base = ["--image", str(sample_image_path()), "--audio", str(sample_audio_path()), "--prompt", "hi"]
    base += ["--models", str(tmp_path), "--out", str(tmp_path / "o.mp4")]
    assert run_config([*base, "--refiner-height", "720"]).refiner.height == 720
    assert run_config(base).refiner.height is None
    with pytest.raises(Exception, match="height"):
        RefinerSettings(height=8).check()


@pytest.mark.slow  # the whole tiny cascade: keyframes at 64 x 64, sub-clips refined at 96 x 96, then stitched
def test_cli_run_refines_above_the_keyframes_resolution(demo_models_dir, tmp_path):
    from fractions import Fraction

    from avatar_cascade.cli import main
    from avatar_cascade.demo.models import DIT_FILE
    from avatar_cascade.media import load_audio, probe_media, sample_audio_path, sample_image_path
    from tests.test_stitcher_upscale import TINY_RUN

    out = tmp_path / "o.mp4"
    args = ["--image", str(sample_image_path()), "--audio", str(sample_audio_path()), "--prompt", "hi"]
    args += ["--dit", DIT_FILE, "--models", str(demo_models_dir), "--out", str(out), "--workdir", str(tmp_path / "w")]
    assert main(["run", *args, *TINY_RUN, "--refiner-height", "96"]) == 0
    info = probe_media(out)
    assert (info["width"], info["height"], info["fps"]) == (96, 96, Fraction(16))
    src = load_audio(sample_audio_path())
    assert abs(Fraction(info["video_frames"], 16) - Fraction(src.num_samples, src.sample_rate)) < Fraction(1, 16)
    from PIL import Image

    first_keyframe = Image.open(tmp_path / "w" / "keyframes" / "keyframe_00000.png")
    assert first_keyframe.size == (64, 64)  # the keyframes stayed at their own size; the clips are 96 x 96

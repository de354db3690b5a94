"""The cascade that does not drift: framing, reference anchoring, the conditions the DiT really gets.

Each test reads what the tiny real DiT receives (a forward pre-hook on the transformer) or what the
work folder records, so that breaking the property makes it fail:

* the reference stretched -> the circle tests;
* a blueprint window conditioned on anything but the reference (a chain) -> the anchoring test, and
  ``anchor_depth`` > 2 in the 10-minute run;
* the reference's image tokens replaced -> the anchoring test with an FLF2V DiT and CLIP vision;
* the last keyframe dropped from the refiner's condition, or its mask bit cleared -> the condition test;
* the sampler's shift ignored -> the timestep test;
* InfiniteTalk's clean first latent not pinned -> the adapter test;
* negative-frame guidance's sign flipped -> the guidance test.
"""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

from avatar_cascade.media.framing import bucket_size, fit_frames, frame_reference
from avatar_cascade.sampling.settings import SamplerSettings
from avatar_cascade.stages.blueprint.sampler import render_blueprint
from avatar_cascade.stages.blueprint.settings import BlueprintSettings
from avatar_cascade.stages.director.rules import rule_based_storyline
from avatar_cascade.stages.keyframes.extractor import extract_keyframes
from avatar_cascade.stages.keyframes.settings import KeyframeSettings, LiftSettings
from tests.helpers import aligned_tone, cpu_runtime, refiner_inputs


class Inputs:
    """Records the ``hidden_states`` (and image tokens, timesteps) of every forward of a transformer."""

    def __init__(self, transformer: torch.nn.Module) -> None:
        self.hidden, self.images, self.timesteps = [], [], []

        def hook(_mod, _args, kwargs):
            self.hidden.append(kwargs["hidden_states"].detach().clone())
            self.timesteps.append(kwargs["timestep"].detach().clone())
            img = kwargs.get("encoder_hidden_states_image")
            self.images.append(None if img is None else img.detach().clone())

        self._h = transformer.register_forward_pre_hook(hook, with_kwargs=True)

    def close(self) -> None:
        self._h.remove()


def circle_image(width: int, height: int) -> torch.Tensor:
    """A white disc of diameter 0.3 * the short side on black (it survives any centre crop), ``[H,W,3]`` 0..1."""
    y, x = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")
    r = 0.15 * min(width, height)
    disc = ((x - width / 2) ** 2 + (y - height / 2) ** 2 <= r * r).float()
    return disc[..., None].expand(height, width, 3).contiguous()


def disc_aspect(img: torch.Tensor) -> float:
    """Width / height of the bright disc's bounding box in ``[H,W,3]`` (uint8 or float)."""
    lum = img.float().mean(-1)
    mask = lum > lum.max() / 2
    ys, xs = torch.nonzero(mask, as_tuple=True)
    return float(xs.max() - xs.min() + 1) / float(ys.max() - ys.min() + 1)


# ----------------------------------------------------------------------------- framing


@pytest.mark.parametrize("source", [(360, 640), (640, 480)])  # 9:16 portrait, 4:3
@pytest.mark.parametrize("framing", ["bucket", "crop", "pad"])
def test_a_9_16_and_a_4_3_reference_come_out_undistorted(source, framing, tmp_path):
    ref = circle_image(*source)
    aligned = aligned_tone(2.0)
    settings = KeyframeSettings(width=832, height=480, framing=framing, lift=LiftSettings(denoise=0.0))
    size = bucket_size(source[0] / source[1], 832, 480) if framing == "bucket" else (832, 480)
    prepared = frame_reference(ref, *size, framing)
    assert disc_aspect(prepared) == pytest.approx(1.0, rel=0.03)
    from avatar_cascade.artefacts.blueprint import Blueprint

    bp = Blueprint.from_frames(torch.zeros(17, 32, 32, 3, dtype=torch.uint8), 8)
    kf = extract_keyframes(bp, aligned, ref, settings, cpu_runtime(), work_dir=tmp_path)
    assert disc_aspect(kf.images[0]) == pytest.approx(1.0, rel=0.03)  # keyframe 0: the reference itself
    h, w = kf.images.shape[1:3]
    if framing == "bucket":  # the size follows the image's aspect, at about the asked area
        assert w / h == pytest.approx(source[0] / source[1], rel=0.06) and 0.9 < w * h / (832 * 480) < 1.06
    else:
        assert (w, h) == (832, 480)
    saved = json.loads((tmp_path / "keyframes.json").read_text())["scores"][0]
    assert saved["framing"].startswith(f"framing {framing}") and saved["anchor_depth"] == 0


def test_bucket_sizes_are_model_sizes_near_the_area():
    assert bucket_size(832 / 480, 832, 480) == (832, 480)
    w, h = bucket_size(9 / 16, 832, 480)
    assert w % 16 == 0 and h % 16 == 0 and abs(math.log((w / h) / (9 / 16))) < 0.03 and h > w
    w, h = bucket_size(1.0, 1280, 704, multiple=32)
    assert w % 32 == 0 and h % 32 == 0 and w == h
    frames = fit_frames(circle_image(900, 300)[None].mul(255).to(torch.uint8), 512, 512, "pad")
    assert frames.shape == (1, 512, 512, 3) and disc_aspect(frames[0]) == pytest.approx(1.0, rel=0.03)


# ----------------------------------------------------------------------------- reference anchoring


def _blueprint_settings(**kw) -> BlueprintSettings:
    base = dict(width=32, height=32, fps=4, window_frames=9, lead_frames=4, batch_size=1)
    base["sampler"] = SamplerSettings(steps=2, guidance=1.0)
    return BlueprintSettings(**{**base, **kw})


def test_every_blueprint_window_is_conditioned_on_the_reference(wan_models, tmp_path):
    """Window after window, the known frame is the framed reference (mask 1 on latent frame 0 only): no
    window is conditioned on another window's frames."""
    from avatar_cascade.sampling.conditioning import encode_video

    aligned = aligned_tone(4.0)
    story = rule_based_storyline("talk", aligned.timeline, None)
    reference = torch.rand(40, 48, 3, generator=torch.Generator().manual_seed(2))
    seen = Inputs(wan_models.dit.transformer)
    try:
        bp = render_blueprint(wan_models, reference, aligned, story, _blueprint_settings(), cpu_runtime(),
                              work_dir=tmp_path)  # fmt: skip
    finally:
        seen.close()
    windows = len(bp.window_starts)
    assert windows >= 3 and len(seen.hidden) == 2 * windows  # 2 steps, one window per forward
    ref = frame_reference(reference, bp.width, bp.height, "bucket")
    video = torch.zeros(1, 3, 9, bp.height, bp.width)
    video[0, :, 0] = ref.permute(2, 0, 1).float() / 127.5 - 1  # the reference at frame 0, nothing else known
    want = encode_video(wan_models.vae, video)[0]
    for x in seen.hidden:
        mask, cond = x[0, 16:20], x[0, 20:36]
        assert torch.equal(mask[:, 0], torch.ones_like(mask[:, 0])) and not mask[:, 1:].any()
        torch.testing.assert_close(cond, want, atol=1e-5, rtol=1e-5)
    index = json.loads((bp.folder / "index.json").read_text())
    assert index["anchoring"] == "reference" and index["anchor_depths"] == [1] * windows


def _flf_models(models, tmp_path):
    """The tiny FLF2V DiT (image embedder) and a tiny CLIP vision, through their real loaders."""
    from diffusers import WanTransformer3DModel

    from avatar_cascade.demo import tiny_weights as TW
    from avatar_cascade.demo.layouts import dit_to_original_layout
    from avatar_cascade.models import wan_dit as W
    from avatar_cascade.models.clip_vision import load_clip_vision
    from avatar_cascade.models.handle import WanModels
    from tests.helpers import save_safetensors

    torch.manual_seed(3)
    model = WanTransformer3DModel.from_config(W.load_bundled_config("avatar-cascade-tiny-wan-flf2v"))
    dit = W.load_wan_dit(save_safetensors(tmp_path / "flf.safetensors", dit_to_original_layout(model.state_dict())))
    clip = load_clip_vision(save_safetensors(tmp_path / "cv.safetensors", TW.tiny_clip_vision_state_dict(0)))
    return WanModels(dit, models[1], models[2], clip)


def test_an_flf2v_dit_gets_the_reference_s_image_tokens_in_every_window(models, tmp_path):
    from avatar_cascade.models.clip_vision import frame_tokens

    models = _flf_models(models, tmp_path)
    aligned = aligned_tone(3.0)
    story = rule_based_storyline("talk", aligned.timeline, None)
    reference = torch.rand(32, 32, 3, generator=torch.Generator().manual_seed(3))
    seen = Inputs(models.dit.transformer)
    try:
        bp = render_blueprint(models, reference, aligned, story, _blueprint_settings(), cpu_runtime())
    finally:
        seen.close()
    ref = frame_reference(reference, bp.width, bp.height, "bucket")
    want = frame_tokens(models.image_encoder, [((ref.permute(2, 0, 1).float() / 127.5 - 1), None)])
    assert len(seen.images) == 2 * len(bp.window_starts)
    for img in seen.images:
        torch.testing.assert_close(img, want.to(img.dtype), atol=1e-5, rtol=1e-5)


@pytest.mark.slow  # ten minutes through the real tiny DiT / VAE: ~90 windows, 60 keyframes lifted
def test_anchor_depth_stays_at_most_2_for_ten_minutes(wan_models, tmp_path):
    aligned = aligned_tone(600.0, fps=8, clip_frames=81, gate_hz=0.7)
    story = rule_based_storyline("talk", aligned.timeline, None)
    reference = torch.rand(24, 16, 3, generator=torch.Generator().manual_seed(4))
    settings = BlueprintSettings(width=16, height=16, fps=2, window_frames=17, lead_frames=4, batch_size=8,
                                 sampler=SamplerSettings(steps=1, guidance=1.0))  # fmt: skip
    bp = render_blueprint(wan_models, reference, aligned, story, settings, cpu_runtime(), work_dir=tmp_path)
    assert len(bp.window_starts) > 80
    ks = KeyframeSettings(width=16, height=16, lift=LiftSettings(denoise=0.5, batch_size=16,
                          sampler=SamplerSettings(steps=2, guidance=1.0)))  # fmt: skip
    kf = extract_keyframes(bp, aligned, reference, ks, cpu_runtime(), models=wan_models, work_dir=tmp_path)
    scores = json.loads((tmp_path / "keyframes.json").read_text())["scores"]
    depths = [s["anchor_depth"] for s in scores]
    assert len(depths) == len(kf.images) == len(aligned.timeline.seams) > 50
    assert depths[0] == 0 and set(depths[1:]) == {2} and max(depths) <= 2  # blueprint frame (1) + the lift (1)
    assert all(s["lifted"] and "identity" in s["unlifted_scores"] and "sharpness" in s["lifted_scores"]
               for s in scores[1:])  # fmt: skip


# ----------------------------------------------------------------------------- the refiner's condition


def test_both_keyframes_are_in_every_refiner_condition_with_their_mask_bits(models, tmp_path):
    from avatar_cascade.models.handle import WanModels
    from avatar_cascade.sampling.conditioning import encode_video
    from avatar_cascade.stages.refiner.refiner import RefinerSettings, refine_clips

    dit, vae, te = models
    kf, aligned, story = refiner_inputs(clips=2, size=32)
    seen = Inputs(dit.transformer)
    settings = RefinerSettings(batch_size=1, sampler=SamplerSettings(steps=2, guidance=1.0))
    try:
        refine_clips(WanModels(dit, vae, te), kf, aligned, story, settings, cpu_runtime(), cache_dir=tmp_path)
    finally:
        seen.close()
    assert len(seen.hidden) == 2 * 2
    frames = kf.as_model_frames()
    for i, x in enumerate(seen.hidden):
        k = i // 2
        mask, cond = x[0, 16:20], x[0, 20:36]
        # mask channels = the 4 pixel frames of each latent frame: frame 0 (repeated 4x) and the last pixel frame
        assert mask[:, 0].all() and mask[3, -1].all() and not mask[:3, -1].any() and not mask[:, 1:-1].any()
        video = torch.zeros(1, 3, 5, 32, 32)
        video[0, :, 0], video[0, :, -1] = frames[k], frames[k + 1]
        torch.testing.assert_close(cond, encode_video(vae, video)[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("scheduler", ["euler", "unipc", "dpm++"])
def test_the_sampler_s_shift_reaches_the_dit_s_timesteps(models, tmp_path, scheduler):
    from avatar_cascade.models.handle import WanModels
    from avatar_cascade.stages.refiner.refiner import RefinerSettings, refine_clips

    dit, vae, te = models
    kf, aligned, story = refiner_inputs(clips=1, size=16)
    got = {}
    for shift in (1.0, 7.0):
        seen = Inputs(dit.transformer)
        sampler = SamplerSettings(steps=4, guidance=1.0, shift=shift, scheduler=scheduler)
        try:
            refine_clips(WanModels(dit, vae, te), kf, aligned, story, RefinerSettings(sampler=sampler), cpu_runtime(),
                         cache_dir=tmp_path / str(shift))  # fmt: skip
        finally:
            seen.close()
        got[shift] = [float(t.flatten()[0]) for t in seen.timesteps]
    assert got[7.0][1] > got[1.0][1] + 100  # a larger shift keeps more steps at high noise
    if scheduler == "euler":
        # diffusers' Euler flow matching: x evenly from 1 to the shifted smallest sigma (1/1000), then shifted:
        # sigma = s * x / (1 + (s - 1) * x), timestep = 1000 * sigma
        for shift, ts in got.items():
            x = torch.linspace(1, shift * 0.001 / (1 + (shift - 1) * 0.001), 4)
            want = (1000 * shift * x / (1 + (shift - 1) * x)).tolist()
            assert ts == pytest.approx(want, rel=1e-4), shift


def test_infinitetalk_pins_the_clean_first_latent_every_step(models, audio_adapter_file, audio_encoder):
    from avatar_cascade.models.audio_adapter import load_audio_adapter
    from avatar_cascade.sampling.conditioning import ClipRequest, encode_condition
    from avatar_cascade.sampling.loop import sample_clips

    dit, vae, te = models
    t = torch.arange(32000) / 16000
    wave = (0.3 * torch.sin(2 * torch.pi * 220 * t)).float()[None]
    aligned = aligned_tone(2.0, wave=wave, audio_encoder=audio_encoder)
    with_adapter = load_audio_adapter(audio_adapter_file, dit).attach(dataclasses.replace(dit))
    first = torch.rand(3, 16, 16) * 2 - 1
    emb = torch.zeros(8, 32)
    req = ClipRequest(5, {0: first}, emb, emb, seed=1, audio=aligned.clip_windows(0, pad="edge")[:5])
    cond = encode_condition(vae, [req], 16, 16)
    seen = Inputs(with_adapter.transformer)
    try:
        sample_clips(with_adapter, cond, [req], SamplerSettings(steps=3, guidance=1.0, audio_guidance=1.0),
                     cpu_runtime())  # fmt: skip
    finally:
        seen.close()
    assert len(seen.hidden) == 3
    for x in seen.hidden:  # before every forward: latent frame 0 is the clean latent of the known first frame
        torch.testing.assert_close(x[0, :16, 0], cond[0, 4:, 0], atol=1e-6, rtol=1e-6)
        assert not torch.allclose(x[0, :16, 1], cond[0, 4:, 1], atol=1e-3)


def test_negative_frame_guidance_pushes_away_from_the_drifted_prediction():
    from avatar_cascade.stages.refiner.negative_frames import negative_frame_guidance

    class Linear(torch.nn.Module):  # the prediction reads the concat channels
        def forward(self, hidden_states):
            return (hidden_states[:, -2:] * 3.0,)

    m = Linear()
    clean = torch.ones(1, 4, 2)  # two "noise" channels, then the two condition channels
    drifted_condition = torch.zeros(1, 2, 2)
    v = m(hidden_states=clean)[0]
    v_neg = m(hidden_states=torch.cat([clean[:, :2], drifted_condition], 1))[0]
    with negative_frame_guidance([m], drifted_condition, 0.5):
        guided = m(hidden_states=clean)[0]
    torch.testing.assert_close(guided, v + 0.5 * (v - v_neg))
    assert (guided - v).sign().eq((v - v_neg).sign()).all()  # further from the drifted prediction, not closer

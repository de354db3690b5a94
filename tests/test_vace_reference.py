"""VACE reference images (diffusers ``WanVACEPipeline`` / Wan ``vace_encode_frames`` arithmetic): fitted
inside the frame on white, encoded one frame each, prepended to the context as (reference, 0, mask 0)
and to the noise latent, cut off before decoding. Through the refiner: the clip keeps its frame count,
the output and keys change, and with the option off nothing changes; with the lip-sync adapter the
reference frames hear silence and the first frame stays pinned; refused without a VACE DiT."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from avatar_cascade.core.errors import InputError
from avatar_cascade.core.seeds import derive_seed
from avatar_cascade.demo.tiny_vace import tiny_vace_state_dict
from avatar_cascade.models.handle import WanModels
from avatar_cascade.models.wan_dit import load_wan_dit
from avatar_cascade.sampling.conditioning import ClipRequest, decode_to_uint8, encode_condition, encode_video
from avatar_cascade.sampling.loop import sample_clips
from avatar_cascade.sampling.prompts import PromptBank
from avatar_cascade.sampling.settings import SamplerSettings, with_negative
from avatar_cascade.sampling.vace import fit_reference, prepend_reference_frames, vace_context, vace_control
from avatar_cascade.stages.refiner.refiner import RefinerSettings, refine_clips, resolve_settings
from tests.helpers import cpu_runtime as quiet
from tests.helpers import refiner_inputs as make_inputs
from tests.helpers import save_safetensors as _save

SIZE = 16
SETTINGS = RefinerSettings(seed=7, batch_size=2, sampler=SamplerSettings(steps=2, guidance=3.0, shift=3.0))


@pytest.fixture(scope="module")
def vace(tmp_path_factory):
    return load_wan_dit(_save(tmp_path_factory.mktemp("vace") / "vace.safetensors", tiny_vace_state_dict(0)))


def _portrait(h: int = 24, w: int = 12, seed: int = 4) -> torch.Tensor:
    """An IMAGE ``[1, h, w, 3]`` float 0..1 (a portrait-shaped reference)."""
    return torch.rand(1, h, w, 3, generator=torch.Generator().manual_seed(seed))


def run(dit, models, cache, inputs=None, **kw):
    _, vae, te = models
    kf, aligned, story = inputs or make_inputs()
    return refine_clips(WanModels(dit, vae, te), kf, aligned, story, SETTINGS, quiet(), cache_dir=cache, **kw)


def test_reference_is_fitted_inside_the_frame_on_white():
    img = torch.randint(0, 256, (24, 12, 3), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    out = fit_reference(img, 16, 16)  # scale min(16/24, 16/12) = 2/3: 16 x 8, centred (left 4)
    assert out.shape == (3, 16, 16)
    assert torch.equal(out[:, :, :4], torch.ones(3, 16, 4)) and torch.equal(out[:, :, 12:], torch.ones(3, 16, 4))
    want = torch.nn.functional.interpolate(img.permute(2, 0, 1).float()[None] / 127.5 - 1, size=(16, 8),
                                           mode="bilinear", align_corners=False)[0]  # fmt: skip
    assert torch.equal(out[:, :, 4:12], want)


def test_reference_frames_lead_the_context_as_reference_zero_and_mask_zero(models):
    _, vae, _ = models
    g = torch.Generator().manual_seed(2)
    frames = torch.rand(2, 3, 5, SIZE, SIZE, generator=g) * 2 - 1
    masks = torch.ones(2, 5, SIZE, SIZE)
    refs = torch.rand(2, 2, 3, SIZE, SIZE, generator=g) * 2 - 1  # two references per clip, in order
    plain = vace_context(vae, frames, masks)
    ctx = vace_context(vae, frames, masks, refs)
    assert ctx.shape == (2, 96, 2 + plain.shape[2], 2, 2)
    assert torch.equal(ctx[:, :, 2:], plain)
    for j in range(2):
        alone = encode_video(vae, refs[:, j, :, None])[:, :, 0]  # each reference encoded as a 1-frame video
        assert torch.allclose(ctx[:, :16, j], alone, atol=1e-6)
    assert float(ctx[:, 16:, :2].abs().max()) == 0.0  # reactive part and mask channels: zero
    assert not torch.allclose(ctx[:, :16, 0], ctx[:, :16, 1])
    cond = torch.randn(2, 20, 2, 2, 2, generator=g)
    padded = prepend_reference_frames(cond, 2)
    assert padded.shape == (2, 20, 4, 2, 2) and torch.equal(padded[:, :, 2:], cond)
    assert float(padded[:, :, :2].abs().max()) == 0.0 and prepend_reference_frames(cond, 0) is cond


def test_refiner_prepends_the_reference_latent_and_trims_it(vace, models, tmp_path):
    """The refiner's clips equal the by-hand diffusers recipe: noise with one more latent frame, the reference's
    context frame in front, the first latent frame cut off before decoding (same frame count)."""
    _, vae, te = models
    kf, aligned, story = make_inputs()
    ref = _portrait()
    clips = run(vace, models, tmp_path / "r", vace_reference=ref)
    plain = run(vace, models, tmp_path / "p")
    rt, bank, mf = quiet(), PromptBank(te, quiet()), kf.as_model_frames()
    sampler = resolve_settings(SETTINGS, vace, SIZE, SIZE).sampler
    fitted = fit_reference((ref[0] * 255).round().to(torch.uint8), SIZE, SIZE)
    seen = []

    def record(module, args, kw):  # runs after the control hook: what the DiT reads
        seen.append((kw["hidden_states"].shape[2], kw["control_hidden_states"].shape[2]))

    for batch in ([0, 1], [2]):
        reqs = [ClipRequest.first_last(5, mf[k], mf[k + 1], bank.get(story.shot_prompt(k)),
                                       bank.get(with_negative(story.shot_negative(k), sampler)), derive_seed(7, k))
                for k in batch]  # fmt: skip
        video, masks = torch.zeros(len(batch), 3, 5, SIZE, SIZE), torch.ones(len(batch), 5, SIZE, SIZE)
        for b, k in enumerate(batch):
            video[b, :, 0], video[b, :, 4] = mf[k], mf[k + 1]
            masks[b, 0] = masks[b, 4] = 0
        ctx = vace_context(vae, video, masks, fitted[None, None].expand(len(batch), 1, -1, -1, -1))
        with vace_control([vace.transformer], ctx, 1.0):
            hook = vace.transformer.register_forward_pre_hook(record, with_kwargs=True)
            cond = torch.cat([torch.zeros(len(batch), 20, 1, 2, 2), encode_condition(vae, reqs, SIZE, SIZE)], 2)
            lat = sample_clips(vace, cond, reqs, sampler, rt)
            hook.remove()
        assert lat.shape[2] == 3  # 2 latent frames of the clip + 1 of the reference
        for k, fr in zip(batch, decode_to_uint8(vae, lat[:, :, 1:])):
            got = clips.frames(k)
            assert got.shape == plain.frames(k).shape == (5, SIZE, SIZE, 3)  # frame count unchanged
            assert torch.equal(got, fr)
    assert set(seen) == {(3, 3)}  # the DiT read 1 + 2 latent frames, noise and context alike
    assert all((clips.frames(k).float() - plain.frames(k).float()).abs().mean() > 0.5 for k in range(3))
    assert not {r.key for r in clips.records} & {r.key for r in plain.records}


def test_reference_off_keeps_todays_output_and_keys(vace, models, tmp_path):
    base = run(vace, models, tmp_path / "a")
    off = run(vace, models, tmp_path / "b", vace_reference=None)
    assert [r.key for r in off.records] == [r.key for r in base.records]
    assert all(torch.equal(off.frames(k), base.frames(k)) for k in range(3))
    other = run(vace, models, tmp_path / "c", vace_reference=_portrait(seed=5))
    first = run(vace, models, tmp_path / "c", vace_reference=_portrait(seed=4))
    assert other.computed == 3 and first.computed == 3  # the reference image is in every clip's key
    assert run(vace, models, tmp_path / "c", vace_reference=_portrait(seed=4)).computed == 0


def test_reference_is_refused_without_a_vace_dit(models, tmp_path):
    with pytest.raises(InputError, match="vace_reference.*needs a Wan VACE DiT"):
        run(models[0], models, tmp_path, vace_reference=_portrait())


def test_with_the_audio_adapter_reference_frames_hear_silence_and_the_first_frame_stays_pinned(
    vace, models, audio_adapter_file, tmp_path
):
    from avatar_cascade.models import audio_adapter as AA

    _, vae, te = models
    adapter = AA.load_audio_adapter(audio_adapter_file, vace)
    talking = adapter.attach(vace)
    try:
        kf, aligned, story = make_inputs()
        feats = torch.randn(aligned.timeline.num_frames, 2, 32, generator=torch.Generator().manual_seed(3)).half()
        aligned = dataclasses.replace(aligned, features=feats)
        win = aligned.clip_windows(0, pad="edge")
        # the adapter's tokens: silence for the lead frame, the clip's audio after it
        with adapter.audio_context(win):
            clip_tokens = adapter.tokens(1, 2, torch.device("cpu"))
            with adapter.silent_lead(1):
                led = adapter.tokens(1, 3, torch.device("cpu"))
        with adapter.audio_context(None):
            silent = adapter.tokens(1, 1, torch.device("cpu"))
        assert torch.equal(led[:, 1:], clip_tokens) and torch.allclose(led[:, :1], silent)
        # by hand through the loop: the clip's first latent frame (after the reference's) is pinned to its keyframe
        mf, bank = kf.as_model_frames(), PromptBank(te, quiet())
        sampler = resolve_settings(SETTINGS, talking, SIZE, SIZE).sampler
        req = ClipRequest.first_last(5, mf[0], mf[1], bank.get("a"), bank.get("b"), 1, audio=win)
        cond = encode_condition(vae, [req], SIZE, SIZE)
        video, masks = torch.zeros(1, 3, 5, SIZE, SIZE), torch.ones(1, 5, SIZE, SIZE)
        video[0, :, 0], masks[0, 0] = mf[0], 0
        refs = fit_reference((_portrait()[0] * 255).round().to(torch.uint8), SIZE, SIZE)[None, None]
        seen = []
        with vace_control([talking.transformer], vace_context(vae, video, masks, refs), 1.0):
            hook = talking.transformer.register_forward_pre_hook(
                lambda m, a, kw: seen.append(kw["hidden_states"][:, :, 1].clone()), with_kwargs=True)  # fmt: skip
            lat = sample_clips(talking, cond, [req], sampler, quiet(), reference_frames=1)
            hook.remove()
        assert lat.shape[2] == 2 and len(seen) == 2
        assert all(torch.equal(x[0], cond[0, 4:, 0]) for x in seen)
        # and through the refiner: the lip-synced clips keep their frame count and differ from the silent DiT's
        talk = run(talking, models, tmp_path / "t", vace_reference=_portrait(), inputs=(kf, aligned, story))
    finally:
        adapter.detach()
    quiet_clips = run(vace, models, tmp_path / "q", vace_reference=_portrait())
    assert all(talk.frames(k).shape == (5, SIZE, SIZE, 3) for k in range(3))
    assert any(not torch.equal(talk.frames(k), quiet_clips.frames(k)) for k in range(3))

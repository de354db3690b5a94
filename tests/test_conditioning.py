"""One condition builder and one denoising loop: equal, bit for bit, to the four builders and the lift's
loop they replaced (inline reference copies of the pre-change code below), on the tiny demo models, CPU."""

from __future__ import annotations

import pytest
import torch

from avatar_cascade.sampling.conditioning import ClipRequest, encode_condition, encode_known_frames, latent_mask
from avatar_cascade.sampling.loop import sample_clips
from avatar_cascade.sampling.settings import SamplerSettings, make_scheduler
from tests.helpers import cpu_runtime as _rt

H = W = 16


def _frames(n: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, H, W, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _vae_encode(vae, video: torch.Tensor) -> torch.Tensor:
    param = next(vae.vae.parameters())
    with torch.no_grad():
        return vae.encode(video.to(param.device, param.dtype)).float()


# ------------------------------------------------------------ reference copies of the replaced builders


def old_encode_condition(vae, firsts, lasts, n):
    """``sampling.encode_condition`` before: first frame at 0, last at n - 1."""
    video, known = torch.zeros(len(firsts), 3, n, H, W), torch.zeros(len(firsts), n)
    for b, (f, last) in enumerate(zip(firsts, lasts)):
        if f is not None:
            video[b, :, 0], known[b, 0] = f, 1
        if last is not None:
            video[b, :, n - 1], known[b, n - 1] = last, 1
    lat = _vae_encode(vae, video)
    return torch.cat([latent_mask(known, lat.shape[-2:], vae.temporal_factor).to(lat.device), lat], dim=1)


def old_encode_window_condition(vae, known, num_frames):
    """``blueprint.encode_window_condition`` before: the first K frames known."""
    k = known.shape[0]
    video = torch.zeros(1, 3, num_frames, H, W)
    video[0, :, :k] = known.permute(1, 0, 2, 3)
    mask = torch.zeros(1, num_frames)
    mask[0, :k] = 1
    lat = _vae_encode(vae, video)
    return torch.cat([latent_mask(mask, lat.shape[-2:], vae.temporal_factor).to(lat.device), lat], dim=1)


def old_refiner_condition(vae, firsts, lasts, offsets, n):
    """``refiner._condition`` before (its general branch): keyframes at offsets (a, z)."""
    video, known = torch.zeros(len(firsts), 3, n, H, W), torch.zeros(len(firsts), n)
    for b, (f, last, (a, z)) in enumerate(zip(firsts, lasts, offsets)):
        video[b, :, a], video[b, :, z] = f, last
        known[b, a] = known[b, z] = 1
    lat = _vae_encode(vae, video)
    return torch.cat([latent_mask(known, lat.shape[-2:], vae.temporal_factor).to(lat.device), lat], dim=1)


def _request(known, n=17, seed=0, text=None):
    text = torch.zeros(4, 32) if text is None else text
    return ClipRequest(num_frames=n, known=known, prompt_embeds=text, negative_embeds=-text, seed=seed)


# ------------------------------------------------------------ the builder


@pytest.mark.parametrize("k", [1, 5, 6])
def test_builder_is_the_old_blueprint_window_condition(models, k):
    _, vae, _ = models
    known = _frames(k)
    new = encode_known_frames(vae, [dict(enumerate(known))], 17, H, W)
    assert torch.equal(new, old_encode_window_condition(vae, known, 17))
    assert torch.equal(encode_condition(vae, [_request(dict(enumerate(known)))], H, W), new)


def test_builder_is_the_old_first_last_and_refiner_offset_conditions(models):
    _, vae, _ = models
    f, last = _frames(2, seed=1), _frames(2, seed=2)
    first_last = [ClipRequest.first_last(17, f[b], last[b], torch.zeros(4, 32), torch.zeros(4, 32), b) for b in (0, 1)]
    assert torch.equal(encode_condition(vae, first_last, H, W), old_encode_condition(vae, f, last, 17))
    first_only = [ClipRequest.first_last(17, f[b], None, torch.zeros(4, 32), torch.zeros(4, 32), b) for b in (0, 1)]
    assert torch.equal(encode_condition(vae, first_only, H, W), old_encode_condition(vae, f, [None, None], 17))

    offsets = [(0, 16), (3, 12)]  # keyframes inside the clip when the timeline declares blending overlap
    at_offsets = [_request({a: f[b], z: last[b]}, seed=b) for b, (a, z) in enumerate(offsets)]
    assert torch.equal(encode_condition(vae, at_offsets, H, W), old_refiner_condition(vae, f, last, offsets, 17))


def _diffusers_mask(positions: list[int], n: int, h: int, w: int) -> torch.Tensor:
    """The mask as diffusers' ``WanImageToVideoPipeline.prepare_latents`` folds it, for known frames anywhere."""
    m = torch.zeros(1, 1, n, h, w)
    m[:, :, positions] = 1
    first = torch.repeat_interleave(m[:, :, 0:1], dim=2, repeats=4)
    return torch.concat([first, m[:, :, 1:]], dim=2).view(1, -1, 4, h, w).transpose(1, 2)


@pytest.mark.parametrize("positions", [[0], [0, 16], [3, 12], [0, 1, 2, 3, 4], [7]])
def test_the_mask_marks_exactly_the_known_frames(models, positions):
    _, vae, _ = models
    frames = _frames(len(positions), seed=3)
    cond = encode_known_frames(vae, [dict(zip(positions, frames))], 17, H, W)
    assert torch.equal(cond[:, :4], _diffusers_mask(positions, 17, *cond.shape[-2:]))
    video = torch.zeros(1, 3, 17, H, W)
    for p, f in zip(positions, frames):
        video[0, :, p] = f
    assert torch.equal(cond[:, 4:], _vae_encode(vae, video))
    moved = encode_known_frames(vae, [dict(zip([(p + 1) % 17 for p in positions], frames))], 17, H, W)
    assert not torch.equal(moved[:, :4], cond[:, :4])  # one frame later is another condition


def test_requests_say_where_their_frames_are():
    f = list(_frames(3))
    r = ClipRequest.first_last(9, f[0], f[1], torch.zeros(4, 32), torch.zeros(4, 32), 0)
    assert set(r.known) == {0, 8} and r.first_frame is f[0] and r.last_frame is f[1]
    only = ClipRequest.first_last(9, f[0], None, torch.zeros(4, 32), torch.zeros(4, 32), 0)
    assert set(only.known) == {0} and only.last_frame is None
    inside = _request({5: f[2], 2: f[0]}, n=9)
    assert inside.first_frame is f[0] and inside.last_frame is f[2]  # the CLIP pair: lowest, highest position
    with pytest.raises(TypeError, match="first_last"):
        ClipRequest(9, f[0], None, torch.zeros(4, 32), torch.zeros(4, 32), 0)  # the old positional form
    with pytest.raises(ValueError, match="outside"):
        _request({9: f[0]}, n=9)


# ------------------------------------------------------------ reference copy of the lift's replaced loop


def old_partial_denoise(dit, x0, condition, pos, neg, img, sampler, start, seeds):
    """``keyframes_lift.partial_denoise`` + ``_predict`` before (plain CFG, CPU); with ``x0`` None and
    ``start`` 0 it is also the old ``sample_clips`` text-only path (pure noise, no begin index)."""
    from avatar_cascade.models.clip_vision import wan_image_rows

    sch = make_scheduler(sampler)
    sch.set_timesteps(sampler.steps, device="cpu")
    shape = (condition.shape[1] - 4, *condition.shape[2:])
    noise = torch.stack([torch.randn(shape, generator=torch.Generator("cpu").manual_seed(s)) for s in seeds])
    if x0 is None:
        x = noise
    else:
        sch.set_begin_index(start)
        sigma = float(sch.sigmas[start])
        x = (1 - sigma) * x0.float().cpu() + sigma * noise
    current = None
    for t in sch.timesteps[start:]:
        expert, module = dit.expert_at(float(t))
        if expert != current:
            current, dtype = expert, next(module.parameters()).dtype
        g = sampler.guidance_2 if expert == "low_noise" and sampler.guidance_2 is not None else sampler.guidance
        rows = 1 if g == 1.0 else 2
        xx = torch.cat([x.to(dtype), condition.to(dtype)], dim=1)
        with wan_image_rows(module, img) as img_rows, torch.no_grad():
            kwargs = {} if img_rows is None else {"encoder_hidden_states_image": torch.cat([img_rows] * rows)}
            out = module(
                hidden_states=torch.cat([xx] * rows),
                timestep=t.expand(rows * xx.shape[0]),
                encoder_hidden_states=pos if rows == 1 else torch.cat([pos, neg]),
                return_dict=False,
                **kwargs,
            )[0].float()
        pred = out if rows == 1 else out.chunk(2)[1] + g * (out.chunk(2)[0] - out.chunk(2)[1])
        x = sch.step(pred, t, x, return_dict=False)[0]
    return x.float()


def _batch(dit, n=2, text_dim=32, tokens=8):
    g = torch.Generator().manual_seed(5)
    reqs = [
        _request({0: _frames(1, seed=b)[0]}, n=5, seed=100 + b, text=torch.randn(tokens, text_dim, generator=g))
        for b in range(n)
    ]
    for r in reqs:
        r.negative_embeds = torch.randn(tokens, text_dim, generator=g)
    cond = torch.randn(n, 20, 2, 2, 2, generator=g)
    x0 = torch.randn(n, 16, 2, 2, 2, generator=g)
    return reqs, cond, x0


@pytest.fixture(scope="module")
def a14b(models):
    from diffusers import WanTransformer3DModel

    from avatar_cascade.models.wan_dit import WanDiT, load_bundled_config

    torch.manual_seed(11)
    low = WanTransformer3DModel.from_config(load_bundled_config("avatar-cascade-tiny-wan")).eval()
    return WanDiT(
        transformer=models[0].transformer,
        variant="tiny-a14b",
        identity="high",
        path=None,
        transformer_2=low,
        identity_2="low",
        boundary_ratio=0.9,
    )


@pytest.mark.parametrize("scheduler", ["unipc", "euler", "dpm++"])
@pytest.mark.parametrize("guidance, start", [(1.0, 2), (4.0, 2), (4.0, 0), (4.0, 3)])
def test_img2img_from_a_start_step_is_the_old_lift_loop(models, scheduler, guidance, start):
    dit = models[0]
    s = SamplerSettings(steps=4, guidance=guidance, shift=3.0, scheduler=scheduler)
    reqs, cond, x0 = _batch(dit)
    pos, neg = torch.stack([r.prompt_embeds for r in reqs]), torch.stack([r.negative_embeds for r in reqs])
    want = old_partial_denoise(dit, x0, cond, pos, neg, None, s, start, [r.seed for r in reqs])
    steps = []
    got = sample_clips(
        dit, cond, reqs, s, _rt(), on_step=lambda i, n, x: steps.append((i, n)),
        start_step=start, initial_latents=x0, use_audio_adapter=False,
    )  # fmt: skip
    assert torch.equal(got, want)
    assert steps == [(i, 4 - start) for i in range(4 - start)]  # only the last steps run
    if start:
        assert (got - sample_clips(dit, cond, reqs, s, _rt())).abs().max() > 1e-3  # the clean latents matter


def test_img2img_switches_experts_like_the_old_lift(a14b):
    s = SamplerSettings(steps=6, guidance=4.0, shift=5.0, guidance_2=2.0, scheduler="unipc")
    reqs, cond, x0 = _batch(a14b)
    pos, neg = torch.stack([r.prompt_embeds for r in reqs]), torch.stack([r.negative_embeds for r in reqs])
    ran = []
    hooks = [
        m.register_forward_pre_hook(lambda m, a, kw, name=name: ran.append(name), with_kwargs=True)
        for name, m in a14b.experts()
    ]
    try:
        got = sample_clips(a14b, cond, reqs, s, _rt(), start_step=1, initial_latents=x0)
    finally:
        for h in hooks:
            h.remove()
    assert "high_noise" in ran and "low_noise" in ran and len(ran) == 5
    assert torch.equal(got, old_partial_denoise(a14b, x0, cond, pos, neg, None, s, 1, [r.seed for r in reqs]))


def test_img2img_with_image_tokens_is_the_old_lift_loop():
    from diffusers import WanTransformer3DModel

    from avatar_cascade.models.wan_dit import WanDiT, load_bundled_config
    from avatar_cascade.sampling.loop import TEXT_TOKENS_WITH_IMAGE, _fit_text

    torch.manual_seed(3)
    t = WanTransformer3DModel.from_config(load_bundled_config("avatar-cascade-tiny-wan-flf2v")).eval()
    dit = WanDiT(transformer=t, variant="avatar-cascade-tiny-wan-flf2v", identity="flf", path=None)
    s = SamplerSettings(steps=4, guidance=3.0, shift=3.0, scheduler="unipc")
    reqs, cond, x0 = _batch(dit)
    img = torch.randn(1, 5, 16, generator=torch.Generator().manual_seed(8)).expand(2, -1, -1)  # reference tokens
    pos = _fit_text(torch.stack([r.prompt_embeds for r in reqs]), TEXT_TOKENS_WITH_IMAGE)
    neg = _fit_text(torch.stack([r.negative_embeds for r in reqs]), TEXT_TOKENS_WITH_IMAGE)
    want = old_partial_denoise(dit, x0, cond, pos, neg, img, s, 2, [r.seed for r in reqs])
    got = sample_clips(dit, cond, reqs, s, _rt(), image_embeds=img, start_step=2, initial_latents=x0)
    assert torch.equal(got, want)


@pytest.mark.parametrize("scheduler", ["unipc", "euler"])
def test_from_noise_the_loop_is_the_old_text_only_loop(models, scheduler):
    dit = models[0]
    s = SamplerSettings(steps=3, guidance=4.0, shift=3.0, scheduler=scheduler)
    reqs, cond, _ = _batch(dit, n=3)
    pos, neg = torch.stack([r.prompt_embeds for r in reqs]), torch.stack([r.negative_embeds for r in reqs])
    want = old_partial_denoise(dit, None, cond, pos, neg, None, s, 0, [r.seed for r in reqs])
    assert torch.equal(sample_clips(dit, cond, reqs, s, _rt()), want)


def test_img2img_noise_is_per_clip_and_the_plan_is_checked(models):
    dit = models[0]
    s = SamplerSettings(steps=4, guidance=4.0, shift=3.0)
    reqs, cond, x0 = _batch(dit, n=3)
    batch = sample_clips(dit, cond, reqs, s, _rt(), start_step=2, initial_latents=x0)
    one = [slice(i, i + 1) for i in range(3)]
    singles = torch.cat(
        [sample_clips(dit, cond[i], reqs[i], s, _rt(), start_step=2, initial_latents=x0[i]) for i in one]
    )
    torch.testing.assert_close(batch, singles, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="initial_latents"):
        sample_clips(dit, cond, reqs, s, _rt(), start_step=2)
    with pytest.raises(ValueError, match="start_step"):
        sample_clips(dit, cond, reqs, s, _rt(), start_step=4, initial_latents=x0)
    with pytest.raises(ValueError, match="initial_latents are"):
        sample_clips(dit, cond, reqs, s, _rt(), start_step=1, initial_latents=x0[:2])

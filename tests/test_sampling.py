"""Sampler core on a tiny real Wan transformer (diffusers), CPU."""

import pytest
import torch

from avatar_cascade.core.errors import InputError, Interrupted
from avatar_cascade.core.seeds import check_seed, derive_seed
from avatar_cascade.sampling.conditioning import ClipRequest, latent_mask
from avatar_cascade.sampling.loop import sample_clips
from avatar_cascade.sampling.settings import SamplerSettings
from tests.helpers import cpu_runtime

TEXT_DIM = 16


@pytest.fixture(scope="module")
def transformer():
    return _tiny(0)  # defined with the Wan 2.2 expert tests below


def _requests(n, frames=5, seed0=10):
    g = torch.Generator().manual_seed(1)
    return [
        ClipRequest(
            num_frames=frames,
            known={},
            prompt_embeds=torch.randn(8, TEXT_DIM, generator=g),
            negative_embeds=torch.randn(8, TEXT_DIM, generator=g),
            seed=seed0 + i,
        )
        for i in range(n)
    ]


def _cond(n):
    g = torch.Generator().manual_seed(2)
    return torch.randn(n, 20, 2, 8, 8, generator=g)


@pytest.mark.parametrize("scheduler", ["unipc", "euler", "dpm++"])
def test_batch_of_three_equals_three_single_runs(transformer, scheduler):
    rt = cpu_runtime()
    s = SamplerSettings(steps=3, guidance=4.0, shift=3.0, scheduler=scheduler)
    reqs, cond = _requests(3), _cond(3)
    batch = sample_clips(transformer, cond, reqs, s, rt)
    singles = torch.cat([sample_clips(transformer, cond[i : i + 1], [reqs[i]], s, rt) for i in range(3)])
    assert batch.shape == (3, 16, 2, 8, 8)
    torch.testing.assert_close(batch, singles, atol=1e-4, rtol=1e-4)
    # Different seeds give different clips.
    assert (batch[0] - batch[1]).abs().mean() > 1e-2


def test_guidance_changes_the_result(transformer):
    rt = cpu_runtime()
    reqs, cond = _requests(1), _cond(1)
    a = sample_clips(transformer, cond, reqs, SamplerSettings(steps=2, guidance=1.0), rt)
    b = sample_clips(transformer, cond, reqs, SamplerSettings(steps=2, guidance=6.0), rt)
    assert (a - b).abs().max() > 1e-3


def test_interrupt_raises_between_steps(transformer):
    calls = []

    def check():
        calls.append(1)
        if len(calls) == 3:
            raise Interrupted("stop")

    rt = cpu_runtime(interrupt_check=check)
    steps_done = []
    with pytest.raises(Interrupted):
        sample_clips(
            transformer,
            _cond(1),
            _requests(1),
            SamplerSettings(steps=10),
            rt,
            on_step=lambda i, n, x: steps_done.append(i),
        )
    assert steps_done == [0, 1]  # stopped before the third step


def test_latent_mask_matches_diffusers_layout():
    # diffusers' WanImageToVideoPipeline builds the FLF mask this way (first and last pixel frame known).
    t, h, w = 9, 2, 3
    known = torch.zeros(1, t)
    known[0, 0] = known[0, -1] = 1
    ref = torch.ones(1, 1, t, h, w)
    ref[:, :, 1 : t - 1] = 0
    first = torch.repeat_interleave(ref[:, :, 0:1], dim=2, repeats=4)
    ref = torch.concat([first, ref[:, :, 1:]], dim=2).view(1, -1, 4, h, w).transpose(1, 2)
    torch.testing.assert_close(latent_mask(known, (h, w)), ref)


def test_seeds_are_stable_and_checked():
    assert derive_seed(7, 3) == derive_seed(7, 3)
    assert derive_seed(7, 3) != derive_seed(7, 4) != derive_seed(8, 3)
    with pytest.raises(InputError, match="seed"):
        check_seed(-1)
    with pytest.raises(InputError, match="seed"):
        check_seed(2**64)


def test_unknown_scheduler_is_refused():
    with pytest.raises(InputError, match="scheduler = 'ddim'.*choose one of"):
        SamplerSettings(scheduler="ddim").check()


# ---------------------------------------------------------------- Wan 2.2 A14B experts


def _tiny(seed):
    from diffusers import WanTransformer3DModel

    torch.manual_seed(seed)
    return WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=36,
        out_channels=16,
        text_dim=TEXT_DIM,
        freq_dim=32,
        ffn_dim=32,
        num_layers=2,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32,
    ).eval()


def _record_rows(module, log, name):
    return module.register_forward_pre_hook(
        lambda m, args, kwargs: log.append((name, kwargs["hidden_states"].shape[0])), with_kwargs=True
    )


@pytest.fixture(scope="module")
def experts(transformer):
    from avatar_cascade.models.wan_dit import WanDiT

    return WanDiT(
        transformer=transformer,
        variant="tiny",
        identity="high",
        path=None,
        transformer_2=_tiny(1),
        identity_2="low",
        boundary_ratio=0.9,
    )


def test_experts_switch_at_the_boundary(experts):
    from avatar_cascade.sampling.settings import make_scheduler

    rt = cpu_runtime()
    s = SamplerSettings(steps=10, guidance=4.0, shift=5.0, guidance_2=1.0, scheduler="unipc")
    sched = make_scheduler(s)
    sched.set_timesteps(10)
    high_steps = int((sched.timesteps >= 900).sum())
    assert 0 < high_steps < 10
    ran = []
    hooks = [_record_rows(experts.transformer, ran, "high"), _record_rows(experts.transformer_2, ran, "low")]
    try:
        sample_clips(experts, _cond(2), _requests(2), s, rt)
    finally:
        for h in hooks:
            h.remove()
    # high-noise expert with CFG (2 rows per clip), then the low-noise expert at guidance_2 = 1 (1 row per clip)
    assert ran == [("high", 4)] * high_steps + [("low", 2)] * (10 - high_steps)


def test_low_noise_guidance_defaults_to_guidance(experts):
    rt = cpu_runtime()
    reqs, cond = _requests(1), _cond(1)
    same = sample_clips(experts, cond, reqs, SamplerSettings(steps=3, guidance=4.0, shift=1.0), rt)
    explicit = sample_clips(experts, cond, reqs, SamplerSettings(steps=3, guidance=4.0, shift=1.0, guidance_2=4.0), rt)
    other = sample_clips(experts, cond, reqs, SamplerSettings(steps=3, guidance=4.0, shift=1.0, guidance_2=2.0), rt)
    assert torch.equal(same, explicit) and (same - other).abs().max() > 1e-4


# ---------------------------------------------------------------- audio guidance


class StandInAudioAdapter:
    """TEST STAND-IN, not the real lip-sync adapter: it only follows the sampler's protocol
    (``audio_context(audio [R,F,W,L,D] | None)``); while active, every forward row gets a shift
    of its first block's output that depends on that row's audio (None = silent = zeros)."""

    def __init__(self, transformer):
        self.transformer = transformer
        self.identity = "stand-in"
        self.contexts = []
        self.direction = torch.randn(24, generator=torch.Generator().manual_seed(9))  # the DiT is 24 wide

    def audio_context(self, audio):
        import contextlib

        @contextlib.contextmanager
        def ctx():
            self.contexts.append(None if audio is None else tuple(audio.shape))

            def add(_module, _args, out):
                rows = out.shape[0]
                feat = torch.zeros(rows) if audio is None else audio.reshape(rows, -1).mean(1)
                return out + ((torch.tanh(feat) + 0.1)[:, None, None] * self.direction).to(out.dtype)

            h = self.transformer.blocks[0].register_forward_hook(add)
            try:
                yield
            finally:
                h.remove()

        return ctx()


def _audio_requests(n, frames=5):
    g = torch.Generator().manual_seed(3)
    reqs = _requests(n, frames)
    for r in reqs:
        r.audio = torch.randn(frames, 3, 2, 4, generator=g)  # [F, W, L, D]
    return reqs


def _with_adapter(transformer):
    from avatar_cascade.models.wan_dit import WanDiT

    dit = WanDiT(transformer=transformer, variant="tiny", identity="dit", path=None)
    dit.audio_adapter = StandInAudioAdapter(transformer)
    return dit


def test_without_an_adapter_audio_changes_nothing(transformer):
    rt = cpu_runtime()
    cond = _cond(2)
    s = SamplerSettings(steps=3, guidance=4.0, shift=3.0, audio_guidance=0.0)
    plain = sample_clips(transformer, cond, _requests(2), s, rt)
    assert torch.equal(sample_clips(transformer, cond, _audio_requests(2), s, rt), plain)


def test_three_branch_guidance_is_infinitetalks_formula(transformer):
    """One Euler step from sigma 1 to 0: the result is ``noise - pred``, with pred from three separate forwards."""
    from avatar_cascade.sampling.loop import initial_noise

    rt = cpu_runtime()
    dit = _with_adapter(transformer)
    reqs, cond = _audio_requests(2), _cond(2)
    g, ag = 4.0, 3.0
    out = sample_clips(
        dit, cond, reqs, SamplerSettings(steps=1, guidance=g, shift=3.0, scheduler="euler", audio_guidance=ag), rt
    )
    assert dit.audio_adapter.contexts == [(6, 5, 3, 2, 4)]  # one forward: cond | drop_text | uncond rows

    noise = initial_noise(reqs, (16, 2, 8, 8))
    x = torch.cat([noise, cond], dim=1)
    audio = torch.stack([r.audio for r in reqs])
    pos = torch.stack([r.prompt_embeds for r in reqs])
    neg = torch.stack([r.negative_embeds for r in reqs])

    def forward(text, audio_rows):
        with dit.audio_adapter.audio_context(audio_rows), torch.no_grad():
            return transformer(x, torch.full((2,), 1000.0), text, return_dict=False)[0]

    c, d, u = forward(pos, audio), forward(neg, audio), forward(neg, torch.zeros_like(audio))
    assert (d - u).abs().max() > 1e-3  # the stand-in's audio matters
    torch.testing.assert_close(out, noise - (u + g * (c - d) + ag * (d - u)), atol=1e-4, rtol=1e-4)


def test_audio_guidance_one_is_plain_cfg_with_audio(transformer):
    rt = cpu_runtime()
    dit = _with_adapter(transformer)
    rows = []
    h = _record_rows(transformer, rows, "dit")
    try:
        sample_clips(dit, _cond(2), _audio_requests(2), SamplerSettings(steps=2, guidance=4.0, audio_guidance=1.0), rt)
        sample_clips(dit, _cond(2), _audio_requests(2), SamplerSettings(steps=2, guidance=1.0, audio_guidance=4.0), rt)
        sample_clips(dit, _cond(2), _requests(2), SamplerSettings(steps=2, guidance=4.0, audio_guidance=4.0), rt)
    finally:
        h.remove()
    # 2 rows per clip in all three: (prompt|negative, audio); (audio|silent, prompt); no audio -> text CFG, silent
    assert rows == [("dit", 4)] * 6
    assert dit.audio_adapter.contexts[-1] is None


def test_audio_batch_equals_single_runs(transformer):
    rt = cpu_runtime()
    dit = _with_adapter(transformer)
    s = SamplerSettings(steps=3, guidance=4.0, shift=3.0, audio_guidance=3.0)
    reqs, cond = _audio_requests(3), _cond(3)
    batch = sample_clips(dit, cond, reqs, s, rt)
    singles = torch.cat([sample_clips(dit, cond[i : i + 1], [reqs[i]], s, rt) for i in range(3)])
    torch.testing.assert_close(batch, singles, atol=1e-4, rtol=1e-4)


def test_new_settings_are_checked():
    with pytest.raises(InputError, match="audio_guidance"):
        SamplerSettings(audio_guidance=-1.0).check()
    with pytest.raises(InputError, match="guidance_2"):
        SamplerSettings(guidance_2=31.0).check()


# ---------------------------------------------------------------- memory estimate


def _meta_dit(variant, dtype=torch.bfloat16):
    from accelerate import init_empty_weights
    from diffusers import WanTransformer3DModel

    from avatar_cascade.models.wan_dit import WanDiT, load_bundled_config

    with init_empty_weights():
        t = WanTransformer3DModel.from_config(load_bundled_config(variant)).to(dtype)
    return WanDiT(transformer=t, variant=variant, identity="", path=None)


def test_batch_estimate_follows_memory_and_model_size():
    from avatar_cascade.models.dit_memory import estimate_batch_size as estimate
    from avatar_cascade.sampling.memory import estimate_batch_size

    gib = 2**30
    small, big = _meta_dit("wan2.1-t2v-1.3b"), _meta_dit("wan2.1-flf2v-14b")
    n80 = estimate(small, 81, 480, 832, 80 * gib, weights_resident=False)
    assert 4 <= n80 <= 32  # 1.3B, 480p x 81 frames, CFG: ~4 GiB per clip
    assert estimate(small, 81, 480, 832, 24 * gib, weights_resident=False) < n80
    assert estimate(small, 81, 480, 832, 80 * gib, rows_per_clip=3, weights_resident=False) < n80
    assert estimate(big, 81, 720, 1280, 80 * gib, weights_resident=False) in (1, 2)
    assert estimate(big, 81, 720, 1280, 8 * gib, weights_resident=False) == 1  # never 0
    assert estimate_batch_size(small, 81, 480, 832, 80 * gib) >= n80  # meta weights: not on the CPU, not counted

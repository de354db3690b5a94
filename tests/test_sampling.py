"""Sampler core on a tiny real Wan transformer (diffusers), CPU."""

import pytest
import torch

from avatar_cascade.errors import InputError, Interrupted
from avatar_cascade.runtime import Runtime
from avatar_cascade.sampling import (
    ClipRequest,
    SamplerSettings,
    check_seed,
    derive_seed,
    latent_mask,
    sample_clips,
)

TEXT_DIM = 16


@pytest.fixture(scope="module")
def transformer():
    from diffusers import WanTransformer3DModel

    torch.manual_seed(0)
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


def _requests(n, frames=5, seed0=10):
    g = torch.Generator().manual_seed(1)
    return [
        ClipRequest(
            num_frames=frames,
            first_frame=None,
            last_frame=None,
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
    rt = Runtime(device=torch.device("cpu"), show_progress=False)
    s = SamplerSettings(steps=3, guidance=4.0, shift=3.0, scheduler=scheduler)
    reqs, cond = _requests(3), _cond(3)
    batch = sample_clips(transformer, cond, reqs, s, rt)
    singles = torch.cat([sample_clips(transformer, cond[i : i + 1], [reqs[i]], s, rt) for i in range(3)])
    assert batch.shape == (3, 16, 2, 8, 8)
    torch.testing.assert_close(batch, singles, atol=1e-4, rtol=1e-4)
    # Different seeds give different clips.
    assert (batch[0] - batch[1]).abs().mean() > 1e-2


def test_guidance_changes_the_result(transformer):
    rt = Runtime(device=torch.device("cpu"), show_progress=False)
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

    rt = Runtime(device=torch.device("cpu"), show_progress=False, interrupt_check=check)
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

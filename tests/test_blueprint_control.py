"""The blueprint under a control video: with a Wan VACE blueprint DiT every window reads its exact slice of
the control over the blueprint frames it renders (a property test over durations, output / blueprint /
control rates and offsets), the reference stays anchored at frame 0 (mask 0), the control changes the
blueprint and its key; without a control input the plain blueprint is unchanged bit for bit; a control
without a VACE DiT is refused with the refiner's error."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from avatar_cascade.artefacts.control import ControlVideo
from avatar_cascade.artefacts.timeline import plan_timeline
from avatar_cascade.core.errors import InputError
from avatar_cascade.core.seeds import derive_seed
from avatar_cascade.demo.tiny_vace import tiny_vace_state_dict
from avatar_cascade.media.frames import to_model_space
from avatar_cascade.media.framing import frame_reference
from avatar_cascade.models.handle import WanModels
from avatar_cascade.models.wan_dit import load_wan_dit
from avatar_cascade.sampling.conditioning import ClipRequest, decode_to_uint8, encode_condition
from avatar_cascade.sampling.loop import sample_clips
from avatar_cascade.sampling.prompts import PromptBank
from avatar_cascade.sampling.settings import SamplerSettings, with_negative
from avatar_cascade.sampling.vace import vace_context, vace_control
from avatar_cascade.stages.blueprint.control import window_control
from avatar_cascade.stages.blueprint.plan import BlueprintWindow, plan_window_spans, plan_windows
from avatar_cascade.stages.blueprint.sampler import (
    BlueprintSettings,
    blueprint_frame_count,
    blueprint_key,
    blueprint_size,
    render_blueprint,
)
from avatar_cascade.stages.director.rules import rule_based_storyline
from tests.helpers import aligned_tone
from tests.helpers import cpu_runtime as quiet
from tests.helpers import save_safetensors as _save

FPS = [Fraction(16), Fraction(24), Fraction(25), Fraction(30000, 1001), Fraction(24000, 1001)]
BP_FPS = [Fraction(4), Fraction(6), Fraction(8), Fraction(12), Fraction(15, 2)]
CONTROL_FPS = [Fraction(8), Fraction(12), Fraction(24), Fraction(25), Fraction(30000, 1001), Fraction(60)]
STRONG = 5.0
FAST = SamplerSettings(steps=2, guidance=1.0, shift=3.0)


def _indexed_frames(n: int, size: int = 8) -> torch.Tensor:
    """Control frame ``i`` carries its own index in its pixels (R = i % 256, G = i // 256, B = 7)."""
    i = torch.arange(n)
    px = torch.stack([i % 256, i // 256, torch.full_like(i, 7)], dim=1).to(torch.uint8)
    return px[:, None, None, :].expand(n, size, size, 3).contiguous()


def _decode(video: torch.Tensor) -> list[int]:
    px = ((video[:, :, 0, 0] + 1) * 127.5).round().long()
    return [int(r + 256 * g) if b == 7 else -1 for r, g, b in px.T.tolist()]


def _windows(tl, bp_fps: Fraction, window_frames: int, lead: int) -> list[BlueprintWindow]:
    total = blueprint_frame_count(type("A", (), {"timeline": tl})(), bp_fps)
    return [BlueprintWindow(k, s, n, c, ()) for k, (s, n, _, c) in enumerate(plan_window_spans(total, window_frames,
            lead))]  # fmt: skip


@settings(max_examples=60, deadline=None)
@given(
    seconds=st.floats(min_value=0.1, max_value=30.0),
    fps=st.sampled_from(FPS),
    bp_fps=st.sampled_from(BP_FPS),
    cfps=st.sampled_from(CONTROL_FPS),
    window=st.sampled_from([(9, 4), (17, 4), (33, 8)]),
    start=st.integers(min_value=0, max_value=9),
    shortfall=st.integers(min_value=0, max_value=20),
)
def test_every_blueprint_window_gets_its_exact_control_slice(seconds, fps, bp_fps, cfps, window, start, shortfall):
    tl = plan_timeline(max(1, int(seconds * 16000)), 16000, fps, 17)
    need = math.ceil(Fraction(tl.padded_frames) / fps * cfps) + 1
    n = max(1, need - shortfall)
    control = ControlVideo(_indexed_frames(n), fps=cfps, start_frame=start)
    seen: dict[int, int] = {}
    for win in _windows(tl, bp_fps, *window):
        ctl = window_control(control, win, bp_fps, tl.fps, 8, 8)
        assert ctl.frames.shape == (3, win.length, 8, 8) and ctl.masks.shape == (win.length, 8, 8)
        want = []
        for j in range(win.length):  # the control frame whose span holds blueprint frame (start + j)'s time
            rel = Fraction(win.start + j) / bp_fps - Fraction(start) / fps
            i = math.floor(rel * cfps) if rel >= 0 else -1
            want.append(i if i < n else -1)
        got = _decode(ctl.frames) if any(w >= 0 for w in want) else [-1] * win.length
        assert got == want
        assert ctl.strength == (1.0 if all(w < 0 for w in want) else control.strength)
        for j, i in enumerate(got):  # a blueprint frame rendered by two windows (the lead) agrees
            assert seen.setdefault(win.start + j, i) == i


def test_sparse_keys_reach_the_blueprint_frame_whose_time_falls_in_their_frame():
    tl = plan_timeline(16000 * 2, 16000, 16, 17)  # blueprint at 4 fps: frame b shows output frame 4b
    keys = ControlVideo(_indexed_frames(3), keys=(8, 10, 13))
    win = BlueprintWindow(0, 0, 9, 9, ())
    got = _decode(window_control(keys, win, Fraction(4), tl.fps, 8, 8).frames)
    assert got == [-1, -1, 0, -1, -1, -1, -1, -1, -1]  # 8 = blueprint frame 2; 10 and 13 fall between frames


@pytest.fixture(scope="module")
def vace_models(models, tmp_path_factory):
    _, vae, te = models
    vace = load_wan_dit(_save(tmp_path_factory.mktemp("vace") / "vace.safetensors", tiny_vace_state_dict(0)))
    return WanModels(vace, vae, te)


@pytest.fixture(scope="module")
def inputs():
    aligned = aligned_tone(3.0, gate_hz=0.7)
    story = rule_based_storyline("a calm talk", aligned.timeline, [-30.0, -12.0, -20.0])
    reference = torch.rand(48, 40, 3, generator=torch.Generator().manual_seed(5))
    return reference, aligned, story


def _settings(**kw):
    return BlueprintSettings(**{**dict(width=32, height=32, fps=4, window_frames=9, seed=0, sampler=FAST, batch_size=1,
                                       lead_frames=4), **kw})  # fmt: skip


def _frames(bp) -> torch.Tensor:
    return torch.stack([bp.frame(i) for i in range(len(bp))])


def _by_hand(models, inputs, settings, control=None) -> torch.Tensor:
    """The blueprint rendered window by window without the stage: plain I2V, or VACE with the reference at mask
    0 over the window's control slice (computed here from the control's own indices)."""
    reference, aligned, story = inputs
    dit, vae, te = models.dit, models.vae, models.text_encoder
    width, height, sampler, _ = blueprint_size(models, reference, aligned, settings)
    ref = frame_reference(reference, width, height, settings.framing)
    bp_fps = Fraction(settings.fps)
    wins = plan_windows(aligned.timeline, story, bp_fps, blueprint_frame_count(aligned, bp_fps),
                        settings.window_frames, settings.lead_frames, settings.prompt_mode)  # fmt: skip
    bank, out = PromptBank(te, quiet()), []
    known = to_model_space(ref[None])[0]
    for win in wins:
        req = ClipRequest(win.length, {0: known}, bank.get(win.prompt), bank.get(with_negative(win.negative, sampler)),
                          derive_seed(settings.seed, win.index, salt=1))  # fmt: skip
        cond = encode_condition(vae, [req], height, width)
        if hasattr(dit.transformer, "vace_blocks"):
            video, masks = torch.zeros(1, 3, win.length, height, width), torch.ones(1, win.length, height, width)
            strength = 1.0
            if control is not None:
                v, m, idx = control.slice_at([Fraction(win.start + j) / bp_fps for j in range(win.length)],
                                             aligned.timeline.fps, height, width)  # fmt: skip
                if any(i is not None for i in idx):
                    video[0], masks[0], strength = v, m, control.strength
            video[0, :, 0], masks[0, 0] = known, 0.0
            with vace_control([dit.transformer], vace_context(vae, video, masks), strength):
                lat = sample_clips(dit, cond, [req], sampler, quiet())
        else:
            lat = sample_clips(dit, cond, [req], sampler, quiet())
        out.append(decode_to_uint8(vae, lat)[0][win.lead : win.lead + win.count])
    return torch.cat(out)


def test_a_vace_blueprint_renders_under_its_control_slice(vace_models, inputs, tmp_path):
    reference, aligned, story = inputs
    tl = aligned.timeline
    g = torch.Generator().manual_seed(6)
    control = ControlVideo(torch.randint(0, 256, (tl.padded_frames, 32, 32, 3), generator=g, dtype=torch.uint8),
                           fps=tl.fps, strength=STRONG)  # fmt: skip
    free = render_blueprint(vace_models, reference, aligned, story, _settings(), quiet(), work_dir=tmp_path / "f")
    guided = render_blueprint(vace_models, reference, aligned, story, _settings(), quiet(), work_dir=tmp_path / "g",
                              control=control)  # fmt: skip
    a, b = _frames(free), _frames(guided)
    assert a.shape == b.shape and guided.key != free.key
    assert (a.float() - b.float()).abs().mean() > 1.0  # the control reaches every window
    assert torch.equal(a, _by_hand(vace_models, inputs, _settings()))  # unguided VACE: reference at mask 0
    assert torch.equal(b, _by_hand(vace_models, inputs, _settings(), control))
    weaker = ControlVideo(control.frames, fps=tl.fps, strength=1.0)
    again = render_blueprint(vace_models, reference, aligned, story, _settings(), quiet(), work_dir=tmp_path / "g",
                             control=weaker)  # fmt: skip
    assert again.key != guided.key  # the control (its strength too) is in the key


def test_without_control_the_plain_blueprint_is_unchanged(wan_models, vace_models, inputs, tmp_path):
    reference, aligned, story = inputs
    bp = render_blueprint(wan_models, reference, aligned, story, _settings(), quiet(), work_dir=tmp_path)
    assert torch.equal(_frames(bp), _by_hand(wan_models, inputs, _settings()))
    # the key of a plain DiT has no control part at all (as before the control input existed)
    width, height, sampler, _ = blueprint_size(wan_models, reference, aligned, _settings())
    ref = frame_reference(reference, width, height, _settings().framing)
    wins = plan_windows(aligned.timeline, story, Fraction(4), blueprint_frame_count(aligned, Fraction(4)), 9, 4,
                        "majority")  # fmt: skip
    some = ControlVideo(_indexed_frames(3), fps=Fraction(4))
    assert blueprint_key(wan_models, ref, aligned, wins, _settings(), sampler, some) == blueprint_key(
        wan_models, ref, aligned, wins, _settings(), sampler)  # fmt: skip


def test_a_control_without_a_vace_blueprint_dit_is_refused(wan_models, inputs):
    reference, aligned, story = inputs
    control = ControlVideo(_indexed_frames(3), fps=Fraction(16))
    with pytest.raises(InputError, match="needs a Wan VACE DiT") as err:
        render_blueprint(wan_models, reference, aligned, story, _settings(), quiet(), control=control)
    assert err.value.input_name == "control"


def test_a_vace_dit_does_not_lift_keyframes_and_says_so(vace_models, inputs):
    """The lift is an I2V img2img pass (concat condition): a VACE blueprint's keyframes are resized, not lifted."""
    from avatar_cascade.stages.keyframes.extractor import extract_keyframes
    from avatar_cascade.stages.keyframes.settings import KeyframeSettings

    reference, aligned, story = inputs
    bp = render_blueprint(vace_models, reference, aligned, story, _settings(), quiet())
    rt = quiet()
    kf = extract_keyframes(bp, aligned, reference, KeyframeSettings(width=32, height=32, face_detectors=False), rt,
                           models=vace_models, storyline=story)  # fmt: skip
    assert len(kf.images) == len(aligned.timeline.seams)
    assert not any(s["lifted"] for s in kf.scores[1:]) and any("not lifted" in w for w in rt.warnings)

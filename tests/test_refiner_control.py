"""Guided refinement: the tiny Wan VACE through the refiner under a control video. Without a control input
the output equals the unguided VACE path bit for bit; the control reaches the DiT and the cache key of
exactly the clips whose slice changed; keyframes stay anchored (mask 0) and can be pasted exactly; the
InfiniteTalk adapter still applies; a control input without a VACE DiT is refused."""

from __future__ import annotations

import dataclasses
from fractions import Fraction

import pytest
import torch

from avatar_cascade.artefacts.control import ControlVideo
from avatar_cascade.core.errors import InputError
from avatar_cascade.core.seeds import derive_seed
from avatar_cascade.demo.tiny_vace import tiny_vace_state_dict
from avatar_cascade.models.handle import WanModels
from avatar_cascade.models.wan_dit import load_wan_dit
from avatar_cascade.sampling.conditioning import ClipRequest, decode_to_uint8, encode_condition
from avatar_cascade.sampling.loop import sample_clips
from avatar_cascade.sampling.prompts import PromptBank
from avatar_cascade.sampling.settings import SamplerSettings, with_negative
from avatar_cascade.sampling.vace import vace_context, vace_control
from avatar_cascade.stages.refiner import control as vc
from avatar_cascade.stages.refiner.refiner import RefinerSettings, refine_clips, resolve_settings
from tests.helpers import ForwardCounter
from tests.helpers import cpu_runtime as quiet
from tests.helpers import refiner_inputs as make_inputs
from tests.helpers import save_safetensors as _save

SIZE, STEPS = 16, 2
STRONG = 5.0
SETTINGS = RefinerSettings(seed=7, batch_size=2, sampler=SamplerSettings(steps=STEPS, guidance=3.0, shift=3.0))


@pytest.fixture(scope="module")
def vace(tmp_path_factory):
    return load_wan_dit(_save(tmp_path_factory.mktemp("vace") / "vace.safetensors", tiny_vace_state_dict(0)))


def run(dit, models, cache, inputs=None, **kw):
    _, vae, te = models
    kf, aligned, story = inputs or make_inputs()
    return refine_clips(WanModels(dit, vae, te), kf, aligned, story, SETTINGS, quiet(), cache_dir=cache, **kw)


def frames_of(clips):
    return [clips.frames(r.index) for r in clips.records]


def _pose_like(n: int, seed: int = 5) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, SIZE, SIZE, 3), generator=g, dtype=torch.uint8)


def test_without_control_output_equals_the_unguided_vace_path_bit_for_bit(vace, models, tmp_path):
    _, vae, te = models
    kf, aligned, story = make_inputs()
    clips = run(vace, models, tmp_path / "a")
    # the unguided VACE path by hand: keyframes at mask 0 in a grey control video, mask 1 elsewhere
    rt, bank = quiet(), PromptBank(te, quiet())
    mf = kf.as_model_frames()
    sampler = resolve_settings(SETTINGS, vace, SIZE, SIZE).sampler
    plain = []
    for batch in ([0, 1], [2]):
        reqs = [
            ClipRequest.first_last(5, mf[k], mf[k + 1], bank.get(story.shot_prompt(k)),
                                   bank.get(with_negative(story.shot_negative(k), sampler)), derive_seed(7, k))
            for k in batch
        ]
        video = torch.zeros(len(batch), 3, 5, SIZE, SIZE)
        masks = torch.ones(len(batch), 5, SIZE, SIZE)
        for b, k in enumerate(batch):
            video[b, :, 0], video[b, :, 4] = mf[k], mf[k + 1]
            masks[b, 0] = masks[b, 4] = 0
        with vace_control([vace.transformer], vace_context(vae, video, masks), 1.0):
            lat = sample_clips(vace, encode_condition(vae, reqs, SIZE, SIZE), reqs, sampler, rt)
        plain += list(decode_to_uint8(vae, lat))
    for got, want in zip(frames_of(clips), plain):
        assert torch.equal(got, want)
    # a control video that covers none of the frames is no control at all: same frames, same keys
    late = ControlVideo(_pose_like(3), fps=Fraction(16), start_frame=1000)
    again = run(vace, models, tmp_path / "b", control=late)
    assert [r.key for r in again.records] == [r.key for r in clips.records]
    assert all(torch.equal(a, b) for a, b in zip(frames_of(again), frames_of(clips)))


def test_control_changes_exactly_the_clips_whose_slice_changed(vace, models, tmp_path):
    kf, aligned, story = make_inputs()  # 3 clips of 5 frames: 0-4, 4-8, 8-12 at 16 fps
    tl = aligned.timeline
    pose = _pose_like(tl.padded_frames)
    base = run(vace, models, tmp_path / "n")
    guided = run(vace, models, tmp_path / "c", control=ControlVideo(pose, fps=tl.fps, strength=STRONG))
    assert guided.computed == 3
    # a random tiny VACE reacts weakly at strength 1 (about 0.001 levels); at 5 every clip changes by levels
    assert all((a.float() - b.float()).abs().mean() > 1.0 for a, b in zip(frames_of(guided), frames_of(base)))
    edited = pose.clone()
    edited[10] = 255 - edited[10]  # only clip 2 renders frame 10
    counter = ForwardCounter(vace.transformer)
    try:
        again = run(vace, models, tmp_path / "c", control=ControlVideo(edited, fps=tl.fps, strength=STRONG))
        assert [r.cached for r in again.records] == [True, True, False] and counter.take() == STEPS
    finally:
        counter.close()
    half = run(vace, models, tmp_path / "c", control=ControlVideo(edited, fps=tl.fps, strength=0.5))
    assert half.computed == 3  # the strength is in every key


def test_keyframes_are_anchored_and_exact_keys_are_pasted(vace, models, tmp_path):
    kf, aligned, story = make_inputs()
    sketch = ControlVideo(_pose_like(2), keys=(2, 6))  # sparse sketch keys between the drawn keys
    clips = run(vace, models, tmp_path, control=sketch, exact_keys=True)
    for r in clips.records:
        fr = clips.frames(r.index)
        assert torch.equal(fr[0], kf.images[r.index]) and torch.equal(fr[-1], kf.images[r.index + 1])
    # what the DiT reads: the keyframes sit at mask 0 in the clip's VACE video, the sketch at mask 1
    c = aligned.timeline.clips[0]
    ctl = vc.clip_control(sketch, c, aligned.timeline.fps, SIZE, SIZE, exact_keys=True)
    mf = kf.as_model_frames()
    req = vc.with_control(ClipRequest.first_last(5, mf[0], mf[1], torch.zeros(1, 32), torch.zeros(1, 32), 0), ctl)
    video, masks = vc.vace_video(req)
    assert torch.equal(video[:, 0], mf[0]) and torch.equal(video[:, 4], mf[1])
    assert [float(m.mean()) for m in masks] == [0.0, 1.0, 1.0, 1.0, 0.0]
    assert torch.equal(video[:, 2], _pose_like(2)[0].permute(2, 0, 1).float() / 127.5 - 1)
    assert float(video[:, 1].abs().max()) == 0.0


def test_audio_adapter_still_applies_on_a_vace_dit(vace, models, audio_adapter_file, tmp_path):
    from avatar_cascade.models import audio_adapter as AA

    adapter = AA.load_audio_adapter(audio_adapter_file, vace)
    talking = adapter.attach(vace)
    try:
        kf, aligned, story = make_inputs()
        feats = torch.randn(aligned.timeline.num_frames, 2, 32, generator=torch.Generator().manual_seed(3)).half()
        pose = ControlVideo(_pose_like(aligned.timeline.padded_frames), fps=aligned.timeline.fps)
        silent = run(vace, models, tmp_path, control=pose)
        talk = run(talking, models, tmp_path, inputs=(kf, dataclasses.replace(aligned, features=feats), story),
                   control=pose)
        assert talk.computed == 3
        assert any(not torch.equal(a, b) for a, b in zip(frames_of(silent), frames_of(talk)))
    finally:
        adapter.detach()


def test_control_without_a_vace_dit_is_refused(models, tmp_path):
    dit = models[0]
    with pytest.raises(InputError, match="needs a Wan VACE DiT"):
        run(dit, models, tmp_path, control=ControlVideo(_pose_like(3), fps=Fraction(16)))


def test_sketch_guided_inbetweening_guides_only_the_segment_of_each_sketch(vace, models, tmp_path):
    """ToonCrafter's sketch-guided interpolation: drawn keys -> in-between timeline; a sketch at frame 6 guides
    segment 0's in-betweens, segment 1 (no sketch) renders exactly as without sketches, the keys come out
    exactly as drawn."""
    from avatar_cascade.media.guidance.frames import lineart_frames
    from avatar_cascade.stages.inbetween.inbetween import keyframes_from_images
    from avatar_cascade.stages.inbetween.settings import InbetweenSettings

    g = torch.Generator().manual_seed(9)
    drawn = torch.rand(3, 24, 24, 3, generator=g)
    kf, aligned, story = keyframes_from_images(drawn, InbetweenSettings(segment_frames=9, fps=16, width=16, height=16))
    assert aligned.timeline.seams == [0, 8, 16]
    sketch = lineart_frames(torch.rand(1, 16, 16, 3, generator=g))
    plain = run(vace, models, tmp_path / "p", inputs=(kf, aligned, story), exact_keys=True)
    guided = run(vace, models, tmp_path / "s", inputs=(kf, aligned, story), exact_keys=True,
                 control=ControlVideo(sketch, keys=(6,), strength=STRONG))  # fmt: skip
    a, b = frames_of(plain), frames_of(guided)
    assert torch.equal(a[1], b[1]) and guided.records[1].key == plain.records[1].key  # segment 1: no sketch
    assert (a[0][1:-1].float() - b[0][1:-1].float()).abs().mean() > 1.0  # segment 0's in-betweens follow it
    for k, fr in enumerate(b):  # the drawn keys, exactly
        assert torch.equal(fr[0], kf.images[k]) and torch.equal(fr[-1], kf.images[k + 1])

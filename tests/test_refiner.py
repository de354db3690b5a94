"""First-last-frame refiner on the tiny demo models: exact baseline, resume after SIGKILL, per-shot
recompute, re-roll, out-of-memory halving, several workers, negative-frame guidance, audio windows."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from avatar_cascade.artefacts.aligned_audio import AlignedAudio
from avatar_cascade.artefacts.keyframes import Keyframes
from avatar_cascade.artefacts.timeline import plan_timeline
from avatar_cascade.core.errors import InputError
from avatar_cascade.core.seeds import derive_seed
from avatar_cascade.demo import tiny_weights as TW
from avatar_cascade.demo.layouts import dit_to_original_layout
from avatar_cascade.media import AudioTrack
from avatar_cascade.models.handle import WanModels
from avatar_cascade.models.presets import preset_for
from avatar_cascade.sampling.conditioning import ClipRequest, decode_to_uint8, encode_condition
from avatar_cascade.sampling.loop import sample_clips
from avatar_cascade.sampling.prompts import PromptBank
from avatar_cascade.sampling.settings import SamplerSettings, with_negative
from avatar_cascade.stages.inbetween.inbetween import inbetween_storyline
from avatar_cascade.stages.refiner.refiner import RefinerSettings, parse_reroll, refine_clips, resolve_settings
from tests.helpers import cpu_runtime as quiet
from tests.helpers import load_tiny_models
from tests.helpers import refiner_inputs as make_inputs

ROOT = Path(__file__).resolve().parents[1]
SR, FPS, SIZE = 16000, 16, 16
STEPS = 2
SETTINGS = RefinerSettings(seed=7, batch_size=2, sampler=SamplerSettings(steps=STEPS, guidance=3.0, shift=3.0))


# ``models`` (the tiny demo DiT, VAE, text encoder) and ``counter`` (DiT forwards) come from conftest.py;
# make_inputs(): ``clips`` clips of 5 frames at 16 fps, random 16x16 keyframes, one prompt (deterministic).


def run(models, cache, settings=SETTINGS, inputs=None, image_encoder=None, **kw):
    """``refine_clips`` on ``WanModels(*models, image_encoder)``; ``kw``: ``reroll=``, ``runtime=``."""
    kf, aligned, story = inputs or make_inputs()
    rt = kw.pop("runtime", None) or quiet()
    return refine_clips(WanModels(*models, image_encoder), kf, aligned, story, settings, rt, cache_dir=cache, **kw)


def frames_of(clips) -> list[torch.Tensor]:
    return [clips.frames(r.index) for r in clips.records]


# ----------------------------------------------------------------------------- reroll syntax


def test_parse_reroll():
    assert parse_reroll("3, 7-9") == {3: 1, 7: 1, 8: 1, 9: 1}
    assert parse_reroll(" 2 - 3 ;2") == {2: 2, 3: 1}
    assert parse_reroll("") == {} and parse_reroll(None) == {}
    with pytest.raises(InputError, match="reroll.*cannot read 'x'"):
        parse_reroll("1, x")
    with pytest.raises(InputError, match="clip 5 does not exist"):
        parse_reroll("5", num_clips=3)
    with pytest.raises(InputError, match="runs backwards"):
        parse_reroll("4-2")


def test_settings_are_checked():
    with pytest.raises(InputError, match="negative_frame_strength"):
        RefinerSettings(negative_frame_strength=-1).check()
    with pytest.raises(InputError, match="devices"):
        RefinerSettings(devices=("nonsense:0",)).check()


# ----------------------------------------------------------------------------- exactness


def test_strength_zero_is_exactly_plain_sampling_and_strength_changes_it(models, tmp_path, counter):
    dit, vae, te = models
    kf, aligned, story = make_inputs()
    clips = run(models, tmp_path / "a", dataclasses.replace(SETTINGS, negative_frame_strength=0.0))
    assert counter.take() == STEPS * 2  # two batches (2 + 1 clips), text CFG in one forward per step

    # The plain pipeline as it was before negative frames existed: same batches, same seeds.
    rt, bank = quiet(), PromptBank(te, quiet())
    model_frames = kf.as_model_frames()
    # what the refiner samples with: the tiny DiT's preset fills the auto values, Wan's negative prompt
    # follows every shot's own
    sampler = resolve_settings(SETTINGS, dit, SIZE, SIZE).sampler
    assert sampler.negative_prompt == preset_for(dit).negative_prompt != ""
    plain = []
    for batch in ([0, 1], [2]):
        reqs = [
            ClipRequest.first_last(
                5,
                model_frames[k],
                model_frames[k + 1],
                bank.get(story.shot_prompt(k)),
                bank.get(with_negative(story.shot_negative(k), sampler)),
                derive_seed(SETTINGS.seed, k),
            )
            for k in batch
        ]
        cond = encode_condition(vae, reqs, SIZE, SIZE)
        plain += list(decode_to_uint8(vae, sample_clips(dit, cond, reqs, sampler, rt)))
    counter.take()
    for got, want in zip(frames_of(clips), plain):
        assert torch.equal(got, want)

    guided = run(models, tmp_path / "b", dataclasses.replace(SETTINGS, negative_frame_strength=1.5))
    assert counter.take() == 2 * STEPS * 2  # one extra (drifted) forward per step
    diffs = [(a.float() - b.float()).abs().mean() for a, b in zip(frames_of(guided), plain)]
    assert min(diffs) > 0.1, diffs  # a random tiny DiT reacts weakly, but every clip changes
    assert guided.records[0].key != clips.records[0].key


# ----------------------------------------------------------------------------- resume / edit / reroll


def killed_run(models_dir: str, cache: str, kill_after: int) -> None:
    """Subprocess body: refine one clip per pass and SIGKILL this process after ``kill_after`` clips."""
    done = []

    def preview(kind, payload):
        done.append(kind)
        if len(done) == kill_after:
            os.kill(os.getpid(), signal.SIGKILL)

    kf, aligned, story = make_inputs()
    settings = dataclasses.replace(SETTINGS, batch_size=1)
    models = WanModels(*load_tiny_models(models_dir))
    refine_clips(models, kf, aligned, story, settings, quiet(preview=preview), cache_dir=Path(cache))
    raise SystemExit("not killed")


@pytest.mark.slow  # a subprocess that loads the models, then SIGKILL
def test_killed_run_resumes_with_only_the_missing_clips(models, demo_models_dir, tmp_path, counter):
    cache = tmp_path / "clips"
    code = (
        f"import sys; sys.path[:0] = [{str(ROOT)!r}, {str(ROOT / 'tests')!r}]; import test_refiner as t; "
        f"t.killed_run({str(demo_models_dir)!r}, {str(cache)!r}, 2)"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert len(list(cache.glob("clip_*.safetensors"))) == 2

    clips = run(models, cache, dataclasses.replace(SETTINGS, batch_size=1))
    assert clips.computed == 1 and [r.cached for r in clips.records].count(True) == 2
    assert counter.take() == STEPS * 1  # only the missing clip was sampled

    # A damaged cache entry (truncated file at the final path) is recomputed, nothing else.
    victim = clips.records[0].path
    victim.write_bytes(victim.read_bytes()[:100])
    again = run(models, cache, dataclasses.replace(SETTINGS, batch_size=1))
    assert [r.cached for r in again.records] == [False, True, True] and counter.take() == STEPS
    manifest = json.loads((cache / "refiner_manifest.json").read_text())
    assert [c["reused"] for c in manifest["clips"]] == [False, True, True]


def test_editing_one_shot_recomputes_exactly_that_clip(models, tmp_path, counter):
    kf, aligned, story = make_inputs()
    first = run(models, tmp_path, inputs=(kf, aligned, story))
    counter.take()
    story.shots[1].prompt = "the person laughs and waves"
    second = run(models, tmp_path, inputs=(kf, aligned, story))
    assert [r.cached for r in second.records] == [True, False, True]
    assert counter.take() == STEPS
    assert torch.equal(first.frames(0), second.frames(0)) and not torch.equal(first.frames(1), second.frames(1))


def test_reroll_regenerates_only_listed_clips_and_is_reused_later(models, tmp_path, counter):
    base = run(models, tmp_path)
    counter.take()
    rolled = run(models, tmp_path, reroll="1-2")
    assert [r.cached for r in rolled.records] == [True, False, False] and counter.take() == STEPS
    assert [r.seed_offset for r in rolled.records] == [0, 1, 1]
    assert rolled.records[1].seed == derive_seed(SETTINGS.seed, 1, salt=1) != base.records[1].seed
    assert torch.equal(rolled.frames(0), base.frames(0)) and not torch.equal(rolled.frames(1), base.frames(1))
    again = run(models, tmp_path, reroll="1, 2")  # the same re-roll, written differently: all reused
    assert again.computed == 0 and counter.take() == 0
    second = run(models, tmp_path, reroll="1-2, 2")  # clip 2 rolled a second time
    assert [r.cached for r in second.records] == [True, True, False] and second.records[2].seed_offset == 2
    assert run(models, tmp_path).computed == 0  # the originals are still in the cache


# ----------------------------------------------------------------------------- parallel / memory


def test_out_of_memory_halves_the_batch_and_keeps_going(models, tmp_path, monkeypatch, caplog):
    reference = frames_of(run(models, tmp_path / "ref", dataclasses.replace(SETTINGS, batch_size=1)))
    transformer = models[0].transformer
    real = transformer.forward
    seen = []

    def forward(*args, **kwargs):  # fault injection: more than one clip (2 CFG rows) per pass "does not fit"
        rows = kwargs["hidden_states"].shape[0]
        seen.append(rows)
        if rows > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected)")
        return real(*args, **kwargs)

    monkeypatch.setattr(transformer, "forward", forward)
    caplog.set_level(logging.WARNING, "avatar_cascade")
    clips = run(models, tmp_path / "oom", dataclasses.replace(SETTINGS, batch_size=3))
    assert clips.computed == 3 and seen.count(6) == 1 and max(seen[1:]) == 2
    assert any(
        "out of memory with 3 clips" in r.getMessage() and "halving to 1" in r.getMessage() for r in caplog.records
    )
    for got, want in zip(frames_of(clips), reference):
        assert (got.int() - want.int()).abs().max() <= 1

    monkeypatch.setattr(transformer, "forward", lambda *a, **k: (_ for _ in ()).throw(torch.cuda.OutOfMemoryError()))
    with pytest.raises(InputError, match="one clip does not fit"):
        run(models, tmp_path / "never", dataclasses.replace(SETTINGS, batch_size=1))


def test_two_workers_render_the_same_clips_as_one(models, tmp_path, counter):
    one = frames_of(run(models, tmp_path / "one", dataclasses.replace(SETTINGS, batch_size=1)))
    counter.take()
    previews = []
    rt = quiet(preview=lambda kind, x: previews.append((kind, tuple(x.shape))))
    two = run(models, tmp_path / "two", dataclasses.replace(SETTINGS, batch_size=1, devices=("cpu", "cpu")), runtime=rt)
    assert len(set(counter.calls)) == 2  # the original and its replica both sampled clips
    assert counter.take() == 3 * STEPS
    assert previews == [("clip", (5, SIZE, SIZE, 3))] * 3  # one preview per finished clip, on the caller's thread
    for a, b in zip(one, frames_of(two)):
        assert torch.equal(a, b)


# ----------------------------------------------------------------------------- audio windows, overlap


def test_audio_windows_reach_the_dit_and_the_cache_key(models, audio_adapter_file, tmp_path, counter):
    from avatar_cascade.models import audio_adapter as AA

    dit, vae, te = models
    adapter = AA.load_audio_adapter(audio_adapter_file, dit)
    talking = adapter.attach(dit)
    try:
        kf, aligned, story = make_inputs()
        g = torch.Generator().manual_seed(3)
        feats = torch.randn(aligned.timeline.num_frames, 2, 32, generator=g).half()
        with_audio = dataclasses.replace(aligned, features=feats)
        silent = run(models, tmp_path / "c", inputs=(kf, aligned, story))
        talk = run((talking, vae, te), tmp_path / "c", inputs=(kf, with_audio, story))
        assert talk.computed == 3  # audio-conditioned clips are other clips
        assert any(not torch.equal(a, b) for a, b in zip(frames_of(silent), frames_of(talk)))
        counter.take()
        changed = feats.clone()
        changed[12] += 1  # only clip 2 (frames 8-12) hears row 12: windows reach 2 rows out, clip 1 ends at row 10
        again = run(
            (talking, vae, te), tmp_path / "c", inputs=(kf, dataclasses.replace(aligned, features=changed), story)
        )
        assert [r.cached for r in again.records] == [True, True, False] and counter.take() == STEPS
    finally:
        adapter.detach()


def test_overlap_timeline_renders_the_overlap_with_keyframes_inside(models, tmp_path):
    tl = plan_timeline(25 * SR // FPS, SR, FPS, clip_frames=9, overlap_frames=4)
    assert [c.render_frames for c in tl.clips] == [13, 17, 13]
    g = torch.Generator().manual_seed(0)
    kf = Keyframes(torch.randint(0, 256, (4, SIZE, SIZE, 3), generator=g, dtype=torch.uint8), tl.seams, [None] * 4)
    aligned = AlignedAudio(tl, AudioTrack(torch.zeros(1, tl.num_samples), SR))
    clips = run(models, tmp_path, inputs=(kf, aligned, inbetween_storyline(tl, "hi")))
    assert [tuple(clips.frames(k).shape) for k in range(3)] == [(n, SIZE, SIZE, 3) for n in (13, 17, 13)]
    assert [r.keyframe_offsets for r in clips.records] == [(0, 8), (4, 12), (4, 12)]


def test_both_keyframes_go_through_the_image_encoder_of_an_flf2v_dit(models, tmp_path, monkeypatch):
    from diffusers import WanTransformer3DModel
    from safetensors.torch import save_file

    from avatar_cascade.models import clip_vision as C
    from avatar_cascade.models import wan_dit as W

    torch.manual_seed(3)
    sd = dit_to_original_layout(
        WanTransformer3DModel.from_config(W.load_bundled_config("avatar-cascade-tiny-wan-flf2v")).state_dict()
    )
    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "flf.safetensors"))
    save_file(TW.tiny_clip_vision_state_dict(0), str(tmp_path / "cv.safetensors"))
    flf, encoder = W.load_wan_dit(tmp_path / "flf.safetensors"), C.load_clip_vision(tmp_path / "cv.safetensors")
    _, vae, te = models
    kf, aligned, story = make_inputs()
    with pytest.raises(InputError, match="clip_vision"):
        run((flf, vae, te), tmp_path / "c", inputs=(kf, aligned, story))

    seen = []
    real = C.frame_tokens
    monkeypatch.setattr(C, "frame_tokens", lambda enc, frames: seen.append(frames) or real(enc, frames))
    clips = run((flf, vae, te), tmp_path / "c", inputs=(kf, aligned, story), image_encoder=encoder)
    assert clips.computed == 3 and len(seen) == 2  # two batches
    model_frames = kf.as_model_frames()
    first, last = seen[0][1]  # clip 1 of the first batch: its keyframes 1 and 2
    assert torch.equal(first, model_frames[1]) and torch.equal(last, model_frames[2])
    # the encoder is part of the key: a plain DiT ignores it, so its clips stay the same
    plain = run(models, tmp_path / "p")
    assert run(models, tmp_path / "p", image_encoder=encoder).computed == 0 and plain.computed == 3

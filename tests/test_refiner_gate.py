"""The refiner's per-clip quality gate on the tiny demo models: forced-fail re-rolls keep the best try and
record every try; a re-run reuses the decision; an interrupted gate resumes with the tries it had."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from safetensors.torch import load_file

from avatar_cascade.core.errors import Interrupted
from avatar_cascade.core.seeds import derive_seed
from avatar_cascade.models.handle import WanModels
from avatar_cascade.sampling.settings import SamplerSettings
from avatar_cascade.stages.refiner.gate import GateSettings, try_record
from avatar_cascade.stages.refiner.refiner import RefinerSettings, refine_clips
from tests.helpers import cpu_runtime
from tests.helpers import refiner_inputs as make_inputs

STEPS = 2
BASE = RefinerSettings(seed=7, batch_size=2, sampler=SamplerSettings(steps=STEPS, guidance=3.0, shift=3.0))
FAIL = GateSettings(tries=3, min_identity=1.0)  # the identity proxy never reaches 1: every try fails
PASS = GateSettings(tries=3, min_identity=0.0, min_sync=0.0, min_continuity=0.0)


def run(models, cache, gate: GateSettings | None = None, runtime=None):
    kf, aligned, story = make_inputs()
    settings = dataclasses.replace(BASE, gate=gate) if gate is not None else BASE
    return refine_clips(WanModels(*models), kf, aligned, story, settings, runtime or cpu_runtime(), cache_dir=cache)


def manifest(cache) -> list[dict]:
    return json.loads((cache / "refiner_manifest.json").read_text())["clips"]


def test_gate_is_off_by_default_and_adds_nothing(models, counter, tmp_path):
    assert not RefinerSettings().gate.enabled
    run(models, tmp_path)
    assert "gate" not in manifest(tmp_path)[0] and not list(tmp_path.glob("gate_*.json"))


def test_forced_fail_rerolls_every_clip_keeps_the_best_and_records_the_tries(models, counter, tmp_path):
    rt = cpu_runtime()
    clips = run(models, tmp_path, FAIL, rt)
    assert counter.take() == 3 * 2 * STEPS  # base + two re-rolls, 3 clips in batches of 2
    for rec, row in zip(clips.records, manifest(tmp_path)):
        gate = row["gate"]
        tries = gate["tries"]
        assert [t["try"] for t in tries] == [0, 1, 2] and not any(t["passed"] for t in tries)
        assert len({t["seed"] for t in tries}) == 3 and len({t["file"] for t in tries}) == 3
        best = max(tries, key=lambda t: t["total"])
        assert gate["kept"] == best["try"] and gate["passed"] is False and gate["reused"] is False
        assert row["file"] == best["file"] == rec.path.name and row["seed"] == best["seed"] == rec.seed
        assert gate["methods"]["identity"] == "proxy"  # random keyframes: no face, the labelled proxy
        for t in tries:
            assert 0 <= t["identity"] < 1 and t["total"] == pytest.approx(
                sum(v for v in (t["identity"], t["sync"], t["continuity"]) if v is not None)
                / sum(v is not None for v in (t["identity"], t["sync"], t["continuity"])),
                abs=1e-3,
            )
        assert torch.equal(clips.frames(rec.index), load_file(str(tmp_path / best["file"]))["frames"])
    assert any("quality gate" in w for w in rt.warnings)
    # the seeds of the tries are the documented ones
    rec0 = manifest(tmp_path)[0]["gate"]["tries"]
    base_seed = derive_seed(BASE.seed, 0)
    assert rec0[0]["seed"] == base_seed and rec0[1]["seed"] == derive_seed(base_seed, 0, salt=1)


def test_a_rerun_reuses_the_kept_tries_without_rendering_or_scoring(models, counter, tmp_path, monkeypatch):
    first = run(models, tmp_path, FAIL)
    counter.take()
    from avatar_cascade.stages.refiner import gate

    monkeypatch.setattr(gate.ClipJudge, "score", lambda *a: pytest.fail("a stored decision must not be re-scored"))
    again = run(models, tmp_path, FAIL)
    assert counter.take() == 0
    assert [r.path for r in again.records] == [r.path for r in first.records]
    assert all(row["gate"]["reused"] for row in manifest(tmp_path))


def test_passing_clips_are_not_rerolled_and_equal_the_ungated_clips(models, counter, tmp_path):
    gated = run(models, tmp_path / "a", PASS)
    assert counter.take() == 2 * STEPS
    plain = run(models, tmp_path / "b")
    assert all(row["gate"]["kept"] == 0 and row["gate"]["passed"] for row in manifest(tmp_path / "a"))
    for a, b in zip(gated.records, plain.records):
        assert torch.equal(gated.frames(a.index), plain.frames(b.index))


def test_an_interrupted_gate_resumes_with_the_tries_it_had(models, counter, tmp_path):
    state = {"previews": 0}

    def preview(kind, payload):
        state["previews"] += kind == "clip"

    def interrupt():
        if state["previews"] >= 5:  # 3 base clips + the first batch (2 clips) of try 1 are finished
            raise Interrupted("stop")

    with pytest.raises(Interrupted):
        run(models, tmp_path, FAIL, cpu_runtime(preview=preview, interrupt_check=interrupt))
    counter.take()
    resumed = run(models, tmp_path, FAIL)
    assert counter.take() == (1 + 2) * STEPS  # try 1: one clip left (1 batch); try 2: 3 clips (2 batches)
    uninterrupted = run(models, tmp_path / "fresh", FAIL)
    assert [r.path.name for r in resumed.records] == [r.path.name for r in uninterrupted.records]


def test_try_records_have_their_own_keys_and_files(tmp_path):
    from avatar_cascade.artefacts.clips import ClipRecord

    rec = ClipRecord(2, tmp_path / "clip_00002_abc.safetensors", 5, "abc", seed=11)
    t1, t2 = try_record(rec, 1), try_record(rec, 2)
    assert len({rec.key, t1.key, t2.key}) == 3 and t1.path.parent == tmp_path and t1.path.name.startswith("clip_00002_")
    assert t1.seed == derive_seed(11, 2, salt=1) and try_record(rec, 1) == t1


def test_clip_judge_on_a_real_face_scores_identity_and_lipsync():
    """The gate's scores with the detectors: the astronaut whose drawn mouth follows real speech against the
    same clip played backwards (mouth out of sync) and a clip of someone else."""
    import numpy as np

    from avatar_cascade.media import AudioTrack
    from avatar_cascade.stages.aligner.aligner import align_audio
    from avatar_cascade.stages.aligner.settings import AlignerSettings
    from avatar_cascade.stages.refiner.gate import ClipJudge
    from tests import real_media as rm

    rm.need_face_models()
    rm.need_silero()
    wave, sr, _ = rm.speech_with_pauses(pauses=1)
    aligned = align_audio(
        AudioTrack(wave, sr), AlignerSettings(fps=25, clip_frames=81, snap_seams_frames=0), cpu_runtime()
    )
    n = aligned.timeline.clips[0].render_frames
    env = rm.loudness_envelope(wave, sr, 25, n)
    ref = rm.astronaut(256)
    synced = torch.from_numpy(np.stack([rm.open_mouth(ref, 2 + 22 * e, 0.5) if e > 0.05 else ref for e in env]))
    judge = ClipJudge(torch.from_numpy(ref), aligned, GateSettings(tries=2))
    assert judge.methods["identity"] == "face_embedding" and judge.methods["sync"] == "dark_fraction_5pt+silero_vad"
    good = judge.score(0, synced)
    backwards = judge.score(0, synced.flip(0))
    other = judge.score(
        0, torch.from_numpy(np.stack([rm.resize(rm.face_on_background(rm.other_people(1)[0]), 256)] * n))
    )
    assert good["identity"] > 0.6 > 0.45 > other["identity"], (good, other)
    assert good["sync"] > 0.7 and good["sync"] > backwards["sync"] + 0.2, (good, backwards)
    assert judge.passes(good) and not judge.passes(other)

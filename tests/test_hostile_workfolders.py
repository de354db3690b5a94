"""Adversarial suite: work folders that are damaged, stale or shared.

Expected outcomes: a damaged cache entry (a truncated blueprint window, a clip file of the wrong frame
count, a damaged storyline) is detected on reuse and rendered again - never trusted, never an error on
every later run; hidden partial files of killed writers are removed (a live writer's are kept); a
blueprint store some run still uses is never pruned. The three-runs-at-once case is in
``test_hostile_concurrency.py`` (slow).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from avatar_cascade.sampling.settings import SamplerSettings
from avatar_cascade.stages.blueprint.sampler import BlueprintSettings, render_blueprint
from avatar_cascade.stages.director.rules import rule_based_storyline
from avatar_cascade.stages.refiner.refiner import RefinerSettings, refine_clips
from tests.helpers import aligned_tone, refiner_inputs
from tests.helpers import cpu_runtime as quiet

STEPS = 2
FAST = SamplerSettings(steps=STEPS, guidance=1.0, shift=3.0)


def _blueprint_case(wan_models):
    aligned = aligned_tone(3.0, 16, 17)
    story = rule_based_storyline("a calm talk", aligned.timeline, [-20.0, -20.0, -20.0])
    reference = torch.rand(48, 40, 3, generator=torch.Generator().manual_seed(5))
    # batch 1: a window re-rendered alone then gives the same bits as in the first run (batched matmuls may
    # differ in the last bits between batch sizes)
    settings = BlueprintSettings(width=32, height=32, fps=4, window_frames=9, lead_frames=4, batch_size=1, sampler=FAST)
    return lambda work: render_blueprint(wan_models, reference, aligned, story, settings, quiet(), work_dir=work)


@pytest.mark.parametrize("damage", ["truncate", "delete", "wrong-shape"])
def test_a_damaged_blueprint_window_is_rendered_again_on_the_next_run(damage, wan_models, tmp_path, counter):
    """A finished store with one window truncated / deleted / of the wrong shape: the next run re-renders
    that window (same frames as before), instead of failing on every run."""
    from avatar_cascade.core.cache import atomic_save_tensors

    render = _blueprint_case(wan_models)
    first = render(tmp_path)
    frames = first.frames(0, len(first)).clone()
    windows = len(first.window_starts)
    assert windows == 2
    first.release()
    counter.take()
    chunk = sorted(first.folder.glob("window_*.safetensors"))[0]  # the first: windows are independent
    if damage == "truncate":
        data = chunk.read_bytes()
        chunk.write_bytes(data[: len(data) // 2])
    elif damage == "delete":
        chunk.unlink()
    else:
        atomic_save_tensors(chunk, {"frames": torch.zeros(1, 32, 32, 3, dtype=torch.uint8)})
    again = render(tmp_path)
    assert not again.reused
    assert counter.take() == STEPS  # only the damaged window was sampled again, not the ones after it
    assert torch.equal(again.frames(0, len(again)), frames)
    third = render(tmp_path)
    assert third.reused and counter.take() == 0  # healed


def test_a_store_in_use_is_never_pruned_and_is_pruned_once_released(tmp_path):
    """A live Blueprint (another run's) holds a lease on its store: pruning skips it until it is released."""
    from avatar_cascade.artefacts.blueprint import Blueprint, prune_stores

    frames = torch.zeros(3, 16, 16, 3, dtype=torch.uint8)
    live = Blueprint.from_frames(frames, 8, tmp_path / "a", key="a")
    time_order = [live]
    for key in ("b", "c"):
        time_order.append(Blueprint.from_frames(frames, 8, tmp_path / key, key=key))
        time_order[-1].release()
    for i, bp in enumerate(time_order):
        os.utime(bp.folder / "index.json", (1000 + i, 1000 + i))
    prune_stores(tmp_path, keep=1, current=tmp_path / "c")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "c"]  # b pruned; a in use
    assert torch.equal(live.frames(0, 3), frames)
    live.release()
    prune_stores(tmp_path, keep=1, current=tmp_path / "c")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]


def test_a_clip_file_with_the_wrong_frame_count_is_rendered_again(wan_models, tmp_path, counter):
    """A valid safetensors clip under the right key but with too few frames: not trusted, rendered again."""
    from avatar_cascade.core.cache import atomic_save_tensors

    kf, aligned, story = refiner_inputs()
    settings = RefinerSettings(seed=7, batch_size=1, sampler=FAST)
    refine = lambda: refine_clips(wan_models, kf, aligned, story, settings, quiet(), cache_dir=tmp_path)  # noqa: E731
    first = refine()
    want = first.frames(1).clone()
    counter.take()
    rec = first.records[1]
    atomic_save_tensors(rec.path, {"frames": want[:-4].contiguous()})
    again = refine()
    assert [r.cached for r in again.records] == [True, False, True]
    assert counter.take() == STEPS
    assert torch.equal(again.frames(1), want)


def test_stale_partials_of_killed_stitches_are_removed_but_a_live_ones_kept(tmp_path):
    """Hidden ``.NAME.*.partial`` files: a killed writer's is removed by the next write of NAME; one that a
    live writer holds (locked) stays."""
    from avatar_cascade.core.locks import hold
    from avatar_cascade.media import VideoWriter

    stale = tmp_path / ".o.mp4.abc123.partial"
    stale.write_bytes(b"half a video")
    live = tmp_path / ".o.mp4.live99.partial"
    fd = os.open(live, os.O_RDWR | os.O_CREAT)
    hold(fd)
    try:
        with VideoWriter(tmp_path / "o.mp4", 8, 16, 16) as vw:
            vw.write(np.zeros((2, 16, 16, 3), np.uint8))
        assert not stale.exists()
        assert live.exists()
    finally:
        os.close(fd)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".o.mp4.live99.partial", "o.mp4"]


def test_the_cli_sweeps_temp_files_a_killed_run_left_in_its_work_folder(tmp_path):
    from avatar_cascade.core.locks import sweep_stale

    (tmp_path / "clips").mkdir()
    left = [tmp_path / ".timeline.json.x1.tmp", tmp_path / "clips" / ".clip_00001_k.safetensors.x2.tmp"]
    for p in left:
        p.write_text("x")
    keep = tmp_path / "clips" / "clip_00001_k.safetensors"
    keep.write_text("x")
    assert sweep_stale(tmp_path, (".*.tmp", ".*.partial"), recursive=True) == 2
    assert not any(p.exists() for p in left) and keep.exists()


def test_disk_full_from_the_start_leaves_no_empty_timeline_and_says_so_in_one_line(
    demo_models_dir, tmp_path, capsys, monkeypatch
):
    """ENOSPC on the first work-folder write: exit 2, one line naming the file and 'disk is full', and no
    empty or half timeline.json (atomic writes), no temp file left."""
    import errno

    import avatar_cascade.core.cache as cache
    from avatar_cascade.cli import main
    from tests.hostile_helpers import models_tree, one_line_error, run_args

    tree = models_tree(demo_models_dir, tmp_path / "models")

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cache.os, "replace", full)
    work = tmp_path / "work"
    rc = main([*run_args(tree, tmp_path / "o.mp4"), "--workdir", str(work)])
    line = one_line_error(capsys.readouterr().err)
    assert rc == 2 and "disk is full" in line and "timeline.json" in line and "Fix:" in line
    assert not (work / "timeline.json").exists()
    assert not [p for p in work.rglob("*") if p.name.endswith(".tmp")]


@pytest.mark.parametrize("prefix", ["window_", "clip_"])
def test_disk_full_while_the_blueprint_or_a_clip_is_saved_is_one_line(
    prefix, demo_models_dir, tmp_path, capsys, monkeypatch
):
    """ENOSPC from the atomic tensor save of a blueprint window or a refined clip (written on a refiner worker
    thread): exit 2, one line naming the file, no traceback."""
    import errno

    import avatar_cascade.core.cache as cache
    from avatar_cascade.cli import main
    from tests.hostile_helpers import models_tree, one_line_error, run_args

    tree = models_tree(demo_models_dir, tmp_path / "models")
    real = cache.atomic_write_bytes

    def full_for_windows(path, data, fsync=False):
        if Path(path).name.startswith(prefix):
            raise cache.disk_error(OSError(errno.ENOSPC, "No space left on device", str(path)), "work folder", path)
        return real(path, data, fsync)

    monkeypatch.setattr(cache, "atomic_write_bytes", full_for_windows)
    rc = main([*run_args(tree, tmp_path / "o.mp4"), "--workdir", str(tmp_path / "work")])
    line = one_line_error(capsys.readouterr().err)
    assert rc == 2 and "disk is full" in line and f"{prefix}0000" in line


def test_a_resume_does_not_run_the_director_again(demo_models_dir, tmp_path, capsys, monkeypatch):
    """The MLLM storyline is cached under its inputs: the second run neither loads the MLLM nor directs;
    a damaged cache file is directed again."""
    import avatar_cascade.cascade as cascade
    from avatar_cascade.cli import main
    from tests.hostile_helpers import models_tree, run_args

    tree = models_tree(demo_models_dir, tmp_path / "models", skip=())
    calls = []
    real_direct, real_load = cascade.direct, cascade.load_mllm
    monkeypatch.setattr(cascade, "direct", lambda *a, **k: calls.append("direct") or real_direct(*a, **k))
    monkeypatch.setattr(cascade, "load_mllm", lambda *a, **k: calls.append("load") or real_load(*a, **k))
    args = [*run_args(tree, tmp_path / "o.mp4", **{"director-max-new-tokens": "16"}), "--workdir", str(tmp_path / "w")]
    assert main(args) == 0 and calls == ["load", "direct"]
    story = (tmp_path / "w" / "storyline.json").read_text()
    assert main(args) == 0 and calls == ["load", "direct"]  # reused
    assert (tmp_path / "w" / "storyline.json").read_text() == story
    for p in (tmp_path / "w" / "director").glob("storyline_*.json"):
        p.write_text("{ half")
    assert main(args) == 0 and calls == ["load", "direct"] * 2
    capsys.readouterr()

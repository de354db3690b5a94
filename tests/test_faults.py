"""Fault suite: interrupts during the blueprint, the refiner and the stitcher, and a full disk while
stitching, on the real tiny demo models. Finished work is kept and a rerun resumes; no truncated
file ever poses as a finished video.

Covered elsewhere (not repeated here):
- SIGKILL during refinement, then a rerun that reuses and counts the finished clips:
  ``tests/test_refiner.py::test_killed_run_resumes_with_only_the_missing_clips``.
- A (simulated) CUDA out-of-memory error in a refiner batch halves the batch and continues with
  the same frames: ``tests/test_refiner.py::test_out_of_memory_halves_the_batch_and_keeps_going``.
- An interrupt before the first stitched clip leaves no file, and a ``KeyboardInterrupt`` keeps an
  existing file: ``tests/test_stitcher_joins.py::test_interrupt_leaves_no_file`` / ``..._keeps_existing_file``.

Fault injection is the only stand-in: an ``interrupt_check`` that stops once work has reached
disk, and a container whose ``mux`` raises ``ENOSPC`` part-way through the stream.
"""

from __future__ import annotations

import errno
from pathlib import Path

import numpy as np
import pytest
import torch

from avatar_cascade.core.errors import InputError, Interrupted
from avatar_cascade.core.runtime import Runtime
from avatar_cascade.media import probe_media
from avatar_cascade.sampling.settings import SamplerSettings
from avatar_cascade.stages.blueprint.sampler import BlueprintSettings, render_blueprint
from avatar_cascade.stages.director.rules import rule_based_storyline
from avatar_cascade.stages.refiner.refiner import RefinerSettings, refine_clips
from avatar_cascade.stages.stitcher.settings import StitcherSettings
from avatar_cascade.stages.stitcher.stitcher import stitch_clips
from tests.helpers import aligned_tone, refiner_inputs
from tests.helpers import cpu_runtime as quiet
from tests.helpers import tone_track as speech

STEPS = 2
FAST = SamplerSettings(steps=STEPS, guidance=1.0, shift=3.0)  # guidance 1: one DiT forward per step
PLAIN = StitcherSettings(colour_match=0.0)  # synthetic clips without keyframes


def stop_when(condition):
    """An ``interrupt_check`` that raises :class:`Interrupted` once ``condition()`` holds (a user
    pressing Cancel after some work has reached disk)."""

    def check() -> None:
        if condition():
            raise Interrupted("stopped by the test")

    return check


# ``wan_models`` (the tiny demo DiT, VAE, text encoder), ``counter`` (DiT forwards) and ``timeline`` (31 frames
# in 4 clips) come from conftest.py.


# ----------------------------------------------------------------------------- blueprint


def test_interrupted_blueprint_keeps_its_finished_window_and_a_rerun_resumes(wan_models, tmp_path, counter):
    aligned = aligned_tone(3.0, 16, 17)
    story = rule_based_storyline("a calm talk", aligned.timeline, [-20.0, -20.0, -20.0])
    reference = torch.rand(48, 40, 3, generator=torch.Generator().manual_seed(5))
    settings = BlueprintSettings(width=32, height=32, fps=4, window_frames=9, lead_frames=4, batch_size=1, sampler=FAST)

    def render(work: Path, runtime: Runtime):
        return render_blueprint(wan_models, reference, aligned, story, settings, runtime, work_dir=work)

    full = render(tmp_path / "full", quiet())
    windows = len(full.window_starts)
    assert windows == 2
    counter.take()

    work = tmp_path / "work"
    finished = lambda: list((work / "blueprint").glob("*/window_*.safetensors"))  # noqa: E731
    with pytest.raises(Interrupted):
        render(work, quiet(interrupt_check=stop_when(lambda: len(finished()) >= 1)))
    assert [p.name for p in finished()] == ["window_00000.safetensors"]  # kept on disk
    assert counter.take() == STEPS  # the second window was never sampled

    resumed = render(work, quiet())
    assert counter.take() == STEPS * (windows - 1)  # only the missing window
    assert not resumed.reused and torch.equal(resumed.frames(0, len(full)), full.frames(0, len(full)))
    again = render(work, quiet())
    assert again.reused and counter.take() == 0


# ----------------------------------------------------------------------------- refiner


def test_interrupted_refiner_keeps_finished_clips_and_a_rerun_renders_only_the_rest(wan_models, tmp_path, counter):
    kf, aligned, story = refiner_inputs()
    settings = RefinerSettings(seed=7, batch_size=1, sampler=FAST)

    def refine(cache: Path, runtime: Runtime):
        return refine_clips(wan_models, kf, aligned, story, settings, runtime, cache_dir=cache)

    full = refine(tmp_path / "full", quiet())
    counter.take()

    cache = tmp_path / "clips"
    finished = lambda: sorted(p.name for p in cache.glob("clip_*.safetensors"))  # noqa: E731
    with pytest.raises(Interrupted):
        refine(cache, quiet(interrupt_check=stop_when(lambda: len(finished()) >= 1)))
    assert len(finished()) == 1
    assert counter.take() == STEPS  # clips 1 and 2 were never sampled
    assert not list(cache.glob("*.partial")) and not list(cache.glob(".*tmp*"))

    resumed = refine(cache, quiet())
    assert resumed.computed == 2 and [r.cached for r in resumed.records] == [True, False, False]
    assert counter.take() == STEPS * 2
    for r in resumed.records:
        assert torch.equal(resumed.frames(r.index), full.frames(r.index))


# ----------------------------------------------------------------------------- stitcher


def clip_stream(timeline, size: int = 64):
    for k, sub in enumerate(timeline.clips):
        yield np.full((sub.frame_end - sub.frame_start + 1, size, size, 3), 40 * k, np.uint8)


def test_interrupt_mid_stitch_leaves_the_previous_video_untouched(tmp_path, timeline):
    out = tmp_path / "take.mp4"
    out.write_bytes(b"the render from yesterday")
    made = []

    def clips():
        for k, c in enumerate(clip_stream(timeline)):
            made.append(k)
            yield c

    checks = []
    stop = stop_when(lambda: checks.append(1) or len(checks) > 2)  # after two clips were encoded
    with pytest.raises(Interrupted):
        stitch_clips(clips(), timeline, speech(timeline.num_samples), out, PLAIN, quiet(interrupt_check=stop))
    assert made == [0, 1]
    assert out.read_bytes() == b"the render from yesterday"
    assert [p.name for p in tmp_path.iterdir()] == ["take.mp4"]  # no partial left behind


class _FullDisk:
    """Fault injection: a PyAV output container whose ``mux`` fails with ENOSPC after ``ok`` calls."""

    def __init__(self, container, ok: int) -> None:
        self._c, self._left = container, ok
        self.failed = False

    def mux(self, packets):
        if self._left <= 0:
            self.failed = True
            raise OSError(errno.ENOSPC, "No space left on device")
        self._left -= 1
        return self._c.mux(packets)

    def __getattr__(self, name):
        return getattr(self._c, name)


@pytest.mark.parametrize("existing", [False, True], ids=["new-file", "over-an-old-file"])
def test_full_disk_while_stitching_leaves_no_truncated_video(tmp_path, timeline, monkeypatch, existing):
    import av

    out = tmp_path / "final.mp4"
    if existing:
        out.write_bytes(b"old video")
    real_open = av.open
    opened: list[_FullDisk] = []

    def open_on_a_small_disk(path, mode="r", *args, **kwargs):
        c = real_open(path, mode, *args, **kwargs)
        if mode != "w":
            return c
        opened.append(_FullDisk(c, ok=12))  # a few packets fit, then the disk is full mid-stream
        return opened[-1]

    monkeypatch.setattr(av, "open", open_on_a_small_disk)
    with pytest.raises(InputError) as info:
        stitch_clips(clip_stream(timeline), timeline, speech(timeline.num_samples), out, PLAIN, quiet())
    assert opened and opened[0].failed
    msg = str(info.value)
    assert "output" in msg and str(out) in msg and "disk is full" in msg and "Fix: free some disk space" in msg
    assert [p.name for p in tmp_path.iterdir()] == (["final.mp4"] if existing else [])
    if existing:
        assert out.read_bytes() == b"old video"

    monkeypatch.setattr(av, "open", real_open)  # space freed: the same call now writes a whole video
    result = stitch_clips(clip_stream(timeline), timeline, speech(timeline.num_samples), out, PLAIN, quiet())
    assert probe_media(result.path)["video_frames"] == timeline.num_frames


def test_other_write_errors_are_not_disguised_as_a_full_disk(tmp_path, timeline, monkeypatch):
    import av

    real_open = av.open

    class _Broken(_FullDisk):
        def mux(self, packets):
            raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(
        av, "open", lambda p, mode="r", *a, **k: _Broken(real_open(p, mode, *a, **k), 0) if mode == "w" else None
    )
    out = tmp_path / "final.mp4"
    with pytest.raises(OSError) as info:
        stitch_clips(clip_stream(timeline), timeline, speech(timeline.num_samples), out, PLAIN, quiet())
    assert info.value.errno == errno.EIO and not isinstance(info.value, InputError)
    assert list(tmp_path.iterdir()) == []

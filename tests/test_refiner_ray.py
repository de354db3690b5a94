"""The refiner on a real Ray cluster on loopback (head + a second node, one CPU each, tiny models).

Clips spread over two worker processes on two nodes and equal the single-process run bit for bit
(the same code, the same CPU kernels on one thread each: Ray runs a 1-CPU actor with one intra-op
thread, as the test process does); a re-run reuses every clip; a worker SIGKILLed mid-clip has its
clip rendered elsewhere, and the DiT forwards counted in every worker process (files that outlive
the killed one) show that no finished clip was rendered twice; an interruption keeps finished
clips; the cluster leaves no process behind.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import torch

from avatar_cascade.core.errors import Interrupted
from avatar_cascade.sampling.settings import SamplerSettings
from avatar_cascade.stages.refiner.refiner import refine_clips
from avatar_cascade.stages.refiner.settings import RefinerSettings
from tests import ray_hooks
from tests.helpers import cpu_runtime, refiner_inputs

ray = pytest.importorskip("ray", reason="the Ray tests need `pip install .[ray]` (the test extra has it)")
from tests.ray_cluster import LocalRayCluster  # noqa: E402

pytestmark = pytest.mark.slow
STEPS = 2
CLIPS = 4
LOCAL = RefinerSettings(seed=11, batch_size=1, sampler=SamplerSettings(steps=STEPS, guidance=3.0, shift=3.0))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Two Ray nodes (1 CPU each) and this process connected as the driver, counting DiT forwards."""
    forwards = tmp_path_factory.mktemp("forwards")
    c = LocalRayCluster(nodes=2, cpus=1)
    os.environ["RAY_AUTH_MODE"] = "disabled"
    hook = {"worker_process_setup_hook": "tests.ray_hooks.count_dit_forwards"}
    ray.init(
        address=c.address,
        runtime_env={**hook, "env_vars": {ray_hooks.FORWARD_DIR: str(forwards)}},
        configure_logging=False,
        log_to_driver=False,
    )
    try:
        deadline = time.monotonic() + 60
        while sum(n["Alive"] for n in ray.nodes()) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        yield c, forwards
    finally:
        from avatar_cascade.stages.refiner.ray_backend import release_pool

        release_pool()
        ray.shutdown()
        left = c.stop()
    assert not left, f"Ray processes left after the cluster stopped: {left}"


def ray_settings(cluster, **kw) -> RefinerSettings:
    return dataclasses.replace(LOCAL, backend="ray", ray_address=cluster[0].address, ray_workers=2, **kw)


def run(wan_models, cache: Path, settings: RefinerSettings, runtime=None):
    kf, aligned, story = refiner_inputs(clips=CLIPS)
    return refine_clips(wan_models, kf, aligned, story, settings, runtime or cpu_runtime(), cache_dir=cache)


def frames(clips) -> list[torch.Tensor]:
    return [clips.frames(r.index) for r in clips.records]


def workers_of(cache: Path) -> list[str | None]:
    return [row["worker"] for row in json.loads((cache / "refiner_manifest.json").read_text())["clips"]]


def forward_counts(folder: Path) -> dict[str, int]:
    return {p.stem: len(p.read_text().splitlines()) for p in folder.glob("*.log")}


def test_clips_spread_over_two_ray_workers_equal_the_local_run(cluster, wan_models, tmp_path):
    from avatar_cascade.stages.refiner.ray_backend import start_workers

    local = run(wan_models, tmp_path / "local", LOCAL)
    handles = (wan_models.dit, wan_models.vae, None)
    assert len(start_workers(handles, ray_settings(cluster), cpu_runtime())) == 2  # else the first ready takes all
    previews = []
    rt = cpu_runtime(preview=lambda kind, x: previews.append(kind))
    far = run(wan_models, tmp_path / "ray", ray_settings(cluster), runtime=rt)
    assert far.computed == CLIPS and previews == ["clip"] * CLIPS  # written and previewed here, one by one
    who = workers_of(tmp_path / "ray")
    pids = {w.split("/")[0] for w in who}
    assert len(pids) == 2 and os.getpid() not in {int(p.split(":")[1]) for p in pids}, who
    for a, b in zip(frames(local), frames(far)):
        assert torch.equal(a, b)  # bitwise: same code, same kernels, one thread in every process
    again = run(wan_models, tmp_path / "ray", ray_settings(cluster))
    assert again.computed == 0 and workers_of(tmp_path / "ray") == [None] * CLIPS  # every clip reused


def test_a_killed_worker_clip_is_rendered_elsewhere_and_no_finished_clip_twice(cluster, wan_models, tmp_path):
    from avatar_cascade.stages.refiner import ray_backend

    _, forwards = cluster
    reference = frames(run(wan_models, tmp_path / "local", LOCAL))
    ray_backend.release_pool()  # fresh worker processes: their forward counts start at 0
    for p in forwards.iterdir():
        p.unlink()
    (forwards / ray_hooks.KILL_ARMED).write_text(str(STEPS + 1))  # one clip done, one forward into the next
    killed = []

    def killer():
        victim = forwards / ray_hooks.VICTIM
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            text = victim.read_text().strip() if victim.exists() else ""
            if text:
                os.kill(int(text), signal.SIGKILL)
                killed.append(text)
                return
            time.sleep(0.05)

    t = threading.Thread(target=killer, daemon=True)
    t.start()
    try:
        clips = run(wan_models, tmp_path / "ray", ray_settings(cluster))
    finally:
        (forwards / ray_hooks.KILL_ARMED).unlink()
        t.join(timeout=5)
    assert killed, "no worker reached the kill point"
    assert clips.computed == CLIPS and all(r.path.is_file() for r in clips.records)
    for a, b in zip(reference, frames(clips)):
        assert torch.equal(a, b)
    assert ray_backend.LAST_RUN["retried"] == 1 and ray_backend.LAST_RUN["clips"] == CLIPS
    counts = forward_counts(forwards)
    assert counts[killed[0]] == STEPS + 1  # it finished one clip and died one forward into its second
    # every clip rendered once (STEPS forwards each) plus the one forward lost with the killed worker:
    assert sum(counts.values()) == CLIPS * STEPS + 1, counts
    survivors = {w.split("/")[0].split(":")[1] for w in workers_of(tmp_path / "ray")} - {killed[0]}
    assert survivors  # the killed worker's clip came from another process


def test_interrupt_keeps_finished_clips_and_a_rerun_completes(cluster, wan_models, tmp_path):
    done = []

    def check():
        if len(done) >= 1:
            raise Interrupted("stop (test)")

    rt = cpu_runtime(interrupt_check=check, preview=lambda kind, x: done.append(kind))
    with pytest.raises(Interrupted):
        run(wan_models, tmp_path / "c", ray_settings(cluster), runtime=rt)
    kept = sorted(tmp_path.joinpath("c").glob("clip_*.safetensors"))
    assert 1 <= len(kept) < CLIPS
    rest = run(wan_models, tmp_path / "c", ray_settings(cluster))
    assert rest.computed == CLIPS - len(kept)


def test_a_model_file_the_workers_cannot_find_is_named(cluster, wan_models, demo_models_dir, tmp_path):
    from avatar_cascade.core.errors import ModelFileError
    from avatar_cascade.demo.models import DIT_FILE
    from avatar_cascade.models.wan_dit import load_wan_dit

    here = tmp_path / "models" / "diffusion_models" / DIT_FILE
    here.parent.mkdir(parents=True)
    here.write_bytes((demo_models_dir / "diffusion_models" / DIT_FILE).read_bytes())
    dit = load_wan_dit(here)
    here.unlink()  # loaded on the driver, absent on the workers
    with pytest.raises(ModelFileError, match=r"no such file on this worker \(tried .*\) \(on Ray worker .*\)"):
        run(dataclasses.replace(wan_models, dit=dit), tmp_path / "c", ray_settings(cluster))

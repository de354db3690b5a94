"""The refiner's Ray backend: clips per second against Ray workers, and the scheduler's overhead per clip.

Each case starts a real Ray cluster on loopback (``tests/ray_cluster.py``: a head and a second
node, one CPU each, as the tests do), writes the tiny demo models, and renders ``clips`` clips of
``frames`` frames at ``size`` x ``size`` (4 steps, CFG, one clip per forward pass) three ways on a
fresh cache each:

* ``local_s``: in this process on one intra-op thread (the local backend, one worker);
* ``ray_s``: on ``workers`` Ray actors (1 CPU each: one intra-op thread), after
  ``start_workers`` has loaded the models on every actor (``start_s``: cluster up, and actors with
  their models resident; paid once per session, not per run).

``clips_per_s`` = clips / ``ray_s``; ``local_clips_per_s`` = clips / ``local_s``; ``speedup`` =
``local_s`` / ``ray_s``. The scheduler's overhead is measured inside the Ray run (so it does not
depend on how loaded the machine was during the local run): ``overhead_ms_per_clip`` = (round trip
of each batch, sent -> returned to the driver, minus the worker's own render time) per clip, from
``ray_backend.LAST_RUN`` (one clip per batch: request packing, scheduling, object-store transfer
of the requests and of the frames, the driver's wait). ``render_ms_per_clip`` is the workers' own
time per clip. On a 2-core machine the driver and two 1-thread workers share two cores.

Run: ``python -m benchmarks.bench_ray [--only NAME]``.
"""

from __future__ import annotations

import time

from benchmarks.harness import Case, main


def _setup(clips: int, frames: int, size: int):
    import tempfile
    from pathlib import Path

    from avatar_cascade.demo.models import DIT_FILE, TEXT_ENCODER_FILE, VAE_FILE, write_demo_models
    from avatar_cascade.models.handle import WanModels
    from avatar_cascade.models.text_encoder import load_text_encoder
    from avatar_cascade.models.wan_dit import load_wan_dit
    from avatar_cascade.models.wan_vae import load_wan_vae
    from benchmarks.bench_refine_stitch import _inputs

    d = Path(tempfile.mkdtemp(prefix="bench_ray_"))
    write_demo_models(d / "models")
    m = d / "models"
    models = WanModels(
        load_wan_dit(m / "diffusion_models" / DIT_FILE),
        load_wan_vae(m / "vae" / VAE_FILE),
        load_text_encoder(m / "text_encoders" / TEXT_ENCODER_FILE),
    )
    return d, models, _inputs(clips, frames, (size, size))


def ray_workers(workers: int, clips: int = 16, frames: int = 17, size: int = 64) -> dict:
    import dataclasses
    import os
    import shutil

    import torch

    from avatar_cascade.core.runtime import Runtime
    from avatar_cascade.sampling.settings import SamplerSettings
    from avatar_cascade.stages.refiner import ray_backend
    from avatar_cascade.stages.refiner.refiner import RefinerSettings, refine_clips
    from tests.ray_cluster import LocalRayCluster

    torch.set_num_threads(1)
    d, models, (kf, aligned, story) = _setup(clips, frames, size)
    local = RefinerSettings(seed=0, batch_size=1, sampler=SamplerSettings(steps=4, guidance=3.0))
    rt = Runtime(device=torch.device("cpu"), show_progress=False)
    refine_clips(models, kf, aligned, story, local, rt, cache_dir=d / "warm", reroll="0")  # warm-up
    t0 = time.perf_counter()
    refine_clips(models, kf, aligned, story, local, rt, cache_dir=d / "local")
    local_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    cluster = LocalRayCluster(nodes=2, cpus=1)
    os.environ["RAY_AUTH_MODE"] = "disabled"
    try:
        far = dataclasses.replace(local, backend="ray", ray_address=cluster.address, ray_workers=workers)
        names = ray_backend.start_workers((models.dit, models.vae, None), far, rt)
        start_s = time.perf_counter() - t0
        refine_clips(models, kf, aligned, story, far, rt, cache_dir=d / "ray_warm", reroll="0")  # warm-up
        t0 = time.perf_counter()
        clips_out = refine_clips(models, kf, aligned, story, far, rt, cache_dir=d / "ray")
        ray_s = time.perf_counter() - t0
        stats = dict(ray_backend.LAST_RUN)
        assert clips_out.computed == clips and stats["clips"] == clips
        same = all(torch.equal(clips_out.frames(i), _frames(d / "local", i)) for i in range(clips))
    finally:
        ray_backend.release_pool()
        import ray

        ray.shutdown()
        left = cluster.stop()
        shutil.rmtree(d, ignore_errors=True)
    return {
        "workers": len(names),
        "clips": clips,
        "local_s": local_s,
        "ray_s": ray_s,
        "local_clips_per_s": clips / local_s,
        "clips_per_s": clips / ray_s,
        "speedup": local_s / ray_s,
        "overhead_ms_per_clip": (stats["round_trip_s"] - stats["render_s"]) / clips * 1000,
        "render_ms_per_clip": stats["render_s"] / clips * 1000,
        "start_s": start_s,
        "equal_to_local": same,
        "processes_left": len(left),
    }


def _frames(cache, index: int):
    from safetensors.torch import load_file

    (path,) = cache.glob(f"clip_{index:05d}_*.safetensors")
    return load_file(path)["frames"]


CASES = [
    Case("ray_1_worker", ray_workers, {"workers": 1}),
    Case("ray_2_workers", ray_workers, {"workers": 2}),
    Case("ray_1_worker_128px", ray_workers, {"workers": 1, "clips": 8, "frames": 33, "size": 128}),
    Case("ray_2_workers_128px", ray_workers, {"workers": 2, "clips": 8, "frames": 33, "size": 128}),
]

if __name__ == "__main__":
    main(__name__, CASES)

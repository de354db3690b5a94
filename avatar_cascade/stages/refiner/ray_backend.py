"""Refiner clips on a Ray cluster: actors that keep the models resident, this process keeps the cache.

``backend="ray"`` sends the refiner's batches (the same batches, as
:class:`~avatar_cascade.sampling.conditioning.ClipRequest` lists: keyframes, prompt embeddings,
seed, audio window) to Ray actors. Each actor (:class:`~.ray_actor.ClipActor`, one GPU or one CPU)
loads the DiT (+ LoRAs, audio adapter), VAE and CLIP vision **by file** from a
:class:`~avatar_cascade.models.recipe.ModelRecipe` (same files, checked by identity; a path map or
the worker's own models folder when paths differ), keeps them resident across batches and across
runs of this process, and renders each batch with the local worker's code (``render_resilient``:
out-of-memory halves its batch). The text encoder stays here: prompts are encoded once on the
driver and travel as embeddings.

Finished clips come back to this process, which writes each one atomically into the clip cache
(the meeting point: a re-run reuses every finished clip, whichever worker made it), updates the
progress bar and emits the previews, as with local clips. An actor that dies (killed, its node
lost, out of host memory) fails its batch with ``RayActorError``: the batch goes back to the queue
and the next free actor renders it (Ray restarts the dead actor once, reloading the models). An
interruption (ComfyUI's cancel, Ctrl-C) asks every busy actor to stop after its current step,
keeps the clips that finished meanwhile and re-raises.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from avatar_cascade.core.errors import AvatarCascadeError, InputError, Interrupted
from avatar_cascade.core.runtime import Runtime
from avatar_cascade.models.recipe import ModelRecipe, parse_path_map
from avatar_cascade.stages.refiner.ray_actor import ClipActor, compact, raise_error
from avatar_cascade.stages.refiner.settings import RefinerSettings

log = logging.getLogger(__name__)

MAX_RESTARTS = 1  # Ray restarts a dead actor this many times (its batch is retried on any free actor)
POLL_S = 0.25  # how often the driver checks for interruption while clips render
STOP_WAIT_S = 60.0  # after an interruption: how long to wait for busy actors to stop
READY_TIMEOUT_S = 900.0  # no actor has loaded its models after this long: give up (cluster too small?)
_FIX_INSTALL = "pip install 'avatar-cascade[ray]' (or pip install ray) here and on every node of the cluster"


def import_ray():
    try:
        import ray
    except ImportError:
        raise InputError("backend", "ray", "Ray is not installed", _FIX_INSTALL) from None
    return ray


def connect(address: str):
    """The ``ray`` module, connected to the cluster at ``address`` (a connection made earlier by this
    process, e.g. ``ray.init`` with a runtime_env of its own, is kept)."""
    ray = import_ray()
    if ray.is_initialized():
        return ray
    try:
        ray.init(address=address or "auto", configure_logging=False, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise InputError(
            "ray_address",
            address,
            f"cannot connect to a Ray cluster there ({exc})",
            "start the head with `ray start --head --port 6379` and give its address (head-ip:6379), or 'auto' "
            "on a node of the cluster",
        ) from None
    return ray


# ----------------------------------------------------------------------------- the pool (driver side)


@dataclass
class _Actor:
    handle: object
    name: str = ""
    ready: bool = False


@dataclass
class _Pool:
    key: tuple
    actors: list[_Actor] = field(default_factory=list)


_POOL: _Pool | None = None
#: Figures of the last run on Ray: batches, clips, retried (clips sent again after their worker died),
#: round_trip_s (sent -> returned, summed over batches), render_s (the workers' own time, summed).
LAST_RUN: dict = {}
_POOL_LOCK = threading.Lock()


def _worker_count(ray, requested: int) -> tuple[int, float]:
    """``(actors, GPUs per actor)`` for the cluster."""
    gpus = float(ray.cluster_resources().get("GPU", 0))
    if requested:
        return requested, 1.0 if gpus >= 1 else 0.0
    if gpus >= 1:
        return int(gpus), 1.0
    return max(1, sum(1 for n in ray.nodes() if n.get("Alive"))), 0.0


def pool(ray, recipe: ModelRecipe, settings: RefinerSettings, runtime: Runtime) -> _Pool:
    """The actors for ``recipe`` (made once per recipe and cluster connection, kept for later runs)."""
    global _POOL
    path_map = parse_path_map(settings.ray_path_map)
    n, gpus = _worker_count(ray, settings.ray_workers)
    dtype = str(runtime.dtype).removeprefix("torch.")
    key = (ray.get_runtime_context().get_job_id(), recipe, path_map, n, gpus, dtype, runtime.device.type)
    with _POOL_LOCK:
        if _POOL is not None and _POOL.key == key:
            return _POOL
        release_pool()
        remote = ray.remote(num_cpus=1, num_gpus=gpus, max_restarts=MAX_RESTARTS, max_concurrency=2)(ClipActor)
        actors = [_Actor(remote.remote(recipe, path_map, dtype, runtime.device.type)) for _ in range(n)]
        log.info("refiner: starting %d Ray workers (%s GPU each) for %s", n, gpus, recipe.dit.path)
        _POOL = _Pool(key, actors)
        return _POOL


def start_workers(handles: tuple, settings: RefinerSettings, runtime: Runtime) -> list[str]:
    """Start the Ray workers a run with these arguments uses and wait until each has loaded the models
    (a run otherwise starts on the first worker ready); returns their names."""
    ray = connect(settings.ray_address)
    p = pool(ray, ModelRecipe.of(*handles), settings, runtime)
    for a, info in zip(p.actors, ray.get([a.handle.ready.remote() for a in p.actors])):
        if info["error"] is not None:
            raise_error(info["error"], info["name"])
        a.name, a.ready = info["name"], True
    return [a.name for a in p.actors]


def release_pool() -> None:
    """End the pooled actors (their models leave the workers' memory)."""
    global _POOL
    if _POOL is None:
        return
    ray = import_ray()
    for a in _POOL.actors:
        try:
            ray.kill(a.handle, no_restart=True)
        except Exception:  # an actor of a connection that is gone
            log.debug("could not kill Ray actor %s", a.name, exc_info=True)
    _POOL = None


# ----------------------------------------------------------------------------- dispatch (driver side)


def run_on_ray(
    batches: list[list],
    to_requests: Callable[[list], list],
    finish: Callable[[list, torch.Tensor, str], None],
    handles: tuple,
    settings: RefinerSettings,
    runtime: Runtime,
    limit: int,
    render: tuple,
) -> None:
    """Render ``batches`` (lists of the refiner's jobs) on the Ray cluster of ``settings.ray_address``.

    ``handles``: ``(dit, vae, image_encoder)`` as loaded here (the workers load the same files);
    ``to_requests(batch)`` makes a batch's ``ClipRequest`` s; ``finish(batch, frames, worker)`` runs
    here for every finished batch; ``limit``: clips per forward pass; ``render``: ``(fn, *args)``,
    a module-level function called on the worker as ``fn(requests, worker, *args, desc)``. Raises
    what ``runtime.check_interrupt`` raises, after the busy actors stopped (clips finished meanwhile
    are finished first).
    """
    if any(getattr(h, "native", False) for h in handles):
        raise InputError(
            "backend",
            "ray",
            "native ComfyUI models (MODEL / VAE / CLIP inputs) live in this ComfyUI process; Ray workers load models "
            "from files",
            "connect the pack's own loaders for a Ray render, or use backend local",
        )
    ray = connect(settings.ray_address)
    recipe = ModelRecipe.of(*handles)
    spec = tuple(render)
    _Dispatch(ray, pool(ray, recipe, settings, runtime), to_requests, finish, runtime, limit, spec).run(batches)


class _Dispatch:
    """One run's queue: a batch per free actor, retried elsewhere when its actor dies."""

    def __init__(self, ray, pool_: _Pool, to_requests, finish, runtime: Runtime, limit: int, spec: tuple) -> None:
        self.ray, self.pool, self.to_requests, self.finish, self.runtime = ray, pool_, to_requests, finish, runtime
        self.limit, self.spec = limit, spec
        self.run_id = uuid.uuid4().hex
        self.idle: deque[_Actor] = deque(a for a in pool_.actors if a.ready)
        self.loading = {a.handle.ready.remote(): a for a in pool_.actors if not a.ready}
        self.busy: dict = {}  # object ref -> (actor, batch)
        self.progressed = time.monotonic()  # last time a worker became ready or returned clips
        self.sent: dict = {}  # object ref -> when it was sent
        self.stats = {"batches": 0, "clips": 0, "round_trip_s": 0.0, "render_s": 0.0, "retried": 0}

    def run(self, batches: list[list]) -> None:
        pending = deque(batches)
        try:
            while pending or self.busy:
                while pending and self.idle:
                    self._submit(self.idle.popleft(), pending.popleft())
                if not self.busy and not self.loading:
                    raise AvatarCascadeError(
                        f"every Ray worker died; {sum(map(len, pending))} clips were not rendered (finished clips "
                        "are in the clip cache). Check the workers' logs and memory (`ray status`), then run again"
                    )
                refs = list(self.busy) + list(self.loading)
                ready, _ = self.ray.wait(refs, num_returns=1, timeout=POLL_S)
                self.runtime.check_interrupt()
                for ref in ready:
                    if ref in self.loading:
                        self._loaded(ref)
                    else:
                        self._returned(ref, pending)
                self._check_timeout()
        except BaseException:
            self._stop()
            raise
        finally:
            LAST_RUN.clear()
            LAST_RUN.update(self.stats)
        st = self.stats
        if st["clips"]:
            log.info(
                "refiner: %d clips in %d batches on Ray; %.1f ms per batch beyond rendering (send, schedule, return)",
                st["clips"],
                st["batches"],
                (st["round_trip_s"] - st["render_s"]) / max(1, st["batches"]) * 1000,
            )

    def _submit(self, actor: _Actor, batch: list) -> None:
        reqs = [compact(r) for r in self.to_requests(batch)]
        desc = "clips " + ",".join(str(j.rec.index) for j in batch)
        fn, *args = self.spec
        sent = time.perf_counter()
        ref = actor.handle.render.remote(self.run_id, self.limit, fn, reqs, *args, desc)
        self.busy[ref] = (actor, batch)
        self.sent[ref] = sent

    def _loaded(self, ref) -> None:
        actor = self.loading.pop(ref)
        try:
            info = self.ray.get(ref)
        except self.ray.exceptions.ActorUnavailableError:  # restarting: ask again in a moment
            time.sleep(POLL_S)
            self.loading[actor.handle.ready.remote()] = actor
            return
        except self.ray.exceptions.RayActorError as exc:  # dead for good (its restarts used up)
            log.warning("refiner: Ray worker %s is gone (%s)", actor.name or "(loading)", type(exc).__name__)
            if actor in self.pool.actors:
                self.pool.actors.remove(actor)
            return
        actor.name = info["name"]
        if info["error"] is not None:
            raise_error(info["error"], actor.name)
        actor.ready = True
        self.progressed = time.monotonic()
        log.info("refiner: Ray worker %s has the models loaded", actor.name)
        self.idle.append(actor)

    def _returned(self, ref, pending: deque) -> None:
        actor, batch = self.busy.pop(ref)
        sent = self.sent.pop(ref)
        try:
            out = self.ray.get(ref)
        except self.ray.exceptions.RayActorError as exc:
            log.warning(
                "refiner: Ray worker %s died while rendering clips %s (%s); they go to another worker",
                actor.name,
                [j.rec.index for j in batch],
                type(exc).__name__,
            )
            pending.appendleft(batch)
            self.stats["retried"] += len(batch)
            actor.ready = False  # back once Ray has restarted it and it has reloaded the models
            self.loading[actor.handle.ready.remote()] = actor
            return
        except self.ray.exceptions.RayTaskError as exc:
            raise AvatarCascadeError(f"Ray worker {actor.name} failed on clips {_indices(batch)}: {exc}") from exc
        if "error" in out:
            raise_error(out["error"], out["worker"])
        if out.get("interrupted"):
            raise Interrupted(f"Ray worker {out['worker']} was stopped")
        st = self.stats
        st["batches"] += 1
        st["clips"] += len(batch)
        st["round_trip_s"] += time.perf_counter() - sent
        st["render_s"] += out["render_s"]
        self.progressed = time.monotonic()
        self.finish(batch, out["frames"], out["worker"])
        self.idle.append(actor)

    def _check_timeout(self) -> None:
        if self.loading and not self.busy and not self.idle and time.monotonic() - self.progressed > READY_TIMEOUT_S:
            res = self.ray.cluster_resources()
            raise AvatarCascadeError(
                f"no Ray worker loaded the models within {READY_TIMEOUT_S:.0f} s (cluster resources: {res}); each "
                "worker needs 1 CPU (+ 1 GPU on GPU clusters) and memory for the DiT + VAE: lower ray_workers or "
                "add nodes"
            )

    def _stop(self) -> None:
        """Ask busy actors to stop, and keep the clips they finished before hearing it."""
        for actor, _ in self.busy.values():
            actor.handle.stop.remote(self.run_id)
        if not self.busy:
            return
        ready, _ = self.ray.wait(list(self.busy), num_returns=len(self.busy), timeout=STOP_WAIT_S)
        for ref in ready:
            actor, batch = self.busy.pop(ref)
            try:
                out = self.ray.get(ref)
            except Exception:  # a dead actor or a failed batch: nothing to keep
                continue
            if "frames" in out:
                self.finish(batch, out["frames"], out["worker"])
        self.busy.clear()


def _indices(batch: Sequence) -> list[int]:
    return [j.rec.index for j in batch]

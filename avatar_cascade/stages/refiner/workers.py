"""Where sub-clips are rendered: one worker per device, model replicas, out-of-memory halving.

A :class:`Worker` owns a device, the model handles placed on it and the largest
batch it has managed so far. The runtime device's worker uses the loaded models
themselves (placed by the runtime's model management); every other device gets
a **replica** made by :func:`replicate`, which copies parameters straight to the
target device (no second CPU copy) — each extra GPU therefore holds a full copy
of the DiT and VAE.

:func:`render_resilient` runs a batch and, on a CUDA out-of-memory error,
halves the worker's batch limit, frees the cache and retries the same clips in
smaller batches; a single clip that does not fit is reported as an input error.

Replication itself may run out of memory (an extra GPU too full for a copy of the
models): that device is left out with a warning and the clips run on fewer
workers. The runtime's :class:`~avatar_cascade.core.runtime.ReplicaHost` (ComfyUI's,
inside ComfyUI) is asked to make room before each replica is copied and counts it
until :func:`release_workers`.

The same :class:`Worker` (a device, its handles, its batch limit) is what a Ray
actor renders with (:mod:`.ray_backend`); only the dispatch differs.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
import queue
import socket
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from avatar_cascade.core.errors import InputError, Interrupted
from avatar_cascade.core.runtime import Runtime
from avatar_cascade.models.handle import ModelHandle, modules_of
from avatar_cascade.models.wan_dit import WanDiT

log = logging.getLogger(__name__)

#: The exception CUDA raises when an allocation fails (``torch.cuda.OutOfMemoryError`` is the same class).
OOM: type[BaseException] = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)


@dataclass
class Worker:
    """A device with its model handles ``(dit, vae, image_encoder)`` and its batch limit (clips per pass)."""

    runtime: Runtime
    handles: tuple
    limit: int
    stop: threading.Event = field(default_factory=threading.Event)
    halvings: int = 0
    replicas: list = field(default_factory=list)  # modules copied for this worker (empty: the loaded models)

    @property
    def name(self) -> str:
        """``host:pid/device``: where this worker's clips were rendered (written to the clip manifest)."""
        return f"{socket.gethostname()}:{os.getpid()}/{self.runtime.device}"


def replicate(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """A copy of ``module`` whose parameters and buffers live on ``device``.

    Tensors are copied device to device one by one (a deep copy whose memo maps
    every parameter/buffer to its copy), so no second host copy is made; on the
    same device the copy shares the tensors. ComfyUI's patcher handle is not copied.
    """
    memo: dict[int, Any] = {}
    for p in module.parameters():
        memo[id(p)] = torch.nn.Parameter(p.detach().to(device), requires_grad=p.requires_grad)
    for b in module.buffers():
        memo[id(b)] = b.to(device)
    patcher = module.__dict__.get("_avatar_cascade_patcher")
    if patcher is not None:
        memo[id(patcher)] = None
    return copy.deepcopy(module, memo)


def replicate_handle(handle: ModelHandle | None, device: torch.device) -> ModelHandle | None:
    """A shallow copy of a model handle (``WanDiT``, ``WanVAE``...) with every module replicated on ``device``.

    A DiT's audio adapter is re-created around a replica of its weights and
    attached to the replica transformer(s) (its hooks bind to modules).
    """
    if handle is None:
        return None
    new = copy.copy(handle)
    for name, value in vars(handle).items():
        if isinstance(value, torch.nn.Module):
            object.__setattr__(new, name, replicate(value, device))
    adapter = handle.audio_adapter if isinstance(handle, WanDiT) else None
    if adapter is not None:
        fresh = type(adapter)(
            replicate(adapter.module, device), identity=adapter.identity, path=adapter.path, strength=adapter.strength
        )
        object.__setattr__(new, "audio_adapter", None)
        new = fresh.attach(new)
    return new


def pick_devices(runtime: Runtime, devices: Sequence[str]) -> list[torch.device]:
    """``devices`` as given, or the runtime device plus every other local CUDA device."""
    if devices:
        return [torch.device(d) for d in devices]
    out = [runtime.device]
    if runtime.device.type == "cuda" and torch.cuda.device_count() > 1:
        main = runtime.device.index if runtime.device.index is not None else torch.cuda.current_device()
        out += [torch.device("cuda", i) for i in range(torch.cuda.device_count()) if i != main]
    return out


def _same_device(a: torch.device, b: torch.device) -> bool:
    if a.type != b.type:
        return False
    if a.type != "cuda":
        return True
    ia = a.index if a.index is not None else torch.cuda.current_device()
    ib = b.index if b.index is not None else torch.cuda.current_device()
    return ia == ib


def make_workers(runtime: Runtime, devices: Sequence[str], handles: tuple, limit: int) -> list[Worker]:
    """One worker per device; call inside ``runtime.use_models(...)`` so replicas copy the placed models.

    With several workers, each gets a runtime of its own (its device, no
    progress bars, no previews, no model loader) whose interrupt check also
    stops when another worker failed or the user interrupted.
    """
    devs = pick_devices(runtime, devices)
    if len(devs) > 1 and any(getattr(h, "native", False) for h in handles):
        runtime.warn(
            "refiner",
            f"native ComfyUI models are not copied to other devices: rendering on {runtime.device} only, not on "
            f"{devices_text(devs)} (the pack's own loaders give one replica per device)",
        )
        return [Worker(runtime, handles, limit)]
    if len(devs) == 1 and _same_device(devs[0], runtime.device):
        return [Worker(runtime, handles, limit)]
    stop = threading.Event()

    def check() -> None:
        if stop.is_set():
            raise Interrupted("refiner stopped")
        runtime.check_interrupt()

    workers, used_original = [], False
    for dev in devs:
        rt = dataclasses.replace(
            runtime,
            device=dev,
            dtype=runtime.dtype,
            progress_factory=None,
            show_progress=False,
            interrupt_check=check,
            preview=None,
            model_loader=None,
            replicas=None,
        )
        if not used_original and _same_device(dev, runtime.device):
            workers.append(Worker(rt, handles, limit, stop))
            used_original = True
            continue
        own = _replica_or_none(runtime, handles, dev)
        if own is not None:
            workers.append(Worker(rt, own, limit, stop, replicas=modules_of(*own)))
    if not workers:
        raise InputError(
            "devices",
            devices_text(devs),
            "none of these devices had room for a copy of the models",
            "free GPU memory, or include the main device in 'devices'",
        )
    log.info(
        "refiner: %d workers on %s (one model replica per extra device)",
        len(workers),
        [str(w.runtime.device) for w in workers],
    )
    return workers


def _replica_or_none(runtime: Runtime, handles: tuple, dev: torch.device) -> tuple | None:
    """``handles`` replicated on ``dev`` (the host making room first and counting them), or None
    with a warning when ``dev`` runs out of memory while they are copied."""
    nbytes = sum(p.numel() * p.element_size() for m in modules_of(*handles) for p in m.parameters())
    host = runtime.replicas
    if host is not None:
        host.reserve(dev, nbytes)
    failed = False
    try:
        own = tuple(replicate_handle(h, dev) for h in handles)
    except OOM:
        failed = True  # handled outside the except block, so the partial copy is freed
    if failed:
        free_device_memory(dev)
        log.warning(
            "refiner: %s has no room for a replica of the models (%.2f GiB); rendering on the other "
            "devices without it (free memory on %s or list fewer devices in 'devices')",
            dev,
            nbytes / 2**30,
            dev,
        )
        return None
    if host is not None:
        host.adopt(modules_of(*own), dev)
    return own


def release_workers(runtime: Runtime, workers: list[Worker]) -> None:
    """Drop the workers' replicas (the host stops counting them) and free their devices' caches."""
    for w in workers:
        if w.replicas:
            if runtime.replicas is not None:
                runtime.replicas.release(w.replicas)
            w.replicas, w.handles = [], ()
            free_device_memory(w.runtime.device)


def devices_text(devs: Sequence[torch.device]) -> str:
    return ", ".join(str(d) for d in devs)


def free_device_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


def render_resilient(
    batch: list,
    worker: Worker,
    render: Callable[[list, Worker], torch.Tensor],
    finish: Callable[[list, torch.Tensor], None],
) -> None:
    """Render ``batch`` on ``worker`` in passes of at most ``worker.limit`` clips; halve on out-of-memory.

    ``render(items, worker)`` returns one result row per item; ``finish(items,
    rows)`` receives every finished pass (so finished clips are saved even if
    a later pass fails).
    """
    pending = [batch]
    while pending:
        items = pending.pop(0)
        if len(items) > worker.limit:
            step = worker.limit
            pending[:0] = [items[i : i + step] for i in range(0, len(items), step)]
            continue
        failed = False
        try:
            rows = render(items, worker)
        except OOM:
            failed = True  # handled below, outside the except block, so the failed pass's tensors are freed
        if not failed:
            finish(items, rows)
            continue
        free_device_memory(worker.runtime.device)
        if len(items) == 1:
            raise InputError(
                "batch_size",
                1,
                f"one clip does not fit in the memory of {worker.runtime.device}",
                "lower the refine resolution or clip_frames, or close other programs using the GPU",
            )
        worker.limit = max(1, len(items) // 2)
        worker.halvings += 1
        log.warning(
            "refiner: out of memory with %d clips per pass on %s; halving to %d and retrying",
            len(items),
            worker.runtime.device,
            worker.limit,
        )
        pending.insert(0, items)


def run_batches(
    workers: list[Worker],
    batches: list[list],
    render: Callable[[list, Worker], torch.Tensor],
    finish: Callable[[list, torch.Tensor, str], None],
    runtime: Runtime,
) -> None:
    """Render every batch; ``finish(items, rows, worker name)`` always runs on the calling thread
    (saving, previews, progress).

    One worker: inline, checking for interruption between batches. Several: one
    thread per worker pulls batches from a shared queue; the first error (or an
    interruption) stops the others after their current step, clips finished
    meanwhile are still handed to ``finish``, then the error is re-raised here.
    """
    if len(workers) == 1:
        w = workers[0]
        for batch in batches:
            runtime.check_interrupt()
            render_resilient(batch, w, render, lambda items, rows: finish(items, rows, w.name))
        return
    work: queue.Queue = queue.Queue()
    for b in batches:
        work.put(b)
    done: queue.Queue = queue.Queue()
    stop = workers[0].stop

    def loop(worker: Worker) -> None:
        try:
            while not stop.is_set():
                try:
                    batch = work.get_nowait()
                except queue.Empty:
                    break
                render_resilient(batch, worker, render, lambda i, rows: done.put(("ok", i, (rows, worker.name))))
        except BaseException as exc:  # forwarded to the calling thread, which re-raises it
            done.put(("error", exc, None))
        finally:
            done.put(("exit", None, None))

    threads = [threading.Thread(target=loop, args=(w,), name=f"clips-{w.runtime.device}") for w in workers]
    for t in threads:
        t.start()
    running, error = len(threads), None
    try:
        while running:
            try:
                kind, a, b = done.get(timeout=0.2)
            except queue.Empty:
                runtime.check_interrupt()
                continue
            if kind == "ok":
                finish(a, *b)
            elif kind == "error":
                error = error or a
                stop.set()
            else:
                running -= 1
        if error is not None:
            raise error
    finally:
        stop.set()
        for t in threads:
            t.join()
        while not done.empty():  # clips finished while stopping are kept
            kind, a, b = done.get_nowait()
            if kind == "ok":
                finish(a, *b)

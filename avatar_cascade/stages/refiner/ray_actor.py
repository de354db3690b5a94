"""The Ray side of the refiner's Ray backend: :class:`ClipActor` and what crosses the wire.

An actor loads the models of a :class:`~avatar_cascade.models.recipe.ModelRecipe` on its device
once and keeps them resident; :meth:`ClipActor.render` runs the refiner's batch renderer (sent by
reference) through the local worker's ``render_resilient`` (out-of-memory halves its batch).
Errors of this pack travel as plain data (:func:`error_data`) and are raised again on the driver
by :func:`raise_error`, naming the worker; :func:`compact` keeps views from carrying their whole
base tensors over the wire.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import time
from collections.abc import Callable

import torch

from avatar_cascade.core.errors import AvatarCascadeError, InputError, Interrupted, ModelFileError
from avatar_cascade.core.runtime import Runtime, default_dtype
from avatar_cascade.models.handle import modules_of
from avatar_cascade.models.recipe import ModelRecipe
from avatar_cascade.stages.refiner.workers import Worker, render_resilient


def error_data(exc: AvatarCascadeError) -> dict:
    """A pack error as plain data (its constructor is not pickle's: rebuilt by :func:`raise_error`)."""
    fields = {k: getattr(exc, k, None) for k in ("input_name", "value", "path", "problem", "fix")}
    for k in ("value", "path"):  # only plain values travel (a tensor or a handle is shown by its repr)
        if fields[k] is not None and not isinstance(fields[k], (str, int, float, bool, tuple, list)):
            fields[k] = str(fields[k])
    return {"type": type(exc).__name__, "message": str(exc), **{k: v for k, v in fields.items() if v is not None}}


class ClipActor:
    """One Ray worker: the models resident on its device, and the refiner's batch renderer.

    Runs as a threaded actor (``max_concurrency=2``) so :meth:`stop` is heard while
    :meth:`render` runs. Errors of this pack (a model file missing on this node, a clip that does
    not fit in memory) come back as data, named with this worker.
    """

    def __init__(self, recipe: ModelRecipe, path_map, dtype: str, driver_device_type: str) -> None:
        import ray

        self.device = torch.device("cuda") if ray.get_gpu_ids() else torch.device("cpu")
        self.name = f"{socket.gethostname()}:{os.getpid()}/{self.device}"
        self._stopped: set[str] = set()
        self._run = ""
        self.error: dict | None = None
        self.worker: Worker | None = None
        want = getattr(torch, dtype)
        compute = want if self.device.type == driver_device_type else default_dtype(self.device)
        try:
            handles = recipe.load(path_map, self.device)
        except AvatarCascadeError as exc:
            self.error = error_data(exc)
            return
        for m in modules_of(*handles):  # resident: placed once, never offloaded between batches
            m.to(self.device)
        rt = Runtime(
            device=self.device,
            dtype=compute,
            offload_device=self.device,
            show_progress=False,
            interrupt_check=self._check,
        )
        from avatar_cascade.models.dit_runtime import prepare_dit

        prepare_dit(handles[0], self.device)
        self.worker = Worker(rt, handles, 1)

    def _check(self) -> None:
        if self._run in self._stopped:
            raise Interrupted("stopped by the driver")

    def ready(self) -> dict:
        return {"name": self.name, "pid": os.getpid(), "error": self.error}

    def stop(self, run_id: str) -> None:
        self._stopped.add(run_id)

    def render(self, run_id: str, limit: int, render_fn: Callable, reqs: list, *args) -> dict:
        """``render_fn(reqs, worker, *args)`` (the refiner's ``render_requests``, sent by reference) on
        this worker's models in passes of at most ``limit`` clips, halved on out-of-memory:
        ``{"frames": [B, T, H, W, 3] uint8, "worker": name, "render_s": seconds}``, or
        ``{"error": ...}`` / ``{"interrupted": True}``."""
        if self.worker is None:
            return {"error": self.error, "worker": self.name}
        if run_id != self._run:  # each run starts from its own batch size (a halving lasts for the run)
            self._run, self.worker.limit = run_id, limit
        rows: list[torch.Tensor] = []
        t0 = time.perf_counter()
        try:
            render_resilient(
                list(reqs),
                self.worker,
                lambda items, w: render_fn(items, w, *args),
                lambda items, out: rows.extend(out),
            )
        except Interrupted:
            return {"interrupted": True, "worker": self.name}
        except AvatarCascadeError as exc:
            return {"error": error_data(exc), "worker": self.name}
        return {"frames": torch.stack(rows), "worker": self.name, "render_s": time.perf_counter() - t0}


def raise_error(data: dict, worker: str) -> None:
    """Raise the pack error ``data`` (from :func:`error_data`) again here, naming ``worker``."""
    where = f" (on Ray worker {worker})"
    if data.get("type") == "ModelFileError":
        raise ModelFileError(
            data.get("input_name", "ray worker"), data.get("path"), data["problem"] + where, data["fix"]
        )
    if "input_name" in data and "problem" in data:
        raise InputError(data["input_name"], data.get("value"), data["problem"] + where, data["fix"])
    raise AvatarCascadeError(data.get("message", "a Ray worker failed") + where)


def compact(req):
    """``req`` with every tensor copied into its own storage: a view (one keyframe of all of them, one
    prompt of a batch of embeddings) would otherwise carry its whole base tensor to the worker."""
    changes = {}
    for f in dataclasses.fields(req):
        v = getattr(req, f.name)
        if isinstance(v, torch.Tensor):
            changes[f.name] = v.clone()
        elif isinstance(v, dict) and any(isinstance(t, torch.Tensor) for t in v.values()):
            changes[f.name] = {k: t.clone() if isinstance(t, torch.Tensor) else t for k, t in v.items()}
    return dataclasses.replace(req, **changes)

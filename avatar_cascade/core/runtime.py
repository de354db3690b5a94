"""Runtime hooks: devices, progress, interruption, previews, model placement.

The engine never imports ComfyUI. Stages take a :class:`Runtime`; the default
one uses plain torch (CUDA when present) and tqdm. ``nodes/comfy_bridge.py``
builds one that talks to ComfyUI's model management, progress bar and
interrupt flag instead.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from avatar_cascade.core.errors import Interrupted

log = logging.getLogger(__name__)


class Progress:
    """A progress reporter for one loop of ``total`` steps."""

    def update(self, n: int = 1, preview: Any = None) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self) -> None:
        pass


class _TqdmProgress(Progress):
    def __init__(self, total: int, desc: str, enabled: bool) -> None:
        self._bar = None
        if enabled:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, desc=desc, leave=False)

    def update(self, n: int = 1, preview: Any = None) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def default_device() -> torch.device:
    """CUDA when available, else CPU (queried at call time, never at import)."""
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def default_dtype(device: torch.device) -> torch.dtype:
    """bf16 on GPUs that support it, fp32 on CPU (CPU half kernels are slow)."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


class ReplicaHost:
    """How the host program accounts for model replicas placed on extra devices (one per local GPU).

    The default does nothing (plain torch). Inside ComfyUI the bridge's host frees room on the
    device first (ComfyUI unloads its idle models there) and lists the replicas among ComfyUI's
    loaded models while they live, so its free-memory figures count them.
    """

    def reserve(self, device: torch.device, nbytes: int) -> None:
        """Make room for ``nbytes`` of weights on ``device`` before they are copied there."""

    def adopt(self, modules: list[torch.nn.Module], device: torch.device) -> None:
        """Count ``modules`` (already on ``device``) as loaded there."""

    def release(self, modules: list[torch.nn.Module]) -> None:
        """Forget ``modules`` (they are about to be dropped)."""


@dataclass
class Runtime:
    """Where and how stages run.

    Attributes:
        device: compute device for the DiT / VAE / encoders.
        dtype: compute dtype.
        offload_device: where models rest between uses.
        show_progress: draw tqdm bars (CLI) when no custom progress factory is set.
        progress_factory: ``(total, desc) -> Progress``; ComfyUI's bridge sets it.
        interrupt_check: raises when the user asked to stop; called between steps.
        preview: ``(kind, payload)`` callback for previews of finished artefacts.
        model_loader: ``(modules) -> context manager`` that places modules on
            ``device`` for the duration of a block and offloads them after.
        warnings: what the artist must be told (a degraded result, a model off its trained
            regime), one line each, in order; :meth:`warn` adds to it. The CLI prints them,
            the nodes show them on the node in the graph.
        replicas: how replicas on other devices are accounted (:class:`ReplicaHost`); None = not at all.
        free_memory: ``(device) -> bytes`` free for new work there (ComfyUI's own figure inside ComfyUI);
            None = ask torch / the OS.
    """

    device: torch.device = field(default_factory=default_device)
    dtype: torch.dtype | None = None
    offload_device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    show_progress: bool = True
    progress_factory: Callable[[int, str], Progress] | None = None
    interrupt_check: Callable[[], None] | None = None
    preview: Callable[[str, Any], None] | None = None
    model_loader: Callable[[list[torch.nn.Module]], contextlib.AbstractContextManager] | None = None
    warnings: list[str] = field(default_factory=list)

    def warn(self, stage: str, message: str) -> None:
        """Tell the artist: ``"<stage>: <message>"`` is logged and kept in :attr:`warnings` (once)."""
        line = f"{stage}: {message}"
        if line not in self.warnings:
            self.warnings.append(line)
            log.warning("%s", line)
    replicas: ReplicaHost | None = None
    free_memory: Callable[[torch.device], int] | None = None

    def __post_init__(self) -> None:
        if self.dtype is None:
            self.dtype = default_dtype(self.device)

    def progress(self, total: int, desc: str) -> Progress:
        if self.progress_factory is not None:
            return self.progress_factory(total, desc)
        return _TqdmProgress(total, desc, self.show_progress)

    def check_interrupt(self) -> None:
        """Raise :class:`Interrupted` (or the host's own exception) if stopping was asked."""
        if self.interrupt_check is not None:
            self.interrupt_check()

    def emit_preview(self, kind: str, payload: Any) -> None:
        if self.preview is not None:
            try:
                self.preview(kind, payload)
            except Interrupted:
                raise
            except Exception:  # a preview must never kill a run
                log.warning("preview %s failed", kind, exc_info=True)

    @contextlib.contextmanager
    def use_models(self, *modules: torch.nn.Module) -> Iterator[None]:
        """Place ``modules`` on the compute device for a block, offload after."""
        mods = [m for m in modules if m is not None]
        if self.model_loader is not None:
            with self.model_loader(mods):
                yield
            return
        for m in mods:
            m.to(self.device)
        try:
            yield
        finally:
            if self.device != self.offload_device:
                for m in mods:
                    m.to(self.offload_device)
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()

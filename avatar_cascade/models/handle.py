"""The model-handle contract: what every loaded model offers the stages.

A handle (``WanDiT``, ``WanVAE``, ``TextEncoder``, ``CLIPVision``, ``AudioEncoder``, ``MLLM``,
``AudioAdapter``) wraps the torch module(s) of one loaded model with what the cascade needs
to know about it. Two methods are common to all of them:

* ``modules()``: the ``torch.nn.Module`` s to place on the compute device while the model
  runs, for ``runtime.use_models(*handle.modules())`` (a DiT lists its experts and its audio
  adapter and leaves out experts that diffusers group offloading places itself);
* ``cache_identity()``: the id cache keys use (the weights file; for a DiT also its LoRA
  stack, expert boundary and audio adapter), read through
  :func:`avatar_cascade.core.cache.model_identity`.
"""

from __future__ import annotations

from typing import Protocol

import torch

from avatar_cascade.core.cache import CacheIdentified


class ModelHandle(CacheIdentified, Protocol):
    """A loaded model: its modules to place, and its cache identity."""

    def modules(self) -> list[torch.nn.Module]:
        """Modules to place on the compute device while the model runs."""
        ...


def modules_of(*handles: ModelHandle | None) -> list[torch.nn.Module]:
    """Every module of ``handles`` in order (None = no model), for ``runtime.use_models(*modules_of(...))``."""
    return [m for h in handles if h is not None for m in h.modules()]

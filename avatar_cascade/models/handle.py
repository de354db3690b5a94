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

:class:`WanModels` bundles the handles a DiT-sampling stage (blueprint, keyframe lift, refiner)
runs, so those stages take one ``models`` argument instead of four loose handles.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import torch

from avatar_cascade.core.cache import CacheIdentified

if TYPE_CHECKING:
    from avatar_cascade.models.clip_vision import CLIPVision
    from avatar_cascade.models.text_encoder import TextEncoder
    from avatar_cascade.models.wan_dit import WanDiT
    from avatar_cascade.models.wan_vae import WanVAE


class ModelHandle(CacheIdentified, Protocol):
    """A loaded model: its modules to place, and its cache identity."""

    def modules(self) -> list[torch.nn.Module]:
        """Modules to place on the compute device while the model runs."""
        ...


def modules_of(*handles: ModelHandle | None) -> list[torch.nn.Module]:
    """Every module of ``handles`` in order (None = no model), for ``runtime.use_models(*modules_of(...))``."""
    return [m for h in handles if h is not None for m in h.modules()]


@dataclass(frozen=True)
class WanModels:
    """The Wan generation models of a DiT-sampling stage, one handle each.

    Attributes:
        dit: the Wan DiT (it may carry LoRAs and an audio adapter).
        vae: the Wan VAE (encodes the known frames, decodes the samples).
        text_encoder: UMT5 (prompts and negative prompts).
        image_encoder: CLIP vision, or None. Only a DiT with an image embedder (Wan 2.1 I2V/FLF2V)
            reads its tokens; the stages leave it out of their work and their cache keys otherwise.

    It is only a bundle: each stage still puts every handle's own ``model_identity`` into its
    cache keys (so the keys are those of the loose handles), and ``dataclasses.replace`` swaps
    one handle (e.g. ``replace(models, dit=with_lora)``).
    """

    dit: WanDiT
    vae: WanVAE
    text_encoder: TextEncoder
    image_encoder: CLIPVision | None = None

    def modules(self) -> list[torch.nn.Module]:
        """Every module of the four handles (DiT, VAE, text encoder, image encoder), in that order."""
        return modules_of(self.dit, self.vae, self.text_encoder, self.image_encoder)

"""Text conditioning for the DiT: each distinct prompt is encoded once."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from avatar_cascade.core.runtime import Runtime

ENCODE_BATCH = 8


class PromptBank:
    """Encodes prompts with the UMT5 text encoder and keeps one embedding per distinct text.

    Embeddings are kept on the offload device (CPU) in the compute dtype, so a
    storyline with hundreds of repeated shot prompts costs one encode each.
    """

    def __init__(self, text_encoder, runtime: Runtime) -> None:
        self.text_encoder = text_encoder
        self.runtime = runtime
        self._cache: dict[str, torch.Tensor] = {}

    def encode_all(self, prompts: Iterable[str]) -> None:
        todo = list(dict.fromkeys(p for p in prompts if p not in self._cache))
        if not todo:
            return
        with self.runtime.use_models(*self.text_encoder.modules()):
            for i in range(0, len(todo), ENCODE_BATCH):
                chunk = todo[i : i + ENCODE_BATCH]
                with torch.no_grad():
                    emb = self.text_encoder.encode(chunk)
                for p, e in zip(chunk, emb):
                    self._cache[p] = e.to(self.runtime.offload_device, self.runtime.dtype)

    def get(self, prompt: str) -> torch.Tensor:
        if prompt not in self._cache:
            self.encode_all([prompt])
        return self._cache[prompt]

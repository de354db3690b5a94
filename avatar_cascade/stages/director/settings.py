"""MLLM Director settings: seed and the token and audio budgets of its passes."""

from __future__ import annotations

from dataclasses import dataclass

from avatar_cascade.core.seeds import seed_setting
from avatar_cascade.core.settings import Settings, setting

TOKENS_PER_SHOT = 96  # a shot pass may write at least this many tokens per shot
AUDIO_SECONDS = 30.0  # real audio a hearing model gets per pass (Qwen2.5-Omni: ~25 tokens per second)


@dataclass(frozen=True, kw_only=True)
class DirectorSettings(Settings):
    """How the Director asks its model (see :func:`~avatar_cascade.stages.director.director.direct`).

    Attributes:
        seed: generation seed (decoding is greedy, so the result is deterministic).
        max_new_tokens: tokens the model may write in the global pass; a shot pass may write
            ``max(max_new_tokens, tokens_per_shot x shots in its batch)``.
        shots_per_batch: sub-clips planned per shot pass (keeps long videos within context).
        tokens_per_shot: see ``max_new_tokens`` (a real model needs about 60-90 per shot).
        audio_seconds: seconds of real audio a model that hears (Qwen2.5-Omni) gets per pass
            (see :mod:`avatar_cascade.stages.director.audio`); 0 = text description only. Ignored
            for models that cannot hear.
    """

    seed: int = seed_setting("Director seed (greedy decoding is deterministic).", control_after_generate=False)
    max_new_tokens: int = setting(
        512, tooltip="Tokens the model may write in the global pass. A shot pass (16 shots) may "
        "write max(this, 96 per shot) = 1536 tokens by default.", min=1, max=8192, fix="use the default (512)",
    )  # fmt: skip
    shots_per_batch: int = setting(
        16, tooltip="Sub-clips planned per shot pass (keeps long videos within the model's context).",
        min=1, max=1024, fix="use 8 to 32",
    )  # fmt: skip
    tokens_per_shot: int = setting(
        TOKENS_PER_SHOT, tooltip="Tokens a shot pass may write per shot (a real model needs about 60-90).",
        min=1, max=4096, fix=f"use the default ({TOKENS_PER_SHOT})",
    )  # fmt: skip
    audio_seconds: float = setting(
        AUDIO_SECONDS, tooltip="Seconds of real audio a model that hears (Qwen2.5-Omni) gets per pass; "
        "0 = a text description only.", min=0.0, max=600.0, fix=f"use {AUDIO_SECONDS:g}",
    )  # fmt: skip

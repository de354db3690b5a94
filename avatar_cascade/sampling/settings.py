"""Denoising settings shared by every stage that samples (blueprint, keyframe lift, refiner).

Each stage nests :class:`SamplerSettings` with its own defaults (``nested(SamplerSettings,
steps=20, shift=3.0)``); the class defaults below are the refiner's.
"""

from __future__ import annotations

from dataclasses import dataclass

from avatar_cascade.core.errors import InputError
from avatar_cascade.core.settings import Settings, setting

SCHEDULERS = ("unipc", "euler", "dpm++")


@dataclass(frozen=True, kw_only=True)
class SamplerSettings(Settings):
    """Denoising settings.

    Attributes:
        steps: number of denoising steps.
        guidance: text classifier-free guidance scale (1.0 = off: one forward per step).
        shift: flow-matching timestep shift (Wan: 3.0 at 480p, 5.0 at 720p).
        scheduler: one of ``SCHEDULERS``.
        guidance_2: text guidance of a Wan 2.2 A14B low-noise expert (None = ``guidance``).
        audio_guidance: audio guidance scale of InfiniteTalk's three-branch CFG, used when the
            DiT has an audio adapter and the clips carry audio (1.0 = plain CFG with audio in
            both branches; InfiniteTalk's default 4.0).
    """

    steps: int = setting(
        30, tooltip="Denoising steps (20-40 full quality).", min=1, max=1000,
        fix="use 20-40 for full quality, 4-8 for drafts",
    )  # fmt: skip
    guidance: float = setting(
        5.0, tooltip="Text guidance scale (1.0 = off, one forward per step).", min=0.0, max=30.0, step=0.1,
        fix="use 4-6 for Wan (1.0 with distill LoRAs)",
    )  # fmt: skip
    shift: float = setting(
        5.0, tooltip="Flow-matching shift: 3.0 at 480p, 5.0 at 720p.", min=0.1, max=50.0, step=0.1,
        fix="use 3.0 at 480p, 5.0 at 720p",
    )  # fmt: skip
    scheduler: str = setting("unipc", tooltip="Flow-matching scheduler.", choices=SCHEDULERS)
    guidance_2: float | None = setting(
        None, tooltip="Wan 2.2 A14B: text guidance of the low-noise expert (-1 = same as guidance).",
        min=0.0, max=30.0, step=0.1, none_as=-1.0, fix="use 4-6 for Wan, or -1 for the same as guidance",
    )  # fmt: skip
    audio_guidance: float = setting(
        4.0, tooltip="Audio guidance with an audio adapter (InfiniteTalk: 4; 1.0 = no extra audio pass).",
        min=0.0, max=30.0, step=0.1, fix="use 3-5",
    )  # fmt: skip


def make_scheduler(settings: SamplerSettings):
    """A fresh diffusers flow-matching scheduler for one sampling run."""
    from diffusers import DPMSolverMultistepScheduler, FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler

    settings.check()
    if settings.scheduler == "unipc":
        return UniPCMultistepScheduler(
            num_train_timesteps=1000, prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=settings.shift
        )
    if settings.scheduler == "dpm++":
        return DPMSolverMultistepScheduler(
            num_train_timesteps=1000,
            prediction_type="flow_prediction",
            use_flow_sigmas=True,
            flow_shift=settings.shift,
            algorithm_type="dpmsolver++",
        )
    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=settings.shift)


def check_size(name: str, v: int) -> None:
    """One side in pixels: a multiple of 16 (VAE x8, DiT patch x2) from 16 to 4096."""
    if not isinstance(v, int) or isinstance(v, bool) or v < 16 or v % 16 or v > 4096:
        fixed = max(16, min(4096, (int(v) // 16) * 16)) if isinstance(v, (int, float)) and v == v else 480
        raise InputError(name, v, "must be a multiple of 16 between 16 and 4096", f"use {fixed}")


def size_setting(default: int, tooltip: str):
    """A width or height in pixels (see :func:`check_size`)."""
    return setting(default, tooltip=tooltip, min=16, max=4096, step=16, validate=check_size)

"""sampling.settings."""

from __future__ import annotations

from dataclasses import dataclass

from avatar_cascade.core.errors import InputError

SCHEDULERS = ("unipc", "euler", "dpm++")


@dataclass(frozen=True)
class SamplerSettings:
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

    steps: int = 30
    guidance: float = 5.0
    shift: float = 5.0
    scheduler: str = "unipc"
    guidance_2: float | None = None
    audio_guidance: float = 4.0

    def check(self) -> SamplerSettings:
        if self.scheduler not in SCHEDULERS:
            raise InputError(
                "scheduler", self.scheduler, "is not a known sampler", f"choose one of {', '.join(SCHEDULERS)}"
            )
        if not 1 <= self.steps <= 1000:
            raise InputError(
                "steps", self.steps, "must be between 1 and 1000", "use 20-40 for full quality, 4-8 for drafts"
            )
        for name, value in (("guidance", self.guidance), ("guidance_2", self.guidance_2)):
            if value is not None and not 0.0 <= value <= 30.0:
                raise InputError(name, value, "must be between 0 and 30", "use 4-6 for Wan (1.0 with distill LoRAs)")
        if not 0.0 <= self.audio_guidance <= 30.0:
            raise InputError("audio_guidance", self.audio_guidance, "must be between 0 and 30", "use 3-5")
        if not 0.0 < self.shift <= 50.0:
            raise InputError("shift", self.shift, "must be in (0, 50]", "use 3.0 at 480p, 5.0 at 720p")
        return self


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


def check_resolution(width: int, height: int, prefix: str = "") -> tuple[int, int]:
    """Width/height must be multiples of 16 (VAE x8, DiT patch x2)."""
    for name, v in ((f"{prefix}width", width), (f"{prefix}height", height)):
        if not isinstance(v, int) or v < 16 or v % 16 or v > 4096:
            fixed = max(16, min(4096, (int(v) // 16) * 16)) if isinstance(v, (int, float)) else 480
            raise InputError(name, v, "must be a multiple of 16 between 16 and 4096", f"use {fixed}")
    return width, height

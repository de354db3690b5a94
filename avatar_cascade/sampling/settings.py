"""Denoising settings shared by every stage that samples (blueprint, keyframe lift, refiner).

Each stage nests :class:`SamplerSettings`; its defaults are ``auto``: the loaded model's preset.
"""

from __future__ import annotations

from dataclasses import dataclass

from avatar_cascade.core.errors import InputError
from avatar_cascade.core.settings import Settings, setting

SCHEDULERS = ("unipc", "euler", "dpm++")
AUTO = "auto"


@dataclass(frozen=True, kw_only=True)
class SamplerSettings(Settings):
    """Denoising settings; None (widget 0 / -1) or ``"auto"`` = the loaded model's preset
    (:mod:`avatar_cascade.models.presets`), filled in by :meth:`resolve` once the DiT is known.

    Attributes:
        steps: number of denoising steps.
        guidance: text classifier-free guidance scale (1.0 = off: one forward per step).
        shift: flow-matching timestep shift (Wan 2.1 I2V: 3.0 at 480p, 5.0 at 720p; FLF2V 16).
        scheduler: one of ``SCHEDULERS`` or ``"auto"``.
        guidance_2: text guidance of a Wan 2.2 A14B low-noise expert (None = the preset's, else
            ``guidance``).
        audio_guidance: audio guidance scale of InfiniteTalk's three-branch CFG, used when the
            DiT has an audio adapter and the clips carry audio (1.0 = plain CFG with audio in
            both branches; InfiniteTalk's default 4.0).
        negative_prompt: added to every shot's negative prompt: ``"auto"`` = the model's default
            negative prompt (Wan's own), ``""`` = none, any other text = that text.
    """

    steps: int | None = setting(
        None, tooltip="Denoising steps; 0 = auto (the model's preset: Wan I2V / InfiniteTalk 40, FLF2V 50).",
        min=1, max=1000, none_as=0, fix="use 0 (auto), 20-50 for full quality, 4-8 for drafts",
    )  # fmt: skip
    guidance: float | None = setting(
        None, tooltip="Text guidance scale; -1 = auto (the preset: Wan 2.1 5.0, Wan 2.2 A14B 3.5). 1.0 = off.",
        min=0.0, max=30.0, step=0.1, none_as=-1.0, fix="use -1 (auto) or 4-6 for Wan (1.0 with distill LoRAs)",
    )  # fmt: skip
    shift: float | None = setting(
        None, tooltip="Flow-matching shift; -1 = auto (the preset at the nearest trained resolution: Wan 2.1 I2V "
        "3 at 480p / 5 at 720p, FLF2V 16, InfiniteTalk 7 / 11).",
        min=0.1, max=50.0, step=0.1, none_as=-1.0, fix="use -1 (auto), or 3.0 at 480p, 5.0 at 720p",
    )  # fmt: skip
    scheduler: str = setting(
        AUTO, tooltip="Flow-matching scheduler; auto = the preset's (UniPC for every Wan model).",
        choices=(AUTO, *SCHEDULERS),
    )  # fmt: skip
    guidance_2: float | None = setting(
        None, tooltip="Wan 2.2 A14B: text guidance of the low-noise expert (-1 = auto: the preset's, else guidance).",
        min=0.0, max=30.0, step=0.1, none_as=-1.0, fix="use 4-6 for Wan, or -1 for the same as guidance",
    )  # fmt: skip
    audio_guidance: float | None = setting(
        None, tooltip="Audio guidance with an audio adapter; -1 = auto (InfiniteTalk: 4; 1.0 = no extra audio pass).",
        min=0.0, max=30.0, step=0.1, none_as=-1.0, fix="use -1 (auto) or 3-5",
    )  # fmt: skip
    negative_prompt: str = setting(
        AUTO, tooltip="Added to every shot's negative prompt: auto = the model's default negative prompt "
        "(Wan's own), empty = none, or your own text.", cli_text=True,
    )  # fmt: skip

    @property
    def resolved(self) -> bool:
        """True when no value is left to the preset (what :func:`make_scheduler` needs)."""
        values = (self.steps, self.guidance, self.shift, self.audio_guidance)
        return all(v is not None for v in values) and self.scheduler != AUTO and self.negative_prompt != AUTO

    def resolve(self, preset, width: int, height: int) -> SamplerSettings:
        """These settings with every ``auto`` value taken from ``preset`` (a ``ModelPreset``) at
        ``width x height`` (the shift of the nearest trained resolution)."""
        from dataclasses import replace

        return replace(
            self,
            steps=preset.steps if self.steps is None else self.steps,
            guidance=preset.guidance if self.guidance is None else self.guidance,
            shift=preset.shift_at(width, height) if self.shift is None else self.shift,
            scheduler=preset.scheduler if self.scheduler == AUTO else self.scheduler,
            guidance_2=preset.guidance_2 if self.guidance_2 is None else self.guidance_2,
            audio_guidance=preset.audio_guidance if self.audio_guidance is None else self.audio_guidance,
            negative_prompt=preset.negative_prompt if self.negative_prompt == AUTO else self.negative_prompt,
        )

    def key_parts(self) -> dict:
        """Every value, for content keys (resolve first: keys hold what really runs)."""
        return dict(vars(self))


def resolve_sampler(settings: SamplerSettings, dit, width: int, height: int, *, with_audio: bool | None = None):
    """``settings`` resolved with the preset of ``dit`` (see :func:`~avatar_cascade.models.presets.preset_for`)."""
    from avatar_cascade.models.presets import preset_for

    return settings.resolve(preset_for(dit, with_audio=with_audio), width, height)


def with_negative(shot_negative: str, settings: SamplerSettings) -> str:
    """A shot's negative prompt followed by the resolved sampler's default negative prompt (no repeats)."""
    parts = [p for p in (shot_negative.strip(), settings.negative_prompt.strip()) if p]
    if len(parts) == 2 and parts[1] in parts[0]:
        return parts[0]
    return ", ".join(parts)


def make_scheduler(settings: SamplerSettings):
    """A fresh diffusers flow-matching scheduler for one sampling run."""
    from diffusers import DPMSolverMultistepScheduler, FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler

    settings.check()
    if settings.scheduler == AUTO or settings.shift is None:
        raise ValueError("scheduler / shift are still 'auto': resolve the sampler settings with the model's preset")
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

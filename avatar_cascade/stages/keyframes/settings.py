"""Keyframe Extractor settings: refine size, candidate search, score weights, colour match, the lift."""

from __future__ import annotations

import json
from dataclasses import dataclass

from avatar_cascade.core.errors import InputError
from avatar_cascade.core.seeds import seed_setting
from avatar_cascade.core.settings import Settings, nested, setting, validator
from avatar_cascade.sampling.settings import SamplerSettings, size_setting
from avatar_cascade.stages.keyframes.scores import DEFAULT_WEIGHTS, check_weights

LIFT_FRAMES = 5


def weights_from_text(text: str | dict | None) -> dict[str, float]:
    """Score weights from JSON text (score name -> weight; names left out keep their default, empty = all)."""
    if isinstance(text, dict) or text is None:
        return check_weights(text)
    text = text.strip()
    if not text:
        return check_weights(None)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError("weights", text, f"is not valid JSON ({exc.msg})", 'write e.g. {"identity": 1.0}') from exc
    if not isinstance(data, dict):
        raise InputError("weights", text, "must be a JSON object", 'write e.g. {"identity": 1.0, "mouth": 0.5}')
    return check_weights(data)


@dataclass(frozen=True, kw_only=True)
class LiftSettings(Settings):
    """Keyframe refinement: ``denoise`` 0..1 (0 = off), the full-schedule sampler, seed, batch size."""

    denoise: float = setting(
        0.0, tooltip="DiT refinement of each lifted keyframe, anchored on the reference (img2img "
        "strength; 0 = off, 0.2-0.4 adds detail). Needs dit, vae and text_encoder.",
        min=0.0, max=1.0, step=0.05, fix="use 0 (off) or 0.2-0.4",
    )  # fmt: skip
    sampler: SamplerSettings = nested(
        SamplerSettings, tooltips={"steps": "Full schedule length of the refinement."}, steps=20, guidance=5.0,
        shift=5.0,
    )  # fmt: skip
    seed: int = seed_setting("Noise seed of the refinement (each seam derives its own).")
    batch_size: int = setting(2, tooltip="Keyframes refined per forward pass.", min=1, max=64, fix="use 2")

    def check(self, prefix: str = "lift_") -> LiftSettings:
        """Checked with the names the Keyframe Extractor shows (``lift_denoise``, ``lift_steps`` ...)."""
        return super().check(prefix)

    @property
    def enabled(self) -> bool:
        return self.denoise > 0

    @property
    def steps_run(self) -> int:
        """Denoising steps actually run (the last ones of the schedule)."""
        return max(1, round(self.sampler.steps * self.denoise)) if self.enabled else 0

    def key_parts(self) -> dict:
        if not self.enabled:
            return {"denoise": 0.0}
        return {"denoise": self.denoise, "sampler": vars(self.sampler), "seed": self.seed, "frames": LIFT_FRAMES}


@dataclass(frozen=True, kw_only=True)
class KeyframeSettings(Settings):
    """How keyframes are picked from the blueprint and lifted (see :func:`extract_keyframes`).

    Attributes:
        width / height: refine resolution in pixels (multiples of 16).
        search_radius_s: candidates lie within this many seconds of the seam.
        weights: score weights (names of ``DEFAULT_WEIGHTS``; missing ones keep their default).
        colour_match: 0..1 strength of colour matching to the reference.
        lift: the optional DiT refinement (``denoise`` 0 = off).
    """

    width: int = size_setting(832, "Refine width.")
    height: int = size_setting(480, "Refine height.")
    search_radius_s: float = setting(
        0.25, tooltip="Candidates lie within this many seconds of each seam.", min=0.0, max=5.0, step=0.05,
        fix="use 0.25",
    )  # fmt: skip
    colour_match: float = setting(
        1.0, tooltip="Strength of colour matching to the reference.", min=0.0, max=1.0, step=0.05, fix="use 1.0"
    )
    weights: dict[str, float] = setting(
        default_factory=lambda: dict(DEFAULT_WEIGHTS), kind="STRING",
        tooltip="Score weights as JSON (identity, sharpness, face, mouth, colour, centre, "
        "diversity); names left out keep their default, empty = all defaults.",
        encode=json.dumps, decode=weights_from_text, validate=validator(check_weights),
    )  # fmt: skip
    lift: LiftSettings = nested(LiftSettings, prefix="lift_")

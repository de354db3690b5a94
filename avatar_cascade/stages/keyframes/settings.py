"""Keyframe Extractor settings: refine size, candidate search, score weights, colour match, the lift."""

from __future__ import annotations

import json
from dataclasses import dataclass

from avatar_cascade.core.errors import InputError
from avatar_cascade.core.seeds import seed_setting
from avatar_cascade.core.settings import Settings, nested, setting, validator
from avatar_cascade.media.framing import framing_setting
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
    """Keyframe refinement: ``denoise`` 0..1 (0 = off), the full-schedule sampler, seed, batch size.

    On by default (0.3) whenever a DiT is connected: a blueprint frame upscaled to the refine size is
    soft, and both ends of every clip are pinned to it (KlingAvatar 2.0's spatio-temporal cascade
    refines keyframes at the target resolution, anchored on the reference)."""

    denoise: float = setting(
        0.3, tooltip="DiT refinement of each keyframe at the refine size, anchored on the reference (img2img "
        "strength; 0 = off, 0.2-0.4 adds detail). Runs whenever dit, vae and text_encoder are connected.",
        min=0.0, max=1.0, step=0.05, fix="use 0 (off) or 0.2-0.4",
    )  # fmt: skip
    sampler: SamplerSettings = nested(
        SamplerSettings, tooltips={"steps": "Full schedule length of the refinement (0 = the DiT's preset)."},
    )  # fmt: skip
    seed: int = seed_setting("Noise seed of the refinement (each seam derives its own).")
    batch_size: int = setting(2, tooltip="Keyframes refined per forward pass.", min=1, max=64, fix="use 2")

    def check(self, prefix: str = "lift_") -> LiftSettings:
        """Checked with the names the Keyframe Extractor shows (``lift_denoise``, ``lift_steps`` ...)."""
        return super().check(prefix)

    @property
    def enabled(self) -> bool:
        return self.denoise > 0

    def key_parts(self) -> dict:
        if not self.enabled:
            return {"denoise": 0.0}
        return {"denoise": self.denoise, "seed": self.seed, "frames": LIFT_FRAMES}

    def steps_run_of(self, sampler: SamplerSettings) -> int:
        """Steps run with the resolved ``sampler`` (the last ones of its schedule)."""
        return max(1, round(sampler.steps * self.denoise)) if self.enabled else 0


@dataclass(frozen=True, kw_only=True)
class KeyframeSettings(Settings):
    """How keyframes are picked from the blueprint and lifted (see :func:`extract_keyframes`).

    Attributes:
        width / height: requested refine resolution in pixels (multiples of 16); with ``framing``
            ``"bucket"`` the area, the aspect following the reference.
        framing: ``"bucket"``, ``"crop"`` or ``"pad"`` (see :mod:`avatar_cascade.media.framing`).
        search_radius_s: candidates lie within this many seconds of the seam.
        weights: score weights (names of ``DEFAULT_WEIGHTS``; missing ones keep their default).
        colour_match: 0..1 strength of colour matching to the reference.
        lift: the optional DiT refinement (``denoise`` 0 = off).
    """

    width: int = size_setting(832, "Refine width (with framing 'bucket': the area; the aspect follows the image).")
    height: int = size_setting(480, "Refine height (with framing 'bucket': the area; the aspect follows the image).")
    framing: str = framing_setting()
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
    face_detectors: bool = setting(
        True, tooltip="Score candidates with the face detector, 5-point landmarks and face embedding (dlib, "
        "package dlib-bin + face-recognition-models) when installed and a face is found in the reference; "
        "else the labelled image-statistics proxies.",
    )  # fmt: skip
    landmarks_68: bool = setting(
        False, tooltip="Mouth openness from dlib's 68-point landmarks (iBUG 300-W training data: NON-COMMERCIAL "
        "use only). Off = a 5-point mouth-region measure, fine for commercial work.",
    )  # fmt: skip
    lift: LiftSettings = nested(LiftSettings, prefix="lift_")

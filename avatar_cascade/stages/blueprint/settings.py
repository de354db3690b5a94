"""Blueprint settings: size, rate, windows, re-anchoring, seed and the blueprint's sampler."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from avatar_cascade.artefacts.timeline import check_clip_frames, parse_fps
from avatar_cascade.core.errors import InputError
from avatar_cascade.core.seeds import seed_setting
from avatar_cascade.core.settings import Settings, nested, setting, validator
from avatar_cascade.sampling.settings import SamplerSettings, size_setting
from avatar_cascade.stages.blueprint.plan import PROMPT_MODES


@dataclass(frozen=True, kw_only=True)
class BlueprintSettings(Settings):
    """Blueprint size, rate, windows and sampling (defaults suit Wan 2.1 at low cost).

    Attributes:
        width / height: blueprint resolution in pixels (multiples of 16).
        fps: blueprint frame rate (at most the video's).
        window_frames: frames per window (4n+1).
        seed: run seed; window ``w`` uses ``derive_seed(seed, w, salt=1)``.
        sampler: denoising settings (20 steps, shift 3.0: low resolution).
        overlap_frames: K, frames each window shares with the previous one (1 = last frame only).
        reanchor: 0..1 strength of the colour re-anchoring of continuation frames to the reference.
        prompt_mode: ``"majority"``, ``"centre"`` or ``"combine"`` (see :mod:`.plan`).
    """

    width: int = size_setting(320, "Blueprint width.")
    height: int = size_setting(192, "Blueprint height.")
    fps: float | str | Fraction = setting(
        8, kind="FLOAT", tooltip="Blueprint frame rate (at most the video fps).", min=1.0, max=60.0, step=0.5,
        validate=validator(parse_fps), cli_text=True, fix="use a lower rate, e.g. 8",
    )  # fmt: skip
    window_frames: int = setting(
        33, tooltip="Frames per blueprint window (4n+1).", min=5, max=257, step=4,
        validate=validator(check_clip_frames), fix="use 17, 33 or 49",
    )  # fmt: skip
    seed: int = seed_setting("Run seed; each window/clip derives its own seed from it.")
    sampler: SamplerSettings = nested(SamplerSettings, steps=20, guidance=5.0, shift=3.0)
    overlap_frames: int = setting(
        1, tooltip="Frames each window shares with the previous one: conditioned on its last frames "
        "and cross-faded with them. 1 = continue from the last frame; 5 or 9 = whole latent frames.",
        min=1, max=253, fix="use 1 (continue from the last frame) or 5 / 9 (whole latent frames)",
    )  # fmt: skip
    reanchor: float = setting(
        0.5, tooltip="How strongly the continuation frames are colour-matched to the reference before "
        "they condition the next window (stops colour drift from compounding; 0 = off).",
        min=0.0, max=1.0, step=0.05, fix="use 0.5",
    )  # fmt: skip
    prompt_mode: str = setting(
        "majority", tooltip="A window spanning several shots is prompted with the shot covering most of it "
        "(majority), the shot at its centre, or all of them in order (combine).", choices=PROMPT_MODES,
    )  # fmt: skip

    def check_together(self) -> None:
        if not 1 <= self.overlap_frames <= self.window_frames - 4:
            raise InputError(
                "overlap_frames",
                self.overlap_frames,
                f"must be 1 to window_frames - 4 ({self.window_frames - 4}) so each window adds new frames",
                "use 1 (continue from the last frame) or 5 / 9 (whole latent frames)",
            )

    def key_parts(self) -> dict:
        """What of these settings determines the blueprint's pixels (for its content key)."""
        return {
            "size": [self.width, self.height],
            "fps": str(parse_fps(self.fps)),
            "window_frames": self.window_frames,
            "overlap_frames": self.overlap_frames,
            "reanchor": self.reanchor,
            "prompt_mode": self.prompt_mode,
            "seed": self.seed,
            "sampler": vars(self.sampler),
        }

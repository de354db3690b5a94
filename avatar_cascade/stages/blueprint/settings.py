"""Blueprint settings: size and framing, rate, reference-anchored windows, seed, batching and the sampler."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from avatar_cascade.artefacts.timeline import check_clip_frames, parse_fps
from avatar_cascade.core.errors import InputError
from avatar_cascade.core.seeds import seed_setting
from avatar_cascade.core.settings import Settings, nested, setting, validator
from avatar_cascade.media.framing import framing_setting
from avatar_cascade.sampling.settings import SamplerSettings, size_setting
from avatar_cascade.stages.blueprint.plan import PROMPT_MODES


@dataclass(frozen=True, kw_only=True)
class BlueprintSettings(Settings):
    """Blueprint size, rate, windows and sampling.

    Attributes:
        width / height: requested blueprint resolution in pixels (multiples of 16); with
            ``framing = "bucket"`` the area, the aspect following the reference.
        framing: ``"bucket"``, ``"crop"`` or ``"pad"`` (see :mod:`avatar_cascade.media.framing`).
        fps: blueprint frame rate (at most the video's).
        window_frames: frames per window (4n+1).
        lead_frames: frames each window (after the first) renders before its chunk and drops: every
            window starts from the reference image, these frames carry it into the window's motion.
        seed: run seed; window ``w`` uses ``derive_seed(seed, w, salt=1)``.
        batch_size: windows per forward pass (they are independent; 0 = automatic).
        sampler: denoising settings (``auto`` = the DiT's preset).
        prompt_mode: ``"majority"``, ``"centre"`` or ``"combine"`` (see :mod:`.plan`).
    """

    width: int = size_setting(320, "Blueprint width (with framing 'bucket': the area; the aspect follows the image).")
    height: int = size_setting(192, "Blueprint height (with framing 'bucket': the area; the aspect follows the image).")
    framing: str = framing_setting()
    fps: float | str | Fraction = setting(
        8, kind="FLOAT", tooltip="Blueprint frame rate (at most the video fps).", min=1.0, max=60.0, step=0.5,
        validate=validator(parse_fps), cli_text=True, fix="use a lower rate, e.g. 8",
    )  # fmt: skip
    window_frames: int = setting(
        33, tooltip="Frames per blueprint window (4n+1).", min=5, max=257, step=4,
        validate=validator(check_clip_frames), fix="use 17, 33 or 49",
    )  # fmt: skip
    lead_frames: int = setting(
        8, tooltip="Every window starts from the reference image; this many of its first frames (after the "
        "first window) carry it into motion and are dropped. More = smoother keyframes, more compute.",
        min=1, max=253, fix="use 8",
    )  # fmt: skip
    seed: int = seed_setting("Run seed; each window/clip derives its own seed from it.")
    batch_size: int = setting(
        0, tooltip="Windows per forward pass (windows are independent); 0 = automatic from free memory.",
        min=0, max=64, fix="use 0",
    )  # fmt: skip
    sampler: SamplerSettings = nested(SamplerSettings)
    prompt_mode: str = setting(
        "majority", tooltip="A window spanning several shots is prompted with the shot covering most of it "
        "(majority), the shot at its centre, or all of them in order (combine).", choices=PROMPT_MODES,
    )  # fmt: skip

    def check_together(self) -> None:
        if not 1 <= self.lead_frames <= self.window_frames - 4:
            raise InputError(
                "lead_frames",
                self.lead_frames,
                f"must be 1 to window_frames - 4 ({self.window_frames - 4}) so each window adds new frames",
                "use 8",
            )

    def key_parts(self, sampler: SamplerSettings) -> dict:
        """What of these settings determines the blueprint's pixels (for its content key), with the
        resolved ``sampler``."""
        return {
            "fps": str(parse_fps(self.fps)),
            "window_frames": self.window_frames,
            "lead_frames": self.lead_frames,
            "prompt_mode": self.prompt_mode,
            "seed": self.seed,
            "sampler": sampler.key_parts(),
        }

"""Model presets: each DiT family's reference sampling settings, with the source of every value.

The values live in ``configs/presets.json`` (bundled with the package). A stage resolves its
``auto`` sampler settings with :func:`preset_for` (the loaded DiT's family; the InfiniteTalk
preset when an audio adapter is attached) and :meth:`ModelPreset.shift_at` (the shift of the
nearest trained resolution). :func:`regime_warnings` lists where a run leaves the regime the
model was trained for, so the artist can be told.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CONFIG = Path(__file__).resolve().parent.parent / "configs" / "presets.json"
INFINITETALK = "infinitetalk"
DEMO_TASK = "demo"


@dataclass(frozen=True)
class ModelPreset:
    """Reference defaults of one model family (see ``configs/presets.json`` for the sources).

    Attributes:
        name / label: preset id and a readable name.
        task: ``"i2v"``, ``"flf2v"``, ``"ti2v"``, ``"i2v+audio"`` or ``"demo"``.
        steps, guidance, guidance_2, scheduler, audio_guidance: sampler defaults.
        shift: flow shift per trained resolution (``{"480p": 3.0, "720p": 5.0}``).
        trained_frames: clip length (pixel frames) the model was trained on.
        fps: frame rate it was trained at.
        size_multiple: each side a multiple of this (VAE stride x patch size).
        areas: trained resolutions ``{"480p": (w, h)}`` (their areas pick the shift).
        negative_prompt: the family's default negative prompt (Wan's own).
        sources: where each value comes from.
    """

    name: str
    label: str
    task: str
    steps: int
    guidance: float
    guidance_2: float | None
    scheduler: str
    shift: dict[str, float]
    trained_frames: int
    fps: float
    size_multiple: int
    areas: dict[str, tuple[int, int]]
    negative_prompt: str
    audio_guidance: float = 4.0
    trained_base: tuple[str, ...] = ()
    sources: dict[str, str] = field(default_factory=dict)

    def shift_at(self, width: int, height: int) -> float:
        """The shift of the trained resolution nearest (in area, log scale) to ``width x height``."""
        return self.shift[self.tier_at(width, height)]

    def tier_at(self, width: int, height: int) -> str:
        """``"480p"`` or ``"720p"``: the trained resolution nearest in area that has a shift."""
        import math

        area = max(1, width * height)
        tiers = [t for t in self.areas if t in self.shift] or list(self.shift)
        return min(tiers, key=lambda t: abs(math.log(area / (self.areas[t][0] * self.areas[t][1]))))

    def trained_area(self, width: int, height: int) -> int:
        w, h = self.areas[self.tier_at(width, height)]
        return w * h


@functools.lru_cache(maxsize=1)
def _table() -> dict[str, Any]:
    return json.loads(CONFIG.read_text(encoding="utf-8"))


@functools.cache
def preset(name: str) -> ModelPreset:
    """The preset named ``name`` (a key of ``presets`` in the config)."""
    table = _table()
    raw = dict(table["presets"][name])
    raw["negative_prompt"] = table["negative_prompts"][raw["negative_prompt"]]["text"]
    raw["areas"] = {k: tuple(v) for k, v in raw["areas"].items()}
    raw["trained_base"] = tuple(raw.get("trained_base", ()))
    return ModelPreset(name=name, **raw)


def preset_names() -> list[str]:
    return list(_table()["presets"])


def negative_prompt_source() -> str:
    return _table()["negative_prompts"]["wan"]["source"]


def family_of(variant: str) -> str:
    """The preset name of a DiT variant; unknown (custom) variants get Wan 2.1 I2V's."""
    return _table()["variants"].get(variant, "wan2.1-i2v-14b")


def preset_for(dit, *, with_audio: bool | None = None) -> ModelPreset:
    """The preset that applies to ``dit`` (a ``WanDiT`` handle): InfiniteTalk's when an audio adapter is
    attached (``with_audio`` None) or ``with_audio`` is True, else its family's. The tiny demo DiTs keep
    their demo preset."""
    variant = getattr(dit, "variant", "unknown")
    base = preset(family_of(variant))
    audio = getattr(dit, "audio_adapter", None) is not None if with_audio is None else with_audio
    if audio and base.task != DEMO_TASK:
        return preset(INFINITETALK)
    return base


def dit_task(dit) -> str:
    """What a DiT was trained for, from its architecture: ``"flf2v"`` (Wan 2.1 FLF2V image embedder),
    ``"i2v"`` (first frame only), ``"ti2v"`` or ``"demo"``."""
    p = preset(family_of(getattr(dit, "variant", "unknown")))
    if p.task == DEMO_TASK:
        return DEMO_TASK
    if getattr(dit, "image_tokens_per_frame_pair", None) is not None:
        return "flf2v"
    return p.task


def regime_warnings(
    dit, *, fps=None, clip_frames: int | None = None, last_frame: bool = False, size: tuple[int, int] | None = None
) -> list[str]:
    """Where a run leaves the regime the DiT (and its adapter) was trained for: one sentence each.

    Args:
        dit: the ``WanDiT`` handle.
        fps: the video frame rate the DiT renders at (None = not checked).
        clip_frames: the longest clip it renders (None = not checked).
        last_frame: True when clips are pinned to a last frame too (first-last-frame refinement).
        size: ``(width, height)`` of the frames it renders (None = not checked): more than 25 % off the
            area of every trained resolution, or sides that are not multiples of ``size_multiple``.
    """
    task = dit_task(dit)
    if task == DEMO_TASK:
        return []
    p = preset_for(dit)
    out = []
    adapter = getattr(dit, "audio_adapter", None) is not None
    if adapter and task == "flf2v":
        out.append(
            "InfiniteTalk on a Wan 2.1 FLF2V DiT: the adapter was trained on Wan 2.1 I2V 14B 480P, not FLF2V "
            "(load Wan2.1-I2V-14B-480P for lip-sync as trained)"
        )
    if last_frame and task in ("i2v", "ti2v"):
        out.append(
            f"{dit.variant} was trained for first-frame (image-to-video) conditioning; the refiner also pins "
            "each clip's last frame (use a Wan 2.1 FLF2V DiT for first-last-frame clips as trained)"
        )
    if fps is not None and abs(float(fps) - p.fps) > 0.01:
        out.append(f"{p.label} was trained at {p.fps:g} fps; this video is {float(fps):g} fps (motion speed differs)")
    if size is not None:
        out += _size_warnings(p, *size)
    if clip_frames is not None and clip_frames > p.trained_frames:
        out.append(
            f"clips of up to {clip_frames} frames: {p.label} was trained on {p.trained_frames} "
            f"(set clip_frames / max_clip_frames to {p.trained_frames} or less)"
        )
    return out


def _size_warnings(p: ModelPreset, width: int, height: int) -> list[str]:
    """Where ``width x height`` leaves the preset's trained resolutions (area within 25 %, sides multiples)."""
    import math

    out = []
    trained = " and ".join(f"{w}x{h} ({tier})" for tier, (w, h) in p.areas.items())
    near = min(abs(math.log(width * height / (w * h))) for w, h in p.areas.values())
    if near > math.log(1.25):
        out.append(
            f"frames of {width}x{height}: {p.label} was trained at {trained} (pixel counts far from those give "
            "softer or repeated content; use a size near one of them)"
        )
    if width % p.size_multiple or height % p.size_multiple:
        out.append(f"frames of {width}x{height}: {p.label} takes sides that are multiples of {p.size_multiple}")
    return out

"""The control input of a command-line run: files -> one :class:`ControlVideo` for the refiner.

Sources (any mix; later layers are drawn over earlier ones where they have content):

* ``video``: a control video file (depth, normal, semantic map, skeleton or line-art video from any
  preprocessor), placed at its own exact frame rate;
* ``pose_json``: OpenPose / DWPose keypoint JSON (a list of frames at ``fps``, default the output
  rate), drawn as OpenPose skeletons, retargeted to ``reference_pose_json`` when given;
* ``lineart``: True draws the dense layers' XDoG line art instead of the layers themselves;
* ``sketches``: ``[(image file, output frame)]``: sparse sketch keys (ToonCrafter-style), used alone.

``blueprint``: the control also guides the blueprint (its DiT must then be a Wan VACE DiT too).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import torch

from avatar_cascade.artefacts.control import ControlVideo
from avatar_cascade.artefacts.timeline import parse_fps
from avatar_cascade.core.errors import InputError
from avatar_cascade.media.framing import fit_frames


@dataclass
class ControlSpec:
    """What the command line names for the control (see the module docstring)."""

    video: Path | None = None
    pose_json: Path | None = None
    reference_pose_json: Path | None = None
    fps: str | None = None
    start_frame: int = 0
    strength: float = 1.0
    lineart: bool = False
    sketches: list[tuple[Path, int]] = field(default_factory=list)
    sketch_dark_on_white: bool = False
    blueprint: bool = False

    @property
    def given(self) -> bool:
        return bool(self.video or self.pose_json or self.sketches)


def _text(path: Path, input_name: str) -> str:
    from avatar_cascade.media.files import check_file

    return check_file(path, input_name, "keypoint JSON").read_text(encoding="utf-8")


def _sketch_control(spec: ControlSpec, width: int, height: int) -> ControlVideo:
    from avatar_cascade.media import load_image

    images = [load_image(p, input_name="--sketch") for p, _ in spec.sketches]
    u8 = torch.cat([fit_frames((im * 255).round().to(torch.uint8)[None], width, height) for im in images])
    if spec.sketch_dark_on_white:
        u8 = 255 - u8
    return ControlVideo(u8, keys=tuple(f for _, f in spec.sketches), strength=spec.strength)


def _as_flag(flag: str, check, *args) -> None:
    """``check(*args)``, its InputError naming the command-line flag ``flag``."""
    try:
        check(*args)
    except InputError as exc:
        raise InputError(flag, exc.value, exc.problem, exc.fix) from None


def check_control_early(
    spec: ControlSpec | None, dit, backend: str, blueprint_dit=None, vace_reference: bool = False
) -> None:
    """Before any generation: the control's files exist, the refiner's DiT can take a control (and VACE
    reference images with ``vace_reference``), and with ``spec.blueprint`` the blueprint's DiT too."""
    from avatar_cascade.media.files import check_file
    from avatar_cascade.stages.refiner.control import check_control

    if vace_reference:
        _as_flag("--vace-reference", check_control, dit, None, backend, True)
    if spec is None or not spec.given:
        if spec is not None and spec.blueprint:
            raise InputError("--control-blueprint", True, "there is no control input", "add --control, "
                             "--pose-json or --sketch, or drop --control-blueprint")  # fmt: skip
        return
    check_control(dit, spec, backend)
    if spec.blueprint:
        _as_flag("--control-blueprint", check_control, blueprint_dit, spec)
    named = [("--control", spec.video), ("--pose-json", spec.pose_json)]
    named += [("--reference-pose-json", spec.reference_pose_json)] + [("--sketch", p) for p, _ in spec.sketches]
    for name, path in named:
        if path is not None:
            check_file(path, name, "control")


def build_control(spec: ControlSpec | None, width: int, height: int) -> ControlVideo | None:
    """The run's :class:`ControlVideo` at about the refine size ``width x height`` (None when nothing is given)."""
    if spec is None or not spec.given:
        return None
    if spec.sketches:
        if spec.video or spec.pose_json:
            raise InputError("--sketch", "with --control", "sketch keys go alone", "drop --control / --pose-json")
        return _sketch_control(spec, width, height)
    from avatar_cascade.media.guidance.composite import composite_layers

    layers, rate = [], parse_fps(spec.fps) if spec.fps else None
    if spec.video:
        from avatar_cascade.media.guidance.video_in import read_control_video

        frames, video_rate = read_control_video(spec.video, "--control", max_side=max(width, height))
        layers.append(fit_frames(frames, width, height))
        rate = rate or video_rate
    if spec.pose_json:
        from avatar_cascade.media.guidance.frames import skeleton_frames

        ref = _text(spec.reference_pose_json, "--reference-pose-json") if spec.reference_pose_json else None
        layers.append(fit_frames(skeleton_frames(_text(spec.pose_json, "--pose-json"), reference=ref), width, height))
    if spec.lineart:
        from avatar_cascade.media.guidance.frames import lineart_frames

        layers = [lineart_frames(x.float() / 255) for x in layers]
    if len(layers) == 2 and len(layers[0]) != len(layers[1]):
        n = min(len(x) for x in layers)
        layers = [x[:n] for x in layers]
    return ControlVideo(composite_layers(layers), fps=Fraction(rate) if rate else None,
                        start_frame=spec.start_frame, strength=spec.strength)  # fmt: skip

"""The blueprint under a control video: a Wan VACE blueprint DiT renders its windows guided.

With a VACE DiT (:mod:`avatar_cascade.sampling.vace_requests`, shared with the refiner) every blueprint
window reads its exact slice of the :class:`~avatar_cascade.artefacts.control.ControlVideo` over the
blueprint frames it renders, at the blueprint's size: window frame ``j`` shows time ``(start + j) /
blueprint_fps`` and gets the control frame shown then (:meth:`ControlVideo.slice_at`, exact rational
arithmetic: dense control frame ``floor((t - start_frame / fps_out) * fps_control)``; a sparse sketch key
``k`` when ``t`` falls in output frame ``k``'s span, so a blueprint slower than the output can step over
a key). The window's frame 0, the reference, sits at mask 0 (known) over its control. A window no control
frame reaches, and every window without a control input, renders unguided (grey, mask 1, strength 1).

Without a VACE DiT nothing here runs (a control input is refused); the blueprint's plain path and its key
are untouched.
"""

from __future__ import annotations

from fractions import Fraction

from avatar_cascade.artefacts.control import ControlVideo
from avatar_cascade.core.errors import InputError
from avatar_cascade.models.wan_vace import is_vace
from avatar_cascade.sampling.vace_requests import ClipControl, check_control, unguided
from avatar_cascade.stages.blueprint.plan import BlueprintWindow, window_times


def check_blueprint_dit(dit, control: ControlVideo | None) -> None:
    """An image-to-video DiT (36 input channels) or a Wan VACE DiT; a control input only with VACE."""
    check_control(dit, control)
    if dit.in_channels != 36 and not is_vace(dit):
        raise InputError(
            "dit",
            dit.variant,
            "the blueprint needs an image-to-video DiT (36 input channels) or a Wan VACE DiT",
            "load a Wan 2.1 I2V / FLF2V, Wan 2.2 I2V or Wan 2.1 VACE checkpoint",
        )


def window_control(
    control: ControlVideo | None, window: BlueprintWindow, bp_fps: Fraction, out_fps: Fraction, height: int,
    width: int,
) -> ClipControl:  # fmt: skip
    """Window ``window``'s control slice at ``width x height`` (see the module docstring)."""
    if control is None:
        return unguided(window.length, height, width)
    frames, masks, idx = control.slice_at(window_times(window, bp_fps), out_fps, height, width)
    if all(i is None for i in idx):
        return unguided(window.length, height, width)
    return ClipControl(frames, masks, float(control.strength), False)


def control_key(dit, control: ControlVideo | None) -> dict:
    """What the control adds to the blueprint's key: nothing for a plain DiT (its key stays as it was)."""
    if not is_vace(dit):
        return {}
    return {"vace": control.identity() if control is not None else None}

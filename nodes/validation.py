"""Widget checks shared by the nodes' VALIDATE_INPUTS: a message that says what to change, or True."""

from __future__ import annotations

from avatar_cascade.core.errors import InputError


def validate_widgets(**values) -> bool | str:
    """Run the engine's own checks on the widget values that are known (constants) before a run."""
    from avatar_cascade.artefacts.timeline import check_clip_frames, parse_fps
    from avatar_cascade.core.seeds import check_seed
    from avatar_cascade.sampling.settings import SCHEDULERS, check_resolution

    try:
        for name, v in values.items():
            if v is None:
                continue
            if name in ("fps", "blueprint_fps"):
                parse_fps(v)
            elif name == "clip_frames":
                check_clip_frames(int(v))
            elif name == "window_frames":
                _window(v)
            elif name == "seed":
                check_seed(int(v))
            elif name == "scheduler" and v not in SCHEDULERS:
                raise InputError("scheduler", v, "is not a known sampler", f"choose one of {', '.join(SCHEDULERS)}")
        if values.get("width") is not None and values.get("height") is not None:
            check_resolution(int(values["width"]), int(values["height"]))
    except InputError as exc:
        return str(exc)
    return True


def _window(v) -> None:
    from avatar_cascade.artefacts.timeline import check_clip_frames

    try:
        check_clip_frames(int(v))
    except InputError as exc:
        raise InputError("window_frames", v, exc.problem, exc.fix) from None

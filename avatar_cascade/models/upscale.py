"""Upscale models (ESRGAN, Real-ESRGAN Compact, SwinIR, ... from ``models/upscale_models``) through spandrel.

What ComfyUI's ``UpscaleModelLoader`` does, with this pack's file checks: the file is read as
safetensors only (never a pickle), a ``module.`` prefix (DataParallel checkpoints) is removed,
spandrel recognises the architecture from the keys and builds it; the result is a spandrel
``ImageModelDescriptor`` in eval mode, the object ComfyUI passes around as ``UPSCALE_MODEL``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from avatar_cascade.core.errors import ModelFileError
from avatar_cascade.models.files import read_safetensors, resolve_model_path

log = logging.getLogger(__name__)

UPSCALE_FOLDER = "upscale_models"


def resolve_upscale_model(models_dir: str | Path, name: str, input_name: str = "--upscale-model") -> Path:
    """``name`` resolved strictly inside ``models_dir/upscale_models`` (no absolute paths, no ``..``)."""
    return resolve_model_path([Path(models_dir) / UPSCALE_FOLDER], name, input_name=input_name)


def load_upscale_model(path: str | Path, input_name: str = "upscale_model") -> Any:
    """A spandrel ``ImageModelDescriptor`` (eval mode, on CPU) from a ``.safetensors`` upscale model.

    Raises :class:`ModelFileError` naming ``input_name`` for a file that is not safetensors, is
    truncated, is no architecture spandrel knows, or is not a single-image model (e.g. inpainting).
    """
    import spandrel

    state_dict, _ = read_safetensors(path, input_name)
    if any(k.startswith("module.") for k in state_dict):
        state_dict = {k.removeprefix("module."): v for k, v in state_dict.items()}
    try:
        descriptor = spandrel.ModelLoader().load_from_state_dict(state_dict)
    except spandrel.UnsupportedModelError as exc:
        raise ModelFileError(
            input_name,
            Path(path).name,
            "is no upscale-model architecture spandrel knows (ESRGAN, Real-ESRGAN, SwinIR, HAT, ...)",
            "pick an image upscale model in models/upscale_models/",
        ) from exc
    if not isinstance(descriptor, spandrel.ImageModelDescriptor):
        raise ModelFileError(
            input_name,
            Path(path).name,
            f"is a {descriptor.architecture.name} {type(descriptor).__name__}, not a single-image model",
            "pick an upscale model (one image in, a larger image out)",
        )
    log.info("upscale model %s: %s x%d", Path(path).name, descriptor.architecture.name, descriptor.scale)
    return descriptor.eval()


def check_upscale_model(model: Any, input_name: str = "upscale_model") -> Any:
    """``model`` if it is a spandrel image model with 3 colour channels in and out, else an error."""
    from avatar_cascade.core.errors import InputError

    usable = hasattr(model, "scale") and hasattr(model, "input_channels") and callable(model)
    if not usable:
        raise InputError(
            input_name, type(model).__name__, "is not an upscale model", "connect a Load Upscale Model output"
        )
    if model.input_channels != 3 or model.output_channels != 3:
        raise InputError(
            input_name,
            f"{model.input_channels} -> {model.output_channels} channels",
            "the stitcher upscales RGB frames",
            "use an RGB upscale model (3 channels in and out)",
        )
    return model

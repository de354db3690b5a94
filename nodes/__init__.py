"""ComfyUI nodes of Avatar Cascade (V1 API): thin classes over the ``avatar_cascade`` engine."""

from . import (
    audio_aligner,
    blueprint,
    control,
    director,
    inbetween,
    interpolator,
    lipsync,
    loaders,
    lora,
    quality,
    refiner,
)

NODE_CLASS_MAPPINGS: dict = {}
NODE_DISPLAY_NAME_MAPPINGS: dict = {}
_MODULES = (loaders, lora, lipsync, audio_aligner, director, blueprint, refiner, inbetween, interpolator, quality)
for _m in (*_MODULES, control):
    NODE_CLASS_MAPPINGS.update(_m.NODE_CLASS_MAPPINGS)
    NODE_DISPLAY_NAME_MAPPINGS.update(_m.NODE_DISPLAY_NAME_MAPPINGS)

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]

"""Frame-interpolator loader node: RIFE 4.x weights (safetensors) from models/frame_interpolation."""

from __future__ import annotations

from . import comfy_bridge as bridge

FOLDER = "frame_interpolation"  # ComfyUI core's folder name (folder_paths), models/frame_interpolation


class AvatarCascadeFrameInterpolatorLoader:
    DESCRIPTION = (
        "Loads a RIFE 4.x frame interpolator (Practical-RIFE 4.7 / 4.9 / 4.17 - 4.25 IFNet weights, a .pth "
        "converted to .safetensors with its keys unchanged) from models/frame_interpolation, for the Clip "
        "Stitcher's interpolation 'rife'. Only safetensors are read; the weights load strictly."
    )
    CATEGORY = "AvatarCascade/loaders"
    RETURN_TYPES = ("AVATAR_INTERPOLATOR",)
    RETURN_NAMES = ("interpolator",)
    OUTPUT_TOOLTIPS = ("The RIFE IFNet; connect it to the Clip Stitcher's interpolator_model.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model_name": (
                    bridge.list_models(FOLDER),
                    {"tooltip": "RIFE flownet .safetensors in models/frame_interpolation (e.g. rife49.safetensors)."},
                )
            }
        }

    def load(self, model_name):
        from avatar_cascade.models.rife import load_rife

        return (load_rife(bridge.resolve_model(FOLDER, model_name, "model_name"), input_name="model_name"),)


NODE_CLASS_MAPPINGS = {"AvatarCascadeFrameInterpolatorLoader": AvatarCascadeFrameInterpolatorLoader}
NODE_DISPLAY_NAME_MAPPINGS = {
    "AvatarCascadeFrameInterpolatorLoader": "Avatar Cascade: Load Frame Interpolator (RIFE)",
}

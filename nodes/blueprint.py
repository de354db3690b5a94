"""Blueprint DiT Sampler node: the whole duration at low resolution."""

from __future__ import annotations

from . import comfy_bridge as bridge
from ._common import MODEL_INPUTS, sampler_inputs
from .validation import validate_widgets


class AvatarCascadeBlueprintSampler:
    DESCRIPTION = (
        "Renders the blueprint: the whole performance at low resolution and low frame rate, in windows "
        "that continue from each other, conditioned on the reference image and the storyline's shot "
        "prompts. Keyframes are taken from it."
    )
    CATEGORY = "AvatarCascade/stages"
    RETURN_TYPES = ("AVATAR_BLUEPRINT",)
    RETURN_NAMES = ("blueprint",)
    OUTPUT_TOOLTIPS = ("Low-res frames of the whole duration.",)
    FUNCTION = "render"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                **MODEL_INPUTS,
                "image": ("IMAGE", {"tooltip": "Reference image (first frame of the first window)."}),
                "timeline": ("AVATAR_TIMELINE", {"tooltip": "From the Audio Aligner."}),
                "storyline": ("AVATAR_STORYLINE", {"tooltip": "From the Director or Storyline Edit."}),
                "width": ("INT", {"default": 320, "min": 16, "max": 4096, "step": 16, "tooltip": "Blueprint width."}),
                "height": ("INT", {"default": 192, "min": 16, "max": 4096, "step": 16, "tooltip": "Blueprint height."}),
                "blueprint_fps": (
                    "FLOAT",
                    {
                        "default": 8.0,
                        "min": 1.0,
                        "max": 60.0,
                        "step": 0.5,
                        "tooltip": "Blueprint frame rate (at most the video fps).",
                    },
                ),
                "window_frames": (
                    "INT",
                    {"default": 33, "min": 5, "max": 257, "step": 4, "tooltip": "Frames per blueprint window (4n+1)."},
                ),
                **sampler_inputs(20, 5.0, 3.0),
            }
        }

    @classmethod
    def VALIDATE_INPUTS(
        cls, width=None, height=None, blueprint_fps=None, window_frames=None, seed=None, scheduler=None, **_
    ):
        return validate_widgets(
            width=width,
            height=height,
            blueprint_fps=blueprint_fps,
            window_frames=window_frames,
            seed=seed,
            scheduler=scheduler,
        )

    def render(
        self,
        dit,
        vae,
        text_encoder,
        image,
        timeline,
        storyline,
        width,
        height,
        blueprint_fps,
        window_frames,
        steps,
        guidance,
        shift,
        scheduler,
        seed,
    ):
        from avatar_cascade.blueprint import BlueprintSettings, render_blueprint
        from avatar_cascade.media import check_image_tensor
        from avatar_cascade.sampling import SamplerSettings

        settings = BlueprintSettings(
            width, height, blueprint_fps, window_frames, seed, SamplerSettings(steps, guidance, shift, scheduler)
        )
        ref = check_image_tensor(image, "image")
        bp = render_blueprint(dit, vae, text_encoder, ref, timeline, storyline, settings, bridge.make_runtime())
        return (bp,)


class AvatarCascadeKeyframeExtractor:
    DESCRIPTION = (
        "Picks one keyframe at every seam of the timeline from the blueprint (scored on sharpness, colour "
        "consistency with the reference and closeness to the seam), lifts it to the refine resolution and "
        "matches its colours to the reference. The first keyframe is the reference image."
    )
    CATEGORY = "AvatarCascade/stages"
    RETURN_TYPES = ("AVATAR_KEYFRAMES", "IMAGE")
    RETURN_NAMES = ("keyframes", "keyframe_images")
    OUTPUT_TOOLTIPS = ("Keyframes with their scores.", "The keyframes as an IMAGE batch (one per seam).")
    FUNCTION = "extract"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "blueprint": ("AVATAR_BLUEPRINT", {"tooltip": "From the Blueprint Sampler."}),
                "timeline": ("AVATAR_TIMELINE", {"tooltip": "From the Audio Aligner."}),
                "image": ("IMAGE", {"tooltip": "Reference image."}),
                "width": ("INT", {"default": 832, "min": 16, "max": 4096, "step": 16, "tooltip": "Refine width."}),
                "height": ("INT", {"default": 480, "min": 16, "max": 4096, "step": 16, "tooltip": "Refine height."}),
                "search_radius_s": (
                    "FLOAT",
                    {
                        "default": 0.25,
                        "min": 0.0,
                        "max": 5.0,
                        "step": 0.05,
                        "tooltip": "Candidates lie within this many seconds of each seam.",
                    },
                ),
                "colour_match": (
                    "FLOAT",
                    {
                        "default": 1.0,
                        "min": 0.0,
                        "max": 1.0,
                        "step": 0.05,
                        "tooltip": "Strength of colour matching to the reference.",
                    },
                ),
            }
        }

    @classmethod
    def VALIDATE_INPUTS(cls, width=None, height=None, **_):
        return validate_widgets(width=width, height=height)

    def extract(self, blueprint, timeline, image, width, height, search_radius_s, colour_match):
        from avatar_cascade.keyframes import extract_keyframes
        from avatar_cascade.media import check_image_tensor

        ref = check_image_tensor(image, "image")
        kf = extract_keyframes(
            blueprint,
            timeline,
            ref,
            width,
            height,
            bridge.make_runtime(),
            search_radius_s=search_radius_s,
            colour_match=colour_match,
        )
        images = kf.images.float().div(255).to(bridge.intermediate_device())
        return (kf, images)


NODE_CLASS_MAPPINGS = {
    "AvatarCascadeBlueprintSampler": AvatarCascadeBlueprintSampler,
    "AvatarCascadeKeyframeExtractor": AvatarCascadeKeyframeExtractor,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "AvatarCascadeBlueprintSampler": "Avatar Cascade: Blueprint DiT Sampler",
    "AvatarCascadeKeyframeExtractor": "Avatar Cascade: Keyframe Extractor",
}

"""Blueprint DiT Sampler and Keyframe Extractor nodes."""

from __future__ import annotations

from pathlib import Path

from . import comfy_bridge as bridge
from ._common import (
    ADVANCED_SAMPLER_WIDGETS,
    MODEL_INPUTS,
    OPTIONAL_MODEL_INPUTS,
    SAMPLER_RENAME,
    SAMPLER_WIDGETS,
    NodeWidgets,
    wan_models,
    with_warnings,
)

KEEP_STORES = 4  # blueprints kept per work folder: ComfyUI may hold views of older ones in its cache
WORK_FOLDER = (
    "STRING",
    {
        "default": "cascade",
        "tooltip": "Work folder inside output/avatar_cascade_work/: results are stored there and reused when "
        "nothing that determines them changed.",
    },
)


def blueprint_widgets() -> NodeWidgets:
    from avatar_cascade.stages.blueprint.settings import BlueprintSettings

    names = ("width", "height", "framing", "blueprint_fps", "window_frames", "lead_frames", "prompt_mode")
    names += SAMPLER_WIDGETS + ("batch_size",) + ADVANCED_SAMPLER_WIDGETS
    return NodeWidgets(BlueprintSettings, names, {"blueprint_fps": "fps", **SAMPLER_RENAME})


def keyframe_widgets() -> NodeWidgets:
    from avatar_cascade.stages.keyframes.settings import KeyframeSettings

    names = ("width", "height", "framing", "search_radius_s", "colour_match", "weights", "lift_denoise")
    names += ("lift_steps", "seed", "face_detectors", "landmarks_68")
    return NodeWidgets(KeyframeSettings, names, {"seed": "lift_seed"})


def _ui_image(path: Path) -> dict:
    rel = path.resolve().relative_to(bridge.output_dir().resolve())
    sub = rel.parent.as_posix() if rel.parent != Path(".") else ""
    return {"images": [{"filename": rel.name, "subfolder": sub, "type": "output"}]}


class AvatarCascadeBlueprintSampler:
    DESCRIPTION = (
        "Renders the blueprint: the whole performance at low resolution and low frame rate, in windows that each "
        "start from the reference image (never from another window's frames, so nothing drifts at any length; with "
        "a CLIP-vision encoder also the reference's image tokens), with the storyline's shot prompts and, with an "
        "audio adapter, the audio. The reference is framed, never stretched (the size follows its aspect). Windows "
        "are independent and batched; frames go to disk as they are made; an unchanged blueprint is reused. "
        "Sampler widgets at 0 / -1 / auto take the DiT's preset. Keyframes are taken from it. With a Wan VACE DiT "
        "an optional control video guides every window."
    )
    CATEGORY = "AvatarCascade/stages"
    RETURN_TYPES = ("AVATAR_BLUEPRINT",)
    RETURN_NAMES = ("blueprint",)
    OUTPUT_TOOLTIPS = ("Low-res frames of the whole duration (a view of files in the work folder).",)
    FUNCTION = "render"

    @classmethod
    def settings_widgets(cls) -> tuple[NodeWidgets, ...]:
        return (blueprint_widgets(),)

    @classmethod
    def INPUT_TYPES(cls):
        w = blueprint_widgets()
        return {
            "required": {
                **MODEL_INPUTS,
                "image": ("IMAGE", {"tooltip": "Reference image (first frame of the first window)."}),
                "timeline": ("AVATAR_TIMELINE", {"tooltip": "From the Audio Aligner."}),
                "storyline": ("AVATAR_STORYLINE", {"tooltip": "From the Director or Storyline Edit."}),
                **w.inputs(*w.names[: -len(ADVANCED_SAMPLER_WIDGETS) - 1]),
                "work_folder": WORK_FOLDER,
            },
            "optional": {
                **OPTIONAL_MODEL_INPUTS,
                **w.inputs("batch_size", *ADVANCED_SAMPLER_WIDGETS),
                "control": (
                    "AVATAR_CONTROL",
                    {
                        "tooltip": "Optional, with a Wan VACE DiT: a control video (Control Video / Sketch Keys); "
                        "every window renders under its exact slice of it at the blueprint's rate and size."
                    },
                ),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, **widgets):
        return blueprint_widgets().validate(widgets)

    def render(
        self, dit, vae, text_encoder, image, timeline, storyline, work_folder, clip_vision=None, control=None, **widgets
    ):
        from avatar_cascade.media import check_image_tensor
        from avatar_cascade.stages.blueprint.sampler import render_blueprint

        settings = blueprint_widgets().build(widgets)
        ref = check_image_tensor(image, "image")
        runtime = bridge.make_runtime()
        bp = render_blueprint(
            wan_models(dit, vae, text_encoder, clip_vision),
            ref,
            timeline,
            storyline,
            settings,
            runtime,
            work_dir=bridge.work_dir(work_folder),
            keep_stores=KEEP_STORES,
            control=control,
        )
        return with_warnings(runtime, (bp,))


class AvatarCascadeKeyframeExtractor:
    DESCRIPTION = (
        "Picks one keyframe at every seam from the blueprint frames near it, scored on identity similarity to the "
        "reference (CLIP-vision embeddings when connected, else colour-histogram + layout similarity), sharpness, "
        "face visibility/clarity (skin-tone heuristics, no detector), mouth at rest (quiet audio, still lower face), "
        "colour consistency, closeness to the seam and difference from the previous keyframe. Lifts the picks to the "
        "refine resolution (framed, never stretched; refined by the DiT anchored on the reference whenever dit, vae "
        "and text_encoder are connected) and matches their colours to the reference. The first keyframe is the "
        "reference image. Shows a contact sheet with every score and each keyframe's anchor depth."
    )
    CATEGORY = "AvatarCascade/stages"
    RETURN_TYPES = ("AVATAR_KEYFRAMES", "IMAGE", "IMAGE")
    RETURN_NAMES = ("keyframes", "keyframe_images", "contact_sheet")
    OUTPUT_TOOLTIPS = (
        "Keyframes with all their scores.",
        "The keyframes as an IMAGE batch (one per seam).",
        "The chosen keyframes in a grid with their scores.",
    )
    FUNCTION = "extract"

    @classmethod
    def settings_widgets(cls) -> tuple[NodeWidgets, ...]:
        return (keyframe_widgets(),)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "blueprint": ("AVATAR_BLUEPRINT", {"tooltip": "From the Blueprint Sampler."}),
                "timeline": ("AVATAR_TIMELINE", {"tooltip": "From the Audio Aligner."}),
                "image": ("IMAGE", {"tooltip": "Reference image."}),
                **keyframe_widgets().inputs(*keyframe_widgets().names[:-2]),
                "work_folder": WORK_FOLDER,
            },
            "optional": {
                **keyframe_widgets().inputs("face_detectors", "landmarks_68"),  # optional: older graphs lack them
                **OPTIONAL_MODEL_INPUTS,
                **{
                    k: (v[0], {"tooltip": v[1]["tooltip"] + " Connect them for the DiT lift (lift_denoise > 0)."})
                    for k, v in MODEL_INPUTS.items()
                },
                "storyline": ("AVATAR_STORYLINE", {"tooltip": "Shot prompts for the refinement (else no prompt)."}),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, **widgets):
        return keyframe_widgets().validate(widgets)

    def extract(
        self,
        blueprint,
        timeline,
        image,
        work_folder,
        clip_vision=None,
        dit=None,
        vae=None,
        text_encoder=None,
        storyline=None,
        **widgets,
    ):
        from avatar_cascade.media import check_image_tensor
        from avatar_cascade.media.contact_sheet import as_uint8_tensor
        from avatar_cascade.stages.keyframes.extractor import extract_keyframes

        from .native_models import engine_model

        ref = check_image_tensor(image, "image")
        folder = bridge.work_dir(work_folder)
        # the lift's models (only for lift_denoise > 0; the extractor says what is missing)
        lift_models = (dit, vae, text_encoder)
        models = None if any(m is None for m in lift_models) else wan_models(*lift_models, clip_vision)
        clip_vision = engine_model(clip_vision, "clip_vision")
        runtime = bridge.make_runtime()
        kf = extract_keyframes(
            blueprint,
            timeline,
            ref,
            keyframe_widgets().build(widgets),
            runtime,
            models=models,
            clip_vision=clip_vision,
            storyline=storyline,
            work_dir=folder,
        )
        sheet = as_uint8_tensor(kf.contact_sheet())
        result = (kf, bridge.as_image(kf.images), bridge.as_image(sheet[None]))
        return with_warnings(runtime, result, _ui_image(folder / "keyframes" / "contact_sheet.png"))


NODE_CLASS_MAPPINGS = {
    "AvatarCascadeBlueprintSampler": AvatarCascadeBlueprintSampler,
    "AvatarCascadeKeyframeExtractor": AvatarCascadeKeyframeExtractor,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "AvatarCascadeBlueprintSampler": "Avatar Cascade: Blueprint DiT Sampler",
    "AvatarCascadeKeyframeExtractor": "Avatar Cascade: Keyframe Extractor",
}

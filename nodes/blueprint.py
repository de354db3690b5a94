"""Blueprint DiT Sampler and Keyframe Extractor nodes."""

from __future__ import annotations

import json
from pathlib import Path

from . import comfy_bridge as bridge
from ._common import MODEL_INPUTS, OPTIONAL_MODEL_INPUTS, advanced_sampler_inputs, sampler_inputs, sampler_settings
from .validation import validate_widgets

KEEP_STORES = 4  # blueprints kept per work folder: ComfyUI may hold views of older ones in its cache
WORK_FOLDER = (
    "STRING",
    {
        "default": "cascade",
        "tooltip": "Work folder inside output/avatar_cascade_work/: results are stored there and reused when "
        "nothing that determines them changed.",
    },
)


def _default_weights() -> str:
    from avatar_cascade.stages.keyframes.scores import DEFAULT_WEIGHTS

    return json.dumps(DEFAULT_WEIGHTS)


def parse_weights(text: str) -> dict:
    """Weights widget (JSON object of score name -> weight; empty = defaults) as a checked dict."""
    from avatar_cascade.core.errors import InputError
    from avatar_cascade.stages.keyframes.scores import check_weights

    text = (text or "").strip()
    if not text:
        return check_weights(None)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError("weights", text, f"is not valid JSON ({exc.msg})", 'write e.g. {"identity": 1.0}') from exc
    if not isinstance(data, dict):
        raise InputError("weights", text, "must be a JSON object", 'write e.g. {"identity": 1.0, "mouth": 0.5}')
    return check_weights(data)


def _ui_image(path: Path) -> dict:
    rel = path.resolve().relative_to(bridge.output_dir().resolve())
    sub = rel.parent.as_posix() if rel.parent != Path(".") else ""
    return {"images": [{"filename": rel.name, "subfolder": sub, "type": "output"}]}


class AvatarCascadeBlueprintSampler:
    DESCRIPTION = (
        "Renders the blueprint: the whole performance at low resolution and low frame rate, in windows that "
        "share overlap frames with the previous one (cross-faded), conditioned on the reference image (continuation "
        "frames colour-matched to it before each window; with a CLIP-vision encoder, the reference's image tokens in "
        "every window), the storyline's shot prompts and, with an audio adapter, the audio. Frames go to disk as they "
        "are made, so length costs disk, not memory; an unchanged blueprint is reused. Keyframes are taken from it."
    )
    CATEGORY = "AvatarCascade/stages"
    RETURN_TYPES = ("AVATAR_BLUEPRINT",)
    RETURN_NAMES = ("blueprint",)
    OUTPUT_TOOLTIPS = ("Low-res frames of the whole duration (a view of files in the work folder).",)
    FUNCTION = "render"

    @classmethod
    def INPUT_TYPES(cls):
        from avatar_cascade.stages.blueprint.plan import PROMPT_MODES

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
                "overlap_frames": (
                    "INT",
                    {
                        "default": 1,
                        "min": 1,
                        "max": 253,
                        "tooltip": "Frames each window shares with the previous one: conditioned on its last frames "
                        "and cross-faded with them. 1 = continue from the last frame; 5 or 9 = whole latent frames.",
                    },
                ),
                "reanchor": (
                    "FLOAT",
                    {
                        "default": 0.5,
                        "min": 0.0,
                        "max": 1.0,
                        "step": 0.05,
                        "tooltip": "How strongly the continuation frames are colour-matched to the reference before "
                        "they condition the next window (stops colour drift from compounding; 0 = off).",
                    },
                ),
                "prompt_mode": (
                    list(PROMPT_MODES),
                    {
                        "default": "majority",
                        "tooltip": "A window spanning several shots is prompted with the shot covering most of it "
                        "(majority), the shot at its centre, or all of them in order (combine).",
                    },
                ),
                **sampler_inputs(20, 5.0, 3.0),
                "work_folder": WORK_FOLDER,
            },
            "optional": {**OPTIONAL_MODEL_INPUTS, **advanced_sampler_inputs()},
        }

    @classmethod
    def VALIDATE_INPUTS(
        cls,
        width=None,
        height=None,
        blueprint_fps=None,
        window_frames=None,
        overlap_frames=None,
        seed=None,
        scheduler=None,
        **_,
    ):
        msg = validate_widgets(
            width=width,
            height=height,
            blueprint_fps=blueprint_fps,
            window_frames=window_frames,
            seed=seed,
            scheduler=scheduler,
        )
        if msg is True and window_frames is not None and overlap_frames is not None:
            if not 1 <= int(overlap_frames) <= int(window_frames) - 4:
                return (
                    f"overlap_frames = {overlap_frames}: must be 1 to window_frames - 4 ({int(window_frames) - 4}). "
                    "Fix: use 1, or 5 / 9 with longer windows"
                )
        return msg

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
        overlap_frames,
        reanchor,
        prompt_mode,
        steps,
        guidance,
        shift,
        scheduler,
        seed,
        work_folder,
        clip_vision=None,
        guidance_low_noise=-1.0,
        audio_guidance=4.0,
    ):
        from avatar_cascade.media import check_image_tensor
        from avatar_cascade.stages.blueprint.sampler import BlueprintSettings, render_blueprint

        sampler = sampler_settings(steps, guidance, shift, scheduler, guidance_low_noise, audio_guidance)
        settings = BlueprintSettings(
            width, height, blueprint_fps, window_frames, seed, sampler, overlap_frames, reanchor, prompt_mode
        )
        ref = check_image_tensor(image, "image")
        bp = render_blueprint(
            dit,
            vae,
            text_encoder,
            ref,
            timeline,
            storyline,
            settings,
            bridge.make_runtime(),
            work_dir=bridge.work_dir(work_folder),
            image_encoder=clip_vision,
            keep_stores=KEEP_STORES,
        )
        return (bp,)


class AvatarCascadeKeyframeExtractor:
    DESCRIPTION = (
        "Picks one keyframe at every seam from the blueprint frames near it, scored on identity similarity to the "
        "reference (CLIP-vision embeddings when connected, else colour-histogram + layout similarity), sharpness, "
        "face visibility/clarity (skin-tone heuristics, no detector), mouth at rest (quiet audio, still lower face), "
        "colour consistency, closeness to the seam and difference from the previous keyframe. Lifts the picks to the "
        "refine resolution (optionally refined by the DiT, anchored on the reference) and matches their colours to "
        "the reference. The first keyframe is the reference image. Shows a contact sheet with every score."
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
                "weights": (
                    "STRING",
                    {
                        "default": _default_weights(),
                        "tooltip": "Score weights as JSON (identity, sharpness, face, mouth, colour, centre, "
                        "diversity); names left out keep their default, empty = all defaults.",
                    },
                ),
                "lift_denoise": (
                    "FLOAT",
                    {
                        "default": 0.0,
                        "min": 0.0,
                        "max": 1.0,
                        "step": 0.05,
                        "tooltip": "DiT refinement of each lifted keyframe, anchored on the reference (img2img "
                        "strength; 0 = off, 0.2-0.4 adds detail). Needs dit, vae and text_encoder.",
                    },
                ),
                "lift_steps": (
                    "INT",
                    {"default": 20, "min": 1, "max": 200, "tooltip": "Full schedule length of the refinement."},
                ),
                "seed": (
                    "INT",
                    {
                        "default": 0,
                        "min": 0,
                        "max": 2**63 - 1,
                        "control_after_generate": True,
                        "tooltip": "Noise seed of the refinement (each seam derives its own).",
                    },
                ),
                "work_folder": WORK_FOLDER,
            },
            "optional": {
                **OPTIONAL_MODEL_INPUTS,
                **{
                    k: (v[0], {"tooltip": v[1]["tooltip"] + " Only for lift_denoise > 0."})
                    for k, v in MODEL_INPUTS.items()
                },
                "storyline": ("AVATAR_STORYLINE", {"tooltip": "Shot prompts for the refinement (else no prompt)."}),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, width=None, height=None, weights=None, seed=None, **_):
        from avatar_cascade.core.errors import InputError

        if weights is not None:
            try:
                parse_weights(weights)
            except InputError as exc:
                return str(exc)
        return validate_widgets(width=width, height=height, seed=seed)

    def extract(
        self,
        blueprint,
        timeline,
        image,
        width,
        height,
        search_radius_s,
        colour_match,
        weights,
        lift_denoise,
        lift_steps,
        seed,
        work_folder,
        clip_vision=None,
        dit=None,
        vae=None,
        text_encoder=None,
        storyline=None,
    ):
        from avatar_cascade.media import check_image_tensor
        from avatar_cascade.media.contact_sheet import as_uint8_tensor
        from avatar_cascade.sampling.settings import SamplerSettings
        from avatar_cascade.stages.keyframes.extractor import extract_keyframes
        from avatar_cascade.stages.keyframes.lift import LiftSettings

        ref = check_image_tensor(image, "image")
        folder = bridge.work_dir(work_folder)
        kf = extract_keyframes(
            blueprint,
            timeline,
            ref,
            width,
            height,
            bridge.make_runtime(),
            search_radius_s=search_radius_s,
            weights=parse_weights(weights),
            colour_match=colour_match,
            clip_vision=clip_vision,
            lift=LiftSettings(lift_denoise, SamplerSettings(lift_steps, 5.0, 5.0), seed),
            storyline=storyline,
            dit=dit,
            vae=vae,
            text_encoder=text_encoder,
            work_dir=folder,
        )
        device = bridge.intermediate_device()
        sheet = as_uint8_tensor(kf.contact_sheet())
        images = kf.images.float().div(255).to(device)
        result = (kf, images, sheet[None].float().div(255).to(device))
        return {"ui": _ui_image(folder / "keyframes" / "contact_sheet.png"), "result": result}


NODE_CLASS_MAPPINGS = {
    "AvatarCascadeBlueprintSampler": AvatarCascadeBlueprintSampler,
    "AvatarCascadeKeyframeExtractor": AvatarCascadeKeyframeExtractor,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "AvatarCascadeBlueprintSampler": "Avatar Cascade: Blueprint DiT Sampler",
    "AvatarCascadeKeyframeExtractor": "Avatar Cascade: Keyframe Extractor",
}

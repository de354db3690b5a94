"""First-Last-Frame Refiner and Clip Stitcher nodes."""

from __future__ import annotations

import dataclasses
import json

from . import comfy_bridge as bridge
from ._common import (
    ADVANCED_SAMPLER_WIDGETS,
    MODEL_INPUTS,
    OPTIONAL_MODEL_INPUTS,
    SAMPLER_RENAME,
    SAMPLER_WIDGETS,
    NodeWidgets,
    first_failure,
    wan_models,
    with_warnings,
)

RAY_WIDGETS = ("backend", "ray_address", "ray_workers", "ray_path_map")


def refiner_widgets() -> NodeWidgets:
    from avatar_cascade.stages.refiner.settings import RefinerSettings

    names = SAMPLER_WIDGETS + ("batch_size", "negative_frame_strength") + ADVANCED_SAMPLER_WIDGETS + ("devices",)
    names += RAY_WIDGETS
    return NodeWidgets(RefinerSettings, names, SAMPLER_RENAME)


def stitcher_widgets() -> NodeWidgets:
    from avatar_cascade.stages.stitcher.settings import StitcherSettings

    return NodeWidgets(
        StitcherSettings,
        ("crf", "codec", "pix_fmt", "colour_match", "crossfade", "interpolate", "interpolation", "output_height")
        + ("upscale_tile",),
    )


def _check_reroll(reroll) -> bool | str:
    from avatar_cascade.core.errors import InputError
    from avatar_cascade.stages.refiner.refiner import parse_reroll

    try:
        parse_reroll(reroll)
    except InputError as exc:
        return str(exc)
    return True


class AvatarCascadeFLFRefiner:
    DESCRIPTION = (
        "Renders every sub-clip at full resolution between its two keyframes (Wan first-last-frame conditioning) "
        "with its shot prompt, its audio window (audio adapter) and both keyframes' CLIP-vision tokens (Wan 2.1), "
        "several clips per forward pass and one worker per GPU (or, with backend 'ray', actors on a Ray cluster). "
        "Optional negative-frame guidance steers clips away "
        "from drifted (blurred, colour-shifted) keyframes. Finished clips are cached on disk: an interrupted run "
        "resumes, an edited shot re-renders only its clip, and 'reroll' re-renders listed clips with new seeds. "
        "Sampler widgets at 0 / -1 / auto take the DiT's preset (InfiniteTalk's with an audio adapter); warnings "
        "(no lip-sync, a model off its trained regime) are shown on the node."
    )
    CATEGORY = "AvatarCascade/stages"
    RETURN_TYPES = ("AVATAR_CLIPS",)
    RETURN_NAMES = ("clips",)
    OUTPUT_TOOLTIPS = ("Per-clip files in the clip cache (not one giant tensor).",)
    FUNCTION = "refine"

    @classmethod
    def settings_widgets(cls) -> tuple[NodeWidgets, ...]:
        return (refiner_widgets(),)

    @classmethod
    def INPUT_TYPES(cls):
        w = refiner_widgets()
        return {
            "required": {
                **MODEL_INPUTS,
                "keyframes": ("AVATAR_KEYFRAMES", {"tooltip": "One keyframe per seam (Keyframe Extractor)."}),
                "timeline": ("AVATAR_TIMELINE", {"tooltip": "From the Audio Aligner."}),
                "storyline": ("AVATAR_STORYLINE", {"tooltip": "Shot prompts, one per clip."}),
                **w.inputs(*SAMPLER_WIDGETS, "batch_size", "negative_frame_strength"),
                "reroll": (
                    "STRING",
                    {
                        "default": "",
                        "tooltip": "Clips to re-render with new seeds, by index from 0 as in the storyline, e.g. "
                        "'3, 7-9' (mention a clip twice for a second re-roll). Other clips are reused.",
                    },
                ),
                "cache_folder": (
                    "STRING",
                    {"default": "clips", "tooltip": "Clip cache folder inside output/avatar_cascade_work/."},
                ),
            },
            "optional": {**OPTIONAL_MODEL_INPUTS, **w.inputs(*ADVANCED_SAMPLER_WIDGETS, "devices", *RAY_WIDGETS)},
        }

    @classmethod
    def VALIDATE_INPUTS(cls, reroll=None, **widgets):
        return first_failure(refiner_widgets().validate(widgets), _check_reroll(reroll) if reroll is not None else True)

    def refine(
        self,
        dit,
        vae,
        text_encoder,
        keyframes,
        timeline,
        storyline,
        cache_folder,
        reroll="",
        clip_vision=None,
        **widgets,
    ):
        from avatar_cascade.stages.refiner.refiner import refine_clips

        runtime = bridge.make_runtime()
        clips = refine_clips(
            wan_models(dit, vae, text_encoder, clip_vision),
            keyframes,
            timeline,
            storyline,
            refiner_widgets().build(widgets),
            runtime,
            cache_dir=bridge.work_dir(cache_folder),
            reroll=reroll,
        )
        return with_warnings(runtime, (clips,))


class AvatarCascadeClipStitcher:
    DESCRIPTION = (
        "Joins the sub-clips into one video: keeps each shared seam frame once, cross-fades frames rendered by two "
        "clips (timelines with overlap), matches each clip's colours to its keyframes, optionally upscales every "
        "frame (an upscale model, tiled, and / or a resize to output_height) and doubles the frame rate with "
        "motion-compensated in-between frames (optical flow), trims to the audio, muxes the audio with exact sync "
        "and streams frames into an H.264 / H.265 mp4 in the output folder (constant memory) with the workflow "
        "embedded."
    )
    CATEGORY = "AvatarCascade/stages"
    RETURN_TYPES = ("VIDEO", "STRING", "IMAGE")
    RETURN_NAMES = ("video", "path", "images")
    OUTPUT_TOOLTIPS = (
        "ComfyUI VIDEO of the written file.",
        "Path of the written mp4.",
        "The video's frames, only when it has at most max_image_frames frames (else one black frame).",
    )
    FUNCTION = "stitch"
    OUTPUT_NODE = True

    @classmethod
    def settings_widgets(cls) -> tuple[NodeWidgets, ...]:
        return (stitcher_widgets(),)

    @classmethod
    def INPUT_TYPES(cls):
        from avatar_cascade.stages.stitcher.stitcher import DEFAULT_IMAGE_FRAMES

        w = stitcher_widgets()
        return {
            "required": {
                "clips": ("AVATAR_CLIPS", {"tooltip": "From the First-Last-Frame Refiner."}),
                "timeline": ("AVATAR_TIMELINE", {"tooltip": "From the Audio Aligner (frame count and audio)."}),
                "filename_prefix": (
                    "STRING",
                    {"default": "avatar_cascade/avatar", "tooltip": "Output name inside ComfyUI's output folder."},
                ),
                **w.inputs("crf"),
            },
            "optional": {
                **w.inputs("codec", "pix_fmt", "colour_match", "crossfade", "interpolate", "interpolation"),
                "upscale_model": (
                    "UPSCALE_MODEL",
                    {
                        "tooltip": "Optional: an upscale model (Load Upscale Model, models/upscale_models) run on "
                        "every frame, in tiles, before the resize to output_height."
                    },
                ),
                **w.inputs("output_height", "upscale_tile"),
                "max_image_frames": (
                    "INT",
                    {
                        "default": DEFAULT_IMAGE_FRAMES,
                        "min": 0,
                        "max": 100000,
                        "tooltip": "Return the frames as IMAGE only up to this many (each 720p frame costs 11 MB).",
                    },
                ),
            },
            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
        }

    @classmethod
    def VALIDATE_INPUTS(cls, **widgets):
        return stitcher_widgets().validate(widgets)

    def stitch(
        self,
        clips,
        timeline,
        filename_prefix,
        crf,
        max_image_frames=None,
        upscale_model=None,
        prompt=None,
        extra_pnginfo=None,
        **w,
    ):
        from avatar_cascade.stages.stitcher.stitcher import DEFAULT_IMAGE_FRAMES, stitch_clips

        cap = DEFAULT_IMAGE_FRAMES if max_image_frames is None else max_image_frames
        settings = stitcher_widgets().build({"crf": crf, **w})
        if clips.keyframes is None:
            settings = dataclasses.replace(settings, colour_match=0.0)  # nothing to match the colours to
        metadata = {}  # what ComfyUI's own video saver writes: the prompt and each extra_pnginfo entry, as JSON
        if prompt is not None:
            metadata["prompt"] = json.dumps(prompt)
        for k, v in (extra_pnginfo or {}).items():
            metadata[k] = json.dumps(v)
        result = stitch_clips(
            clips.iter_frames(),
            timeline.timeline,
            timeline.audio,
            bridge.output_path(filename_prefix, "mp4"),
            settings,
            bridge.make_runtime(),
            metadata=metadata,
            keyframes=clips.keyframes if settings.colour_match > 0 else None,
            collect_frames=cap,
            upscale_model=upscale_model,
        )
        images, text = _image_output(result, cap)
        ui = {**bridge.ui_video(result.path), "text": [text]}
        return {"ui": ui, "result": (bridge.video_output(result.path), str(result.path), images)}


def _image_output(result, cap: int):
    """IMAGE batch of the frames (float 0..1) when collected, else one black frame and a message saying why."""
    import logging

    import torch

    if result.frames is not None:
        text = f"{result.num_frames} frames at {result.fps} fps -> {result.path.name}"
        return bridge.as_image(result.frames), text
    text = (
        f"{result.num_frames} frames at {result.fps} fps -> {result.path.name}. The IMAGE output holds one black "
        f"frame: the video has more than max_image_frames ({cap}) frames; raise it to get the frames (memory!)."
    )
    logging.getLogger(__name__).info(text)
    return bridge.as_image(torch.zeros(1, result.height, result.width, 3, dtype=torch.uint8)), text


NODE_CLASS_MAPPINGS = {
    "AvatarCascadeFLFRefiner": AvatarCascadeFLFRefiner,
    "AvatarCascadeClipStitcher": AvatarCascadeClipStitcher,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "AvatarCascadeFLFRefiner": "Avatar Cascade: First-Last-Frame Refiner",
    "AvatarCascadeClipStitcher": "Avatar Cascade: Clip Stitcher",
}

"""First-Last-Frame Refiner and Clip Stitcher nodes."""

from __future__ import annotations

import json

from . import comfy_bridge as bridge
from ._common import MODEL_INPUTS, sampler_inputs
from .validation import validate_widgets


class AvatarCascadeFLFRefiner:
    DESCRIPTION = (
        "Renders every sub-clip at full resolution between its two keyframes (Wan first-last-frame "
        "conditioning) with its shot prompt, several clips per forward pass. Finished clips are cached on "
        "disk: an interrupted run resumes, an edited shot re-renders only its clip."
    )
    CATEGORY = "AvatarCascade/stages"
    RETURN_TYPES = ("AVATAR_CLIPS",)
    RETURN_NAMES = ("clips",)
    OUTPUT_TOOLTIPS = ("Per-clip files in the clip cache (not one giant tensor).",)
    FUNCTION = "refine"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                **MODEL_INPUTS,
                "keyframes": ("AVATAR_KEYFRAMES", {"tooltip": "One keyframe per seam (Keyframe Extractor)."}),
                "timeline": ("AVATAR_TIMELINE", {"tooltip": "From the Audio Aligner."}),
                "storyline": ("AVATAR_STORYLINE", {"tooltip": "Shot prompts, one per clip."}),
                **sampler_inputs(30, 5.0, 5.0),
                "batch_size": (
                    "INT",
                    {
                        "default": 0,
                        "min": 0,
                        "max": 64,
                        "tooltip": "Clips per forward pass; 0 = automatic from free memory.",
                    },
                ),
                "cache_folder": (
                    "STRING",
                    {"default": "clips", "tooltip": "Clip cache folder inside output/avatar_cascade_work/."},
                ),
            }
        }

    @classmethod
    def VALIDATE_INPUTS(cls, seed=None, scheduler=None, **_):
        return validate_widgets(seed=seed, scheduler=scheduler)

    def refine(
        self,
        dit,
        vae,
        text_encoder,
        keyframes,
        timeline,
        storyline,
        steps,
        guidance,
        shift,
        scheduler,
        seed,
        batch_size,
        cache_folder,
    ):
        from avatar_cascade.refiner import RefinerSettings, refine_clips
        from avatar_cascade.sampling import SamplerSettings

        settings = RefinerSettings(seed, batch_size, SamplerSettings(steps, guidance, shift, scheduler))
        clips = refine_clips(
            dit,
            vae,
            text_encoder,
            keyframes,
            timeline,
            storyline,
            settings,
            bridge.make_runtime(),
            bridge.work_dir(cache_folder),
        )
        return (clips,)


class AvatarCascadeClipStitcher:
    DESCRIPTION = (
        "Joins the sub-clips into one video: drops each duplicated seam frame, trims to the audio, muxes "
        "the audio with exact sync and streams frames into an H.264 mp4 in the output folder (constant "
        "memory), with the workflow embedded."
    )
    CATEGORY = "AvatarCascade/stages"
    RETURN_TYPES = ("VIDEO", "STRING")
    RETURN_NAMES = ("video", "path")
    OUTPUT_TOOLTIPS = ("ComfyUI VIDEO of the written file.", "Path of the written mp4.")
    FUNCTION = "stitch"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "clips": ("AVATAR_CLIPS", {"tooltip": "From the First-Last-Frame Refiner."}),
                "timeline": ("AVATAR_TIMELINE", {"tooltip": "From the Audio Aligner (frame count and audio)."}),
                "filename_prefix": (
                    "STRING",
                    {"default": "avatar_cascade/avatar", "tooltip": "Output name inside ComfyUI's output folder."},
                ),
                "crf": ("INT", {"default": 19, "min": 0, "max": 51, "tooltip": "H.264 quality (lower = better)."}),
            },
            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
        }

    def stitch(self, clips, timeline, filename_prefix, crf, prompt=None, extra_pnginfo=None):
        from avatar_cascade.stitcher import stitch_clips

        metadata = {}
        if prompt is not None:
            metadata["prompt"] = json.dumps(prompt)
        if extra_pnginfo:
            for k, v in extra_pnginfo.items():
                metadata[k] = json.dumps(v)
        out = bridge.output_path(filename_prefix, "mp4")
        result = stitch_clips(
            clips.iter_frames(),
            timeline.timeline,
            timeline.audio,
            out,
            bridge.make_runtime(),
            crf=crf,
            metadata=metadata,
        )
        return {"ui": bridge.ui_video(result.path), "result": (bridge.video_output(result.path), str(result.path))}


NODE_CLASS_MAPPINGS = {
    "AvatarCascadeFLFRefiner": AvatarCascadeFLFRefiner,
    "AvatarCascadeClipStitcher": AvatarCascadeClipStitcher,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "AvatarCascadeFLFRefiner": "Avatar Cascade: First-Last-Frame Refiner",
    "AvatarCascadeClipStitcher": "Avatar Cascade: Clip Stitcher",
}

"""First-Last-Frame Refiner and Clip Stitcher nodes."""

from __future__ import annotations

import json

from . import comfy_bridge as bridge
from ._common import MODEL_INPUTS, OPTIONAL_MODEL_INPUTS, advanced_sampler_inputs, sampler_inputs, sampler_settings
from .validation import validate_widgets


def _check_reroll(reroll) -> bool | str:
    from avatar_cascade.core.errors import InputError
    from avatar_cascade.stages.refiner.refiner import parse_reroll

    try:
        parse_reroll(reroll)
    except InputError as exc:
        return str(exc)
    return True


def _devices(text) -> tuple[str, ...]:
    """'auto' / '' -> () (every local GPU); 'cuda:0, cuda:1' -> ('cuda:0', 'cuda:1')."""
    text = (text or "").strip()
    return () if text.lower() in ("", "auto") else tuple(d.strip() for d in text.split(",") if d.strip())


def _check_devices(text) -> bool | str:
    from avatar_cascade.core.errors import InputError
    from avatar_cascade.stages.refiner.refiner import RefinerSettings

    try:
        RefinerSettings(devices=_devices(text)).check()
    except InputError as exc:
        return str(exc)
    return True


class AvatarCascadeFLFRefiner:
    DESCRIPTION = (
        "Renders every sub-clip at full resolution between its two keyframes (Wan first-last-frame conditioning) "
        "with its shot prompt, its audio window (audio adapter) and both keyframes' CLIP-vision tokens (Wan 2.1), "
        "several clips per forward pass and one worker per GPU. Optional negative-frame guidance steers clips away "
        "from drifted (blurred, colour-shifted) keyframes. Finished clips are cached on disk: an interrupted run "
        "resumes, an edited shot re-renders only its clip, and 'reroll' re-renders listed clips with new seeds."
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
                        "tooltip": "Clips per forward pass; 0 = automatic from free memory (halved on out-of-memory).",
                    },
                ),
                "negative_frame_strength": (
                    "FLOAT",
                    {
                        "default": 0.0,
                        "min": 0.0,
                        "max": 10.0,
                        "step": 0.05,
                        "tooltip": "Negative-frame guidance: push each clip away from a blurred, colour-shifted "
                        "copy of its keyframes (0 = off; 0.5-2 typical; doubles the DiT time).",
                    },
                ),
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
            "optional": {
                **OPTIONAL_MODEL_INPUTS,
                **advanced_sampler_inputs(),
                "devices": (
                    "STRING",
                    {
                        "default": "auto",
                        "tooltip": "GPUs to spread clips over: 'auto' = every local GPU (each extra GPU holds its "
                        "own copy of the DiT and VAE), or a list such as 'cuda:0, cuda:1'; 'cuda:0' = one GPU.",
                    },
                ),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, seed=None, scheduler=None, reroll=None, devices=None, **_):
        msg = validate_widgets(seed=seed, scheduler=scheduler)
        if msg is True and reroll is not None:
            msg = _check_reroll(reroll)
        if msg is True and devices is not None:
            msg = _check_devices(devices)
        return msg

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
        negative_frame_strength=0.0,
        reroll="",
        clip_vision=None,
        guidance_low_noise=-1.0,
        audio_guidance=4.0,
        devices="auto",
    ):
        from avatar_cascade.stages.refiner.refiner import RefinerSettings, refine_clips

        sampler = sampler_settings(steps, guidance, shift, scheduler, guidance_low_noise, audio_guidance)
        settings = RefinerSettings(seed, batch_size, sampler, negative_frame_strength, _devices(devices))
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
            reroll=reroll,
            image_encoder=clip_vision,
        )
        return (clips,)


class AvatarCascadeClipStitcher:
    DESCRIPTION = (
        "Joins the sub-clips into one video: keeps each shared seam frame once, cross-fades frames rendered by two "
        "clips (timelines with overlap), matches each clip's colours to its keyframes, optionally doubles the frame "
        "rate with midpoint frames, trims to the audio, muxes the audio with exact sync and streams frames into an "
        "H.264 / H.265 mp4 in the output folder (constant memory) with the workflow embedded."
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
    def INPUT_TYPES(cls):
        from avatar_cascade.stages.stitcher.stitcher import DEFAULT_IMAGE_FRAMES, PIX_FMTS

        return {
            "required": {
                "clips": ("AVATAR_CLIPS", {"tooltip": "From the First-Last-Frame Refiner."}),
                "timeline": ("AVATAR_TIMELINE", {"tooltip": "From the Audio Aligner (frame count and audio)."}),
                "filename_prefix": (
                    "STRING",
                    {"default": "avatar_cascade/avatar", "tooltip": "Output name inside ComfyUI's output folder."},
                ),
                "crf": ("INT", {"default": 19, "min": 0, "max": 51, "tooltip": "Quality (lower = better, bigger)."}),
            },
            "optional": {
                "codec": (
                    ["h264", "h265"],
                    {"default": "h264", "tooltip": "H.264 plays everywhere; H.265 is smaller."},
                ),
                "pix_fmt": (
                    list(PIX_FMTS),
                    {"default": "yuv420p", "tooltip": "yuv420p plays everywhere; yuv444p / 10-bit keep more colour."},
                ),
                "colour_match": (
                    "FLOAT",
                    {
                        "default": 1.0,
                        "min": 0.0,
                        "max": 1.0,
                        "step": 0.05,
                        "tooltip": "Match each clip's colours to its two keyframes (ramped across the clip) to "
                        "cancel colour drift; 0 = off.",
                    },
                ),
                "crossfade": (
                    "BOOLEAN",
                    {"default": True, "tooltip": "Blend frames rendered by two clips (timelines with overlap)."},
                ),
                "double_fps": (
                    "BOOLEAN",
                    {
                        "default": False,
                        "tooltip": "Write at twice the frame rate (e.g. 24 -> 48) with midpoint frames.",
                    },
                ),
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

    def stitch(
        self,
        clips,
        timeline,
        filename_prefix,
        crf,
        codec="h264",
        pix_fmt="yuv420p",
        colour_match=1.0,
        crossfade=True,
        double_fps=False,
        max_image_frames=300,
        prompt=None,
        extra_pnginfo=None,
    ):
        from avatar_cascade.stages.stitcher.stitcher import stitch_clips

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
            bridge.make_runtime(),
            codec=codec,
            crf=crf,
            pix_fmt=pix_fmt,
            metadata=metadata,
            keyframes=clips.keyframes if colour_match > 0 else None,
            colour_match=colour_match if clips.keyframes is not None else 0.0,
            crossfade=crossfade,
            double_fps=double_fps,
            collect_frames=max_image_frames,
        )
        images, text = _image_output(result, max_image_frames)
        ui = {**bridge.ui_video(result.path), "text": [text]}
        return {"ui": ui, "result": (bridge.video_output(result.path), str(result.path), images)}


def _image_output(result, cap: int):
    """IMAGE batch of the frames (float 0..1) when collected, else one black frame and a message saying why."""
    import logging

    import torch

    if result.frames is not None:
        text = f"{result.num_frames} frames at {result.fps} fps -> {result.path.name}"
        return result.frames.float().div(255).to(bridge.intermediate_device()), text
    text = (
        f"{result.num_frames} frames at {result.fps} fps -> {result.path.name}. The IMAGE output holds one black "
        f"frame: the video has more than max_image_frames ({cap}) frames; raise it to get the frames (memory!)."
    )
    logging.getLogger(__name__).info(text)
    return torch.zeros(1, result.height, result.width, 3, device=bridge.intermediate_device()), text


NODE_CLASS_MAPPINGS = {
    "AvatarCascadeFLFRefiner": AvatarCascadeFLFRefiner,
    "AvatarCascadeClipStitcher": AvatarCascadeClipStitcher,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "AvatarCascadeFLFRefiner": "Avatar Cascade: First-Last-Frame Refiner",
    "AvatarCascadeClipStitcher": "Avatar Cascade: Clip Stitcher",
}

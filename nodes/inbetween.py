"""Keyframes from Images node: drawn keys -> keyframes + timeline for generative in-betweening."""

from __future__ import annotations

from .validation import validate_widgets


class AvatarCascadeKeyframesFromImages:
    DESCRIPTION = (
        "ToonCrafter-style in-betweening: turns any IMAGE batch of two or more keyframes into keyframes, a matching "
        "timeline and a one-prompt storyline, so the First-Last-Frame Refiner generates the frames between every "
        "pair of consecutive keys and the Clip Stitcher chains the segments with each key written once. Keys are "
        "centre-cropped to the aspect ratio and resized. Audio is muxed (cut or padded) or silence is used."
    )
    CATEGORY = "AvatarCascade/inbetween"
    RETURN_TYPES = ("AVATAR_KEYFRAMES", "AVATAR_TIMELINE", "AVATAR_STORYLINE")
    RETURN_NAMES = ("keyframes", "timeline", "storyline")
    OUTPUT_TOOLTIPS = (
        "The keys at the refine resolution, one per seam.",
        "Segments of segment_frames frames from key to key; key k at frame k * (segment_frames - 1).",
        "One shot per segment with the prompt (edit it with Storyline Edit for per-segment prompts).",
    )
    FUNCTION = "build"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "Two or more keyframes in order (an IMAGE batch)."}),
                "segment_frames": (
                    "INT",
                    {
                        "default": 17,
                        "min": 5,
                        "max": 257,
                        "step": 4,
                        "tooltip": "Frames from one key to the next, both keys included (4n+1): 17 = 15 new frames.",
                    },
                ),
                "fps": ("FLOAT", {"default": 16.0, "min": 1.0, "max": 120.0, "step": 0.5, "tooltip": "Video rate."}),
                "width": ("INT", {"default": 832, "min": 16, "max": 4096, "step": 16, "tooltip": "Refine width."}),
                "height": ("INT", {"default": 480, "min": 16, "max": 4096, "step": 16, "tooltip": "Refine height."}),
                "prompt": (
                    "STRING",
                    {"default": "", "multiline": True, "tooltip": "What happens between the keys (every segment)."},
                ),
            },
            "optional": {
                "audio": ("AUDIO", {"tooltip": "Sound to mux: cut or padded to the video's length (else silence)."}),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, segment_frames=None, fps=None, width=None, height=None, **_):
        msg = validate_widgets(fps=fps, width=width, height=height)
        if msg is True and segment_frames is not None:
            msg = validate_widgets(clip_frames=segment_frames)
            if msg is not True:
                return msg.replace("clip_frames", "segment_frames", 1)
        return msg

    def build(self, images, segment_frames, fps, width, height, prompt, audio=None):
        from avatar_cascade.media import AudioTrack
        from avatar_cascade.stages.inbetween.inbetween import keyframes_from_images

        track = AudioTrack.from_comfy(audio) if audio is not None else None
        return keyframes_from_images(images, segment_frames, fps, width, height, audio=track, prompt=prompt)


NODE_CLASS_MAPPINGS = {"AvatarCascadeKeyframesFromImages": AvatarCascadeKeyframesFromImages}
NODE_DISPLAY_NAME_MAPPINGS = {"AvatarCascadeKeyframesFromImages": "Avatar Cascade: Keyframes from Images"}

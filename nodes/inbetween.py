"""Keyframes from Images node: drawn keys -> keyframes + timeline for generative in-betweening."""

from __future__ import annotations

from ._common import NodeWidgets


def inbetween_widgets() -> NodeWidgets:
    from avatar_cascade.stages.inbetween.settings import InbetweenSettings

    return NodeWidgets(InbetweenSettings, ("segment_frames", "fps", "width", "height"))


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
    def settings_widgets(cls) -> tuple[NodeWidgets, ...]:
        return (inbetween_widgets(),)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "Two or more keyframes in order (an IMAGE batch)."}),
                **inbetween_widgets().inputs(),
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
    def VALIDATE_INPUTS(cls, **widgets):
        return inbetween_widgets().validate(widgets)

    def build(self, images, segment_frames, fps, width, height, prompt, audio=None):
        from avatar_cascade.media import AudioTrack
        from avatar_cascade.stages.inbetween.inbetween import keyframes_from_images

        settings = inbetween_widgets().build(
            {"segment_frames": segment_frames, "fps": fps, "width": width, "height": height}
        )
        track = AudioTrack.from_comfy(audio) if audio is not None else None
        return keyframes_from_images(images, settings, audio=track, prompt=prompt)


NODE_CLASS_MAPPINGS = {"AvatarCascadeKeyframesFromImages": AvatarCascadeKeyframesFromImages}
NODE_DISPLAY_NAME_MAPPINGS = {"AvatarCascadeKeyframesFromImages": "Avatar Cascade: Keyframes from Images"}

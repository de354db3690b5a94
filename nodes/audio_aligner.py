"""Audio Aligner node: AUDIO -> the frame-exact master timeline (+ wav2vec2 features)."""

from __future__ import annotations

from . import comfy_bridge as bridge
from ._common import NodeWidgets


def aligner_widgets() -> NodeWidgets:
    from avatar_cascade.stages.aligner.settings import AlignerSettings

    names = ("fps", "clip_frames", "snap_seams_frames", "max_duration_s", "loudness_lufs")
    return NodeWidgets(AlignerSettings, names)


class AvatarCascadeAudioAligner:
    DESCRIPTION = (
        "Owns the timeline every other stage uses: exact frame<->sample mapping, sub-clips of Wan lengths "
        "(4n+1 frames) sharing one keyframe per seam, seams optionally moved into pauses so cuts fall between "
        "words, each clip's audio range and feature window; extracts wav2vec2 features once for the whole track "
        "at the video frame rate (or takes ComfyUI's own audio encoder output). Shows the timeline as a picture."
    )
    CATEGORY = "AvatarCascade/stages"
    RETURN_TYPES = ("AVATAR_TIMELINE", "AUDIO")
    RETURN_NAMES = ("timeline", "audio")
    OUTPUT_TOOLTIPS = (
        "The master timeline (frames, clips, seams, audio windows, per-frame features).",
        "The checked audio (batch of one, float, loudness-normalised if asked), for muxing or other nodes.",
    )
    FUNCTION = "align"

    @classmethod
    def settings_widgets(cls) -> tuple[NodeWidgets, ...]:
        return (aligner_widgets(),)

    @classmethod
    def INPUT_TYPES(cls):
        w = aligner_widgets()
        return {
            "required": {
                "audio": ("AUDIO", {"tooltip": "Speech or singing track (ComfyUI AUDIO, batch of one)."}),
                **w.inputs("fps", "clip_frames"),
            },
            "optional": {
                "audio_encoder": ("AVATAR_AUDIO_ENCODER", {"tooltip": "wav2vec2 encoder for lip-sync features."}),
                "audio_encoder_output": (
                    "AUDIO_ENCODER_OUTPUT",
                    {
                        "tooltip": "ComfyUI's Audio Encoder Encode output (wav2vec2) made from the same audio; "
                        "when connected it is used instead of audio_encoder."
                    },
                ),
                **w.inputs("snap_seams_frames", "max_duration_s", "loudness_lufs"),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, **widgets):
        return aligner_widgets().validate(widgets)

    def align(self, audio, fps, clip_frames, audio_encoder=None, audio_encoder_output=None, **widgets):
        from avatar_cascade.stages.aligner.aligner import align_audio

        settings = aligner_widgets().build({"fps": fps, "clip_frames": clip_frames, **widgets})
        aligned = align_audio(
            audio,
            settings,
            bridge.make_runtime(),
            audio_encoder=audio_encoder,
            audio_encoder_output=audio_encoder_output,
        )
        return (aligned, aligned.audio.to_comfy())


NODE_CLASS_MAPPINGS = {"AvatarCascadeAudioAligner": AvatarCascadeAudioAligner}
NODE_DISPLAY_NAME_MAPPINGS = {"AvatarCascadeAudioAligner": "Avatar Cascade: Audio Aligner"}

"""Audio Aligner node: AUDIO -> the frame-exact master timeline."""

from __future__ import annotations

from . import comfy_bridge as bridge
from .validation import validate_widgets


class AvatarCascadeAudioAligner:
    DESCRIPTION = (
        "Owns the timeline every other stage uses: exact frame<->sample mapping, sub-clips of Wan lengths "
        "(4n+1 frames) sharing one keyframe per seam, each clip's audio range and feature window; "
        "extracts wav2vec2 features once when an audio encoder is connected."
    )
    CATEGORY = "AvatarCascade/stages"
    RETURN_TYPES = ("AVATAR_TIMELINE", "AUDIO")
    RETURN_NAMES = ("timeline", "audio")
    OUTPUT_TOOLTIPS = (
        "The master timeline (frames, clips, seams, audio windows, features).",
        "The validated audio, for muxing or other nodes.",
    )
    FUNCTION = "align"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "audio": ("AUDIO", {"tooltip": "Speech or singing track (ComfyUI AUDIO, batch of one)."}),
                "fps": (
                    "FLOAT",
                    {
                        "default": 25.0,
                        "min": 1.0,
                        "max": 120.0,
                        "step": 0.001,
                        "tooltip": "Output video frame rate. 29.97 / 23.976 map to exact NTSC rates. "
                        "InfiniteTalk-style models are trained at 25, Wan 2.1 at 16.",
                    },
                ),
                "clip_frames": (
                    "INT",
                    {
                        "default": 81,
                        "min": 5,
                        "max": 257,
                        "step": 4,
                        "tooltip": "Sub-clip length in frames, 4n+1 (Wan: 81).",
                    },
                ),
            },
            "optional": {
                "audio_encoder": ("AVATAR_AUDIO_ENCODER", {"tooltip": "wav2vec2 encoder for lip-sync features."}),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, fps=None, clip_frames=None, **_):
        return validate_widgets(fps=fps, clip_frames=clip_frames)

    def align(self, audio, fps, clip_frames, audio_encoder=None):
        from avatar_cascade.audio_aligner import align_audio
        from avatar_cascade.media import AudioTrack

        track = AudioTrack.from_comfy(audio, input_name="audio")
        aligned = align_audio(track, fps, clip_frames, bridge.make_runtime(), audio_encoder=audio_encoder)
        return (aligned, track.to_comfy())


NODE_CLASS_MAPPINGS = {"AvatarCascadeAudioAligner": AvatarCascadeAudioAligner}
NODE_DISPLAY_NAME_MAPPINGS = {"AvatarCascadeAudioAligner": "Avatar Cascade: Audio Aligner"}

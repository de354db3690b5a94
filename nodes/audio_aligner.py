"""Audio Aligner node: AUDIO -> the frame-exact master timeline (+ wav2vec2 features)."""

from __future__ import annotations

from . import comfy_bridge as bridge
from .validation import validate_widgets


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
                "audio_encoder_output": (
                    "AUDIO_ENCODER_OUTPUT",
                    {
                        "tooltip": "ComfyUI's Audio Encoder Encode output (wav2vec2) made from the same audio; "
                        "when connected it is used instead of audio_encoder."
                    },
                ),
                "snap_seams_frames": (
                    "INT",
                    {
                        "default": 8,
                        "min": 0,
                        "max": 64,
                        "step": 4,
                        "tooltip": "Move each seam up to this many frames (in steps of 4, clips stay 4n+1) to the "
                        "quietest nearby point so cuts fall between words. 0 = fixed grid.",
                    },
                ),
                "max_duration_s": (
                    "FLOAT",
                    {
                        "default": 1800.0,
                        "min": 1.0,
                        "max": 36000.0,
                        "step": 1.0,
                        "tooltip": "Refuse audio longer than this many seconds (a safety limit for memory and time).",
                    },
                ),
                "loudness_lufs": (
                    "FLOAT",
                    {
                        "default": 0.0,
                        "min": -70.0,
                        "max": 0.0,
                        "step": 0.5,
                        "tooltip": "Normalise the track to this loudness (LUFS, e.g. -23 as InfiniteTalk does) "
                        "before features and muxing. 0 = leave the level as it is.",
                    },
                ),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, fps=None, clip_frames=None, snap_seams_frames=None, max_duration_s=None, **_):
        ok = validate_widgets(fps=fps, clip_frames=clip_frames)
        if ok is not True:
            return ok
        from avatar_cascade.core.errors import InputError
        from avatar_cascade.stages.aligner.seams import check_snap_tolerance

        try:
            if snap_seams_frames is not None:
                check_snap_tolerance(int(snap_seams_frames))
            if max_duration_s is not None and not float(max_duration_s) > 0:
                raise InputError("max_duration_s", max_duration_s, "must be positive seconds", "use e.g. 1800")
        except InputError as exc:
            return str(exc)
        return True

    def align(
        self,
        audio,
        fps,
        clip_frames,
        audio_encoder=None,
        audio_encoder_output=None,
        snap_seams_frames=8,
        max_duration_s=1800.0,
        loudness_lufs=0.0,
    ):
        from avatar_cascade.stages.aligner.aligner import align_audio

        aligned = align_audio(
            audio,
            fps,
            clip_frames,
            bridge.make_runtime(),
            audio_encoder=audio_encoder,
            audio_encoder_output=audio_encoder_output,
            snap_seams_frames=int(snap_seams_frames),
            max_duration_s=float(max_duration_s),
            loudness_lufs=float(loudness_lufs) if loudness_lufs else None,
        )
        return (aligned, aligned.audio.to_comfy())


NODE_CLASS_MAPPINGS = {"AvatarCascadeAudioAligner": AvatarCascadeAudioAligner}
NODE_DISPLAY_NAME_MAPPINGS = {"AvatarCascadeAudioAligner": "Avatar Cascade: Audio Aligner"}

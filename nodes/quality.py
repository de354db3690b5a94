"""Quality Report node: identity drift, mouth vs speech, colour drift and seam scores of a finished video."""

from __future__ import annotations

from . import comfy_bridge as bridge
from ._common import NodeWidgets, with_warnings

WIDGETS = ("face_detectors", "landmarks_68", "vad", "identity_every_s", "max_lag_frames")


def quality_widgets() -> NodeWidgets:
    from avatar_cascade.stages.quality.settings import QualitySettings

    return NodeWidgets(QualitySettings, WIDGETS)


def _video_path(text: str):
    """An absolute path, or one relative to ComfyUI's output folder (where the Clip Stitcher writes)."""
    from pathlib import Path

    p = Path(text.strip())
    return p if p.is_absolute() else bridge.output_dir() / p


class AvatarCascadeQualityReport:
    DESCRIPTION = (
        "Judges a finished video against its reference image and speech: identity similarity per second (dlib "
        "face embedding when installed, else a labelled image-statistics proxy) and its drift, mouth openness vs "
        "speech activity (Silero VAD) as a lip-sync proxy with the best audio-video offset, colour delta E to the "
        "reference per second and per minute, and a seam-discontinuity ratio at every clip boundary of the "
        "timeline. Writes quality JSON + PNG into the output folder and shows the plot on the node."
    )
    CATEGORY = "AvatarCascade/stages"
    RETURN_TYPES = ("STRING", "IMAGE")
    RETURN_NAMES = ("report", "plot")
    OUTPUT_TOOLTIPS = ("The report as JSON text.", "The report's plot.")
    FUNCTION = "report"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "video_path": (
                    "STRING",
                    {
                        "default": "",
                        "tooltip": "The video file: link the Clip Stitcher's path output, or a path "
                        "(relative paths are inside ComfyUI's output folder).",
                    },
                ),  # fmt: skip
                "reference": ("IMAGE", {"tooltip": "The reference image (the first of a batch)."}),
                "filename_prefix": (
                    "STRING",
                    {"default": "avatar_cascade/quality", "tooltip": "Report name inside ComfyUI's output folder."},
                ),
                **quality_widgets().inputs(),
            },
            "optional": {
                "audio": ("AUDIO", {"tooltip": "The speech (default: the video's own sound)."}),
                "timeline": ("AVATAR_TIMELINE", {"tooltip": "From the Audio Aligner: its seams are scored."}),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, **widgets):
        return quality_widgets().validate(widgets)

    def report(self, video_path, reference, filename_prefix, audio=None, timeline=None, **widgets):
        import json

        from avatar_cascade.media import AudioTrack
        from avatar_cascade.stages.quality.report import quality_report, write_report

        runtime = bridge.make_runtime()
        seams = [timeline.timeline.frame_time(s) for s in timeline.timeline.seams[1:-1]] if timeline else None
        track = AudioTrack.from_comfy(audio) if audio is not None else None
        settings = quality_widgets().build(widgets)
        rep = quality_report(_video_path(video_path), reference[0], settings, runtime, audio=track, seams_s=seams)
        png_path = bridge.output_path(filename_prefix, "png")
        js, png = write_report(rep, png_path.parent, png_path.stem)
        plot = _plot_tensor(png)
        ui = {"images": [{"filename": png.name, "subfolder": _subfolder(png), "type": "output"}]}
        text = json.dumps({k: v for k, v in rep.items() if not k.startswith("_")})
        return with_warnings(runtime, (text, plot), ui)


def _subfolder(path) -> str:
    rel = path.resolve().parent.relative_to(bridge.output_dir().resolve())
    return "" if str(rel) == "." else rel.as_posix()


def _plot_tensor(png):
    import numpy as np
    import torch
    from PIL import Image

    arr = np.asarray(Image.open(png).convert("RGB")).astype(np.float32) / 255
    return torch.from_numpy(arr)[None].to(bridge.intermediate_device())


NODE_CLASS_MAPPINGS = {"AvatarCascadeQualityReport": AvatarCascadeQualityReport}
NODE_DISPLAY_NAME_MAPPINGS = {"AvatarCascadeQualityReport": "Avatar Cascade: Quality Report"}

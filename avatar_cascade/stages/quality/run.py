"""Run the quality report on files: what ``python -m avatar_cascade quality`` and the node call."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from avatar_cascade.core.errors import InputError
from avatar_cascade.core.runtime import Runtime
from avatar_cascade.stages.quality.report import quality_report, write_report
from avatar_cascade.stages.quality.settings import QualitySettings

log = logging.getLogger(__name__)


def seams_from_timeline(path: Path, input_name: str = "--timeline") -> list[float]:
    """Interior clip boundaries (seconds) of a ``timeline.json`` written by the Audio Aligner (not its ends)."""
    from avatar_cascade.artefacts.timeline import Timeline

    try:
        tl = Timeline.from_dict(json.loads(Path(path).read_text()))
    except FileNotFoundError:
        raise InputError(
            input_name, str(path), "file not found", "give the timeline.json of the run's work folder"
        ) from None
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(
            input_name, str(path), f"is not a timeline.json ({exc})", "give the aligner's timeline.json"
        ) from None
    return [tl.frame_time(s) for s in tl.seams[1:-1]]


def default_timeline(video: Path) -> Path | None:
    """``<video stem>_work/timeline.json`` next to the video (where ``run`` / ``demo`` put it), if it exists."""
    candidate = video.with_name(video.stem + "_work") / "timeline.json"
    return candidate if candidate.is_file() else None


def run_quality(
    video: Path,
    reference: Path,
    out_dir: Path,
    settings: QualitySettings,
    runtime: Runtime,
    *,
    audio: Path | None = None,
    timeline: Path | None = None,
) -> tuple[Path, Path, dict]:
    """Report on ``video`` against the ``reference`` image file; ``audio`` None = the video's own sound;
    ``timeline`` None = ``<video stem>_work/timeline.json`` when it exists (for the seams)."""
    from avatar_cascade.media import load_image

    ref = load_image(reference, "--reference")
    timeline = timeline if timeline is not None else default_timeline(Path(video))
    seams = seams_from_timeline(timeline) if timeline is not None else None
    report = quality_report(video, ref, settings, runtime, audio=audio, seams_s=seams)
    if timeline is not None:
        report["timeline"] = str(timeline)
    js, png = write_report(report, Path(out_dir))
    return js, png, report

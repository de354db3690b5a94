"""Quality report: how a finished video holds up against its reference image and its audio.

One decoding pass over the video (constant memory) measures, per frame or per ``identity_every_s``:

* **identity** to the reference per second — face-embedding similarity (dlib, ``1 - d/1.2``), else
  the image-statistics proxy; with its drift (least-squares slope per minute) over the video;
* **mouth vs speech** — mouth openness per frame (landmarks in the face box found at the last identity
  sample; without a face: the proxy lower-face motion) against the speech probability (Silero VAD, else
  loudness) at each frame's time; the lip-sync *proxy* is their Pearson correlation, also at the best
  offset within ``± max_lag_frames`` (a positive lag = the mouth moves after the sound). No SyncNet is run:
  the pack ships no SyncNet weights and downloads none;
* **colour drift** — CIE76 ΔE*ab of each frame's mean Lab colour to the reference's, per second and per minute;
* **seams** — at every clip boundary of the timeline (``seams_s``), the luma jump across it divided by the
  median jump around it (:func:`~avatar_cascade.media.image_metrics.seam_ratio`); the largest jumps of the
  whole video are listed too.

Every measure names its method. :func:`write_report` writes ``quality.json`` and ``quality.png``.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from avatar_cascade.core.runtime import Runtime
from avatar_cascade.media import AudioTrack, load_audio, to_mono
from avatar_cascade.media.image_metrics import (
    THUMB,
    frame_jumps,
    identity_proxy,
    mean_lab,
    seam_ratio,
    shrink,
    thumbnails,
)
from avatar_cascade.media.video_reader import read_video
from avatar_cascade.models.detectors.face import LANDMARKS_68_NOTICE, Face
from avatar_cascade.models.detectors.measures import FaceJudge
from avatar_cascade.models.detectors.vad import speech_activity
from avatar_cascade.stages.quality.settings import QualitySettings

log = logging.getLogger(__name__)

SYNCNET_NOTE = "not run: no SyncNet weights are supplied (the pack ships and downloads none)"


@dataclass
class _Series:
    """Per-frame measurements collected during the pass."""

    identity: list[tuple[float, float]] = field(default_factory=list)
    mouth: list[float] = field(default_factory=list)
    delta_e: list[float] = field(default_factory=list)
    jumps: list[float] = field(default_factory=list)
    faces_found: int = 0
    face_samples: int = 0


def _as_uint8(reference: torch.Tensor) -> torch.Tensor:
    return reference if reference.dtype == torch.uint8 else (reference.clamp(0, 1) * 255).round().to(torch.uint8)


def quality_report(
    video, reference: torch.Tensor, settings: QualitySettings, runtime: Runtime, *, audio=None, seams_s=None
) -> dict:
    """Measure ``video`` (a path) against ``reference`` (``[H,W,3]`` float 0..1 or uint8) and ``audio`` (a path,
    an :class:`AudioTrack`, or None = the video's own sound); ``seams_s`` = clip boundaries in seconds."""
    settings.check()
    frames = read_video(video, "video")
    track = audio if isinstance(audio, AudioTrack) else load_audio(audio if audio is not None else video, "audio")
    ref = _as_uint8(reference)
    if settings.face_detectors and settings.landmarks_68:
        runtime.warn("quality", LANDMARKS_68_NOTICE)
    judge = FaceJudge(ref, use_detectors=settings.face_detectors, landmarks_68=settings.landmarks_68)
    speech = speech_activity(to_mono(track.waveform), track.sample_rate, settings.vad)
    series = _measure(frames, ref, judge, settings, runtime)
    n = len(series.delta_e)
    times = [i / float(frames.fps) for i in range(n)]
    report = {
        "video": str(video),
        "fps": str(frames.fps),
        "frames": n,
        "size": [frames.width, frames.height],
        "duration_s": round(n / float(frames.fps), 3),
        "methods": {
            "identity": judge.methods["identity"] if judge.has_face else "proxy",
            "mouth": judge.methods["mouth"] if judge.has_face else "proxy_lower_face_motion",
            "speech": speech.method,
            "colour": "CIE76 delta E of mean Lab colour",
            "seams": "luma jump / median jump within 4 frames",
        },
        "identity": _identity_summary(series),
        "lipsync_proxy": _lipsync(series.mouth, speech.at(times).tolist(), settings.max_lag_frames),
        "colour": _colour_summary(series.delta_e, float(frames.fps)),
        "seams": _seams(series.jumps, seams_s, float(frames.fps)),
        "speech": speech.to_dict(),
    }
    report["lipsync_proxy"]["syncnet"] = SYNCNET_NOTE
    report["_series"] = {"mouth": series.mouth, "speech": speech.at(times).tolist(), "jumps": series.jumps}
    return report


def _measure(frames, ref: torch.Tensor, judge: FaceJudge, settings: QualitySettings, runtime: Runtime) -> _Series:
    """The decoding pass: ΔE, jumps and mouth every frame, identity every ``identity_every_s``."""
    s = _Series()
    every = max(1, int(round(settings.identity_every_s * float(frames.fps))))
    ref_small = shrink(ref[None], 2 * THUMB)[0]
    ref_lab = mean_lab(shrink(ref[None], 2 * THUMB))[0]
    prev_thumb, prev_lower, face = None, None, None
    for i, arr in enumerate(frames):
        if i % 25 == 0:
            runtime.check_interrupt()
        frame = torch.from_numpy(arr)
        small = shrink(frame[None], 2 * THUMB)  # statistics on a 128 px copy: ~40x cheaper than full size
        s.delta_e.append(float((mean_lab(small)[0] - ref_lab).norm()))
        thumb = thumbnails(small)
        if prev_thumb is not None:
            s.jumps.append(float(frame_jumps(torch.cat([prev_thumb, thumb]))[0]))
        prev_thumb = thumb
        t = i / float(frames.fps)
        if judge.has_face:
            if i % every == 0:
                face = _identity_sample(judge, arr, t, s)
            s.mouth.append(_mouth(judge, arr, face))
        else:
            if i % every == 0:
                s.identity.append((t, float(identity_proxy(small, ref_small)[0])))
            lower = thumb[0, 35:56, 19:45]
            s.mouth.append(0.0 if prev_lower is None else float((lower - prev_lower).abs().mean()))
            prev_lower = lower
    return s


def _identity_sample(judge: FaceJudge, arr: np.ndarray, t: float, s: _Series) -> Face | None:
    """Detect the face, record its identity at ``t`` (0 when it is lost) and return it for the mouth."""
    faces = judge.models.detect(arr)
    s.face_samples += 1
    if not faces:
        s.identity.append((t, 0.0))
        return None
    s.faces_found += 1
    from avatar_cascade.models.detectors.face import identity_from_distance

    d = float(np.linalg.norm(judge.models.embedding(arr, faces[0]) - judge.ref_embedding))
    s.identity.append((t, identity_from_distance(d)))
    return faces[0]


def _mouth(judge: FaceJudge, arr: np.ndarray, face: Face | None) -> float:
    if face is None:
        return 0.0
    moved = Face(box=face.box, score=face.score, landmarks=judge.models.landmarks(arr, face.box))
    return judge.mouth_openness(arr, moved)


def _identity_summary(s: _Series) -> dict:
    t = np.array([a for a, _ in s.identity], dtype=np.float64)
    v = np.array([b for _, b in s.identity], dtype=np.float64)
    slope = float(np.polyfit(t / 60.0, v, 1)[0]) if len(t) >= 2 and np.ptp(t) > 0 else 0.0
    out = {
        "per_second": [[round(a, 3), round(b, 4)] for a, b in s.identity],
        "mean": round(float(v.mean()), 4) if v.size else None,
        "min": round(float(v.min()), 4) if v.size else None,
        "drift_per_minute": round(slope, 4),
    }
    if s.face_samples:
        out["face_found_fraction"] = round(s.faces_found / s.face_samples, 4)
    return out


def _pearson(a: np.ndarray, b: np.ndarray) -> float | None:
    if a.size < 3 or a.std() < 1e-9 or b.std() < 1e-9:
        return None
    return float(np.corrcoef(a, b)[0, 1])


def _lipsync(mouth: list[float], speech: list[float], max_lag: int) -> dict:
    """Correlation of mouth openness with speech activity, at lag 0 and at the best lag (frames)."""
    m, sp = np.asarray(mouth, dtype=np.float64), np.asarray(speech, dtype=np.float64)
    r0 = _pearson(m, sp)
    best = (0, r0)
    for lag in range(-max_lag, max_lag + 1):
        a, b = (m[lag:], sp[: len(sp) - lag]) if lag >= 0 else (m[:lag], sp[-lag:])
        r = _pearson(a, b)
        if r is not None and (best[1] is None or r > best[1]):
            best = (lag, r)
    rnd = lambda x: None if x is None else round(x, 4)  # noqa: E731
    return {"correlation": rnd(r0), "best_lag_frames": best[0], "best_correlation": rnd(best[1])}


def _colour_summary(delta_e: list[float], fps: float) -> dict:
    de = np.asarray(delta_e, dtype=np.float64)
    per_s = [round(float(de[int(i * fps) : int((i + 1) * fps)].mean()), 3) for i in range(math.ceil(len(de) / fps))]
    per_min = [
        round(float(de[int(i * 60 * fps) : int((i + 1) * 60 * fps)].mean()), 3)
        for i in range(math.ceil(len(de) / fps / 60))
    ]
    return {
        "delta_e_per_second": per_s,
        "delta_e_per_minute": per_min,
        "mean": round(float(de.mean()), 3) if de.size else None,
    }


def _seams(jumps: list[float], seams_s, fps: float) -> dict:
    j = torch.tensor(jumps, dtype=torch.float64)
    out: dict = {"boundaries": [], "source": "timeline" if seams_s else "none"}
    for t in seams_s or []:
        frame = int(round(t * fps))
        if 1 <= frame <= j.numel():
            out["boundaries"].append(
                {"time_s": round(t, 3), "frame": frame, "ratio": round(seam_ratio(j, frame - 1), 3)}
            )
    if out["boundaries"]:
        out["max_ratio"] = max(b["ratio"] for b in out["boundaries"])
    top = torch.argsort(j, descending=True)[:5].tolist() if j.numel() else []
    out["largest_jumps"] = [{"frame": i + 1, "ratio": round(seam_ratio(j, i), 3)} for i in top]
    return out


def write_report(report: dict, out_dir: Path, stem: str = "quality") -> tuple[Path, Path]:
    """``<stem>.json`` (without the per-frame series) and ``<stem>.png`` (the plot) in ``out_dir``."""
    from avatar_cascade.core.cache import atomic_write_text
    from avatar_cascade.stages.quality.plot import render_report

    out_dir.mkdir(parents=True, exist_ok=True)
    js, png = out_dir / f"{stem}.json", out_dir / f"{stem}.png"
    atomic_write_text(js, json.dumps({k: v for k, v in report.items() if not k.startswith("_")}, indent=1))
    render_report(report).save(png)
    return js, png

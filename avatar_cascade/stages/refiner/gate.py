"""Per-clip quality gate: score every finished sub-clip, re-roll the ones below the thresholds, keep the best.

After the refiner has rendered (or reused) every clip, each clip is scored on ``score_frames`` of its
frames, against keyframe 0 (the framed reference image):

* ``identity`` — face-embedding similarity (dlib) when a face is found in the reference, else the
  image-statistics proxy (:func:`~avatar_cascade.media.image_metrics.identity_proxy`), mean over the frames;
* ``sync`` — lip-sync proxy: ``(r + 1) / 2`` with ``r`` the correlation of mouth openness (landmarks; without a
  face, lower-face motion) with the speech probability (Silero VAD, else loudness) over the clip's frames;
  ``None`` (not gated) when the clip holds no speech / pause contrast (probability range < 0.2) or the mouth
  does not move;
* ``continuity`` — with its neighbours at the seams: the luma jump from the first keyframe to the next frame and
  from the second-last frame to the last keyframe, over the clip's median jump ``r``: ``min(1, 2 / (1 + r))``
  (1 = the clip leaves and reaches its keyframes as smoothly as it moves inside).

A clip passes when every available score reaches its threshold. A failing clip is rendered again with a new
seed (try ``t`` uses ``derive_seed(clip seed, index, salt=t)``) up to ``tries`` renders in all; the try with
the best mean score is kept (the first one that passes stops the re-rolls). Every try is an ordinary entry of
the clip cache (key: the clip's key + the try number), so an interrupted gate resumes with the tries it has;
the decision is stored in ``gate_<index>_<clip key>_<gate key>.json``, so a re-run reuses the kept try without
scoring or rendering anything. Scores and tries go into the refiner's manifest.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from avatar_cascade.core.cache import atomic_write_text, content_key, load_tensors, tensor_file_ok
from avatar_cascade.core.seeds import derive_seed
from avatar_cascade.core.settings import Settings, setting
from avatar_cascade.media.image_metrics import frame_jumps, identity_proxy, thumbnails

log = logging.getLogger(__name__)

GATE_FORMAT = "1"
SCORES = ("identity", "sync", "continuity")
#: The speech probability must vary by this much within a clip for the lip-sync proxy to be measured.
SPEECH_CONTRAST = 0.2


@dataclass(frozen=True, kw_only=True)
class GateSettings(Settings):
    """The per-clip quality gate (see :mod:`avatar_cascade.stages.refiner.gate`)."""

    tries: int = setting(
        1, tooltip="Quality gate: renders per clip at most. A clip whose scores fall below the thresholds is "
        "re-rendered with a new seed and the best try is kept. 1 = gate off (clips are not scored).",
        min=1, max=16, fix="use 1 (off) or 2-4",
    )  # fmt: skip
    min_identity: float = setting(
        0.5, tooltip="Gate threshold on identity to the reference (face embedding: 0.5 = dlib's same-person "
        "distance 0.6; else the image-statistics proxy).", min=0.0, max=1.0, step=0.01,
    )  # fmt: skip
    min_sync: float = setting(
        0.5, tooltip="Gate threshold on the lip-sync proxy ((correlation of mouth openness with speech + 1) / 2; "
        "0.5 = uncorrelated). Clips without speech or mouth motion are not gated on it.",
        min=0.0, max=1.0, step=0.01,
    )  # fmt: skip
    min_continuity: float = setting(
        0.4, tooltip="Gate threshold on seam continuity (1 = the clip reaches its keyframes as smoothly as it "
        "moves; 0.5 = a jump three times its usual motion).", min=0.0, max=1.0, step=0.01,
    )  # fmt: skip
    score_frames: int = setting(
        3, tooltip="Interior frames per clip scored for identity (face detection + embedding each); the mouth "
        "landmarks of the other frames use the nearest of their face boxes.",
        min=1, max=64,
    )  # fmt: skip

    @property
    def enabled(self) -> bool:
        return self.tries > 1

    def key_parts(self) -> dict:
        from avatar_cascade.models.detectors import detector_identity

        return {
            "format": GATE_FORMAT,
            "tries": self.tries,
            "thresholds": [self.min_identity, self.min_sync, self.min_continuity],
            "frames": self.score_frames,
            "detectors": detector_identity(),
        }


class ClipJudge:
    """Scores clips against the reference keyframe and the track's speech activity."""

    def __init__(self, reference: torch.Tensor, aligned, settings: GateSettings) -> None:
        from avatar_cascade.media import to_mono
        from avatar_cascade.models.detectors.measures import FaceJudge
        from avatar_cascade.models.detectors.vad import speech_activity

        self.settings = settings
        self.reference = reference
        self.faces = FaceJudge(reference)
        audio = aligned.audio
        self.speech = speech_activity(to_mono(audio.waveform), audio.sample_rate)
        self.timeline = aligned.timeline
        self.methods = {
            "identity": "face_embedding" if self.faces.has_face else "proxy",
            "sync": (self.faces.methods["mouth"] if self.faces.has_face else "lower_face_motion")
            + "+"
            + self.speech.method,
            "continuity": "luma jump at the keyframes / median jump",
        }

    def score(self, index: int, frames: torch.Tensor) -> dict[str, float | None]:
        """``identity`` / ``sync`` / ``continuity`` (None = not measurable) and ``total`` of clip ``index``."""
        picks = torch.linspace(1, max(1, len(frames) - 2), self.settings.score_frames).round().long().unique()
        mouth = None
        if self.faces.has_face:
            obs = self.faces.observe(frames[picks])
            identity = float(obs["identity"].mean())
            mouth = self.faces.mouth_track(frames, picks.tolist(), obs["faces"])
        else:
            identity = float(identity_proxy(frames[picks], self.reference).mean())
        thumbs = thumbnails(frames)
        jumps = frame_jumps(thumbs)
        if mouth is None:
            lower = thumbs[:, 35:56, 19:45]
            mouth = torch.cat([jumps.new_zeros(1), (lower[1:] - lower[:-1]).abs().mean(dim=(1, 2))])
        out = {"identity": identity, "sync": self._sync(index, mouth, len(frames)), "continuity": _continuity(jumps)}
        vals = [v for v in out.values() if v is not None]
        out["total"] = float(np.mean(vals)) if vals else 0.0
        return {k: (None if v is None else round(v, 4)) for k, v in out.items()}

    def _sync(self, index: int, mouth: torch.Tensor, n: int) -> float | None:
        clip = self.timeline.clips[index]
        start = clip.render_start
        times = [self.timeline.frame_time(start + i) for i in range(n)]
        sp = self.speech.at(times).numpy().astype(np.float64)
        m = mouth.numpy().astype(np.float64)
        if np.ptp(sp) < SPEECH_CONTRAST or m.std() < 1e-6:  # no speech / pause contrast, or a still mouth
            return None
        return (float(np.corrcoef(m, sp)[0, 1]) + 1) / 2

    def passes(self, scores: dict) -> bool:
        s = self.settings
        limits = {"identity": s.min_identity, "sync": s.min_sync, "continuity": s.min_continuity}
        return all(scores[k] is None or scores[k] >= limits[k] for k in SCORES)


def _continuity(jumps: torch.Tensor) -> float | None:
    if jumps.numel() < 3:
        return None
    inner = float(jumps[1:-1].median()) if jumps.numel() > 2 else float(jumps.median())
    edge = max(float(jumps[0]), float(jumps[-1]))
    return min(1.0, 2.0 / (1.0 + edge / max(inner, 1e-3)))


def _decision_path(cache_dir: Path, rec, gate_key: str) -> Path:
    return cache_dir / f"gate_{rec.index:05d}_{rec.key}_{gate_key}.json"


def try_record(rec, t: int):
    """Clip record of re-roll ``t`` (1, 2, ...) of ``rec``: a new seed and its own cache key and file."""
    seed = derive_seed(rec.seed, rec.index, salt=t)
    key = content_key({"clip": rec.key, "gate_try": t, "seed": seed})
    path = rec.path.with_name(f"clip_{rec.index:05d}_{key}.safetensors")
    return replace(rec, path=path, key=key, seed=seed, cached=False)


def run_gate(
    records: list,
    jobs: list,
    reference: torch.Tensor,
    aligned,
    settings: GateSettings,
    runtime,
    cache_dir: Path,
    render: Callable[[list], None],
    size: tuple[int, int],
) -> dict[int, dict]:
    """Gate every clip of ``records`` (their ``jobs`` give prompts and audio; frames ``size`` = (h, w));
    ``render(jobs)`` renders jobs into their records' paths. Records of kept re-rolls are updated in place
    (path, key, seed). Returns the manifest entry of every clip."""
    gate_key = content_key(settings.key_parts())[:16]
    rows: dict[int, dict] = {}
    pending = []
    for rec, job in zip(records, jobs):
        decided = _load_decision(_decision_path(cache_dir, rec, gate_key), rec, size)
        if decided is not None:
            rows[rec.index] = {**decided, "reused": True}
            _apply(rec, decided)
        else:
            pending.append((rec, job))
    if not pending:
        return rows
    judge = ClipJudge(reference, aligned, settings)
    tries = {rec.index: [] for rec, _ in pending}
    failing = _score(judge, [(rec, rec, 0) for rec, _ in pending], tries)
    for t in range(1, settings.tries):
        if not failing:
            break
        runtime.check_interrupt()
        variants = [(base, try_record(base, t), job) for base, job in pending if base.index in failing]
        todo = [replace(job, rec=v) for _, v, job in variants if not tensor_file_ok(v.path, ("frames",))]
        log.info("gate: try %d of %d for clips %s", t + 1, settings.tries, sorted(failing))
        if todo:
            render(todo)
        failing = _score(judge, [(base, v, t) for base, v, _ in variants], tries)
    for rec, _ in pending:
        rows[rec.index] = _decide(rec, tries[rec.index], judge, cache_dir, gate_key)
        if not rows[rec.index]["passed"]:
            runtime.warn(
                "refiner",
                f"clip {rec.index}: none of {settings.tries} tries passed the quality gate; kept the best "
                f"(try {rows[rec.index]['kept']}); see refiner_manifest.json for its scores",
            )
    return rows


def _score(judge: ClipJudge, items, tries: dict) -> set[int]:
    """Score each ``(base, record, try)``; the indices whose latest try still fails."""
    failing = set()
    for base, rec, t in items:
        frames = load_tensors(rec.path)["frames"]
        scores = judge.score(base.index, frames)
        ok = judge.passes(scores)
        tries[base.index].append(
            {"try": t, "seed": rec.seed, "key": rec.key, "file": rec.path.name, **scores, "passed": ok}
        )
        if not ok:
            failing.add(base.index)
    return failing


def _decide(rec, tries: list[dict], judge: ClipJudge, cache_dir: Path, gate_key: str) -> dict:
    """Keep the first passing try, else the best total; store the decision (atomically) next to the clips."""
    passed = [t for t in tries if t["passed"]]
    best = passed[0] if passed else max(tries, key=lambda t: t["total"])
    decision = {"methods": judge.methods, "tries": tries, "kept": best["try"], "passed": bool(passed)}
    atomic_write_text(_decision_path(cache_dir, rec, gate_key), json.dumps(decision, indent=1))
    _apply(rec, decision)
    return {**decision, "reused": False}


def _apply(rec, decision: dict) -> None:
    kept = next(t for t in decision["tries"] if t["try"] == decision["kept"])
    rec.path = rec.path.with_name(kept["file"])
    rec.key, rec.seed = kept["key"], kept["seed"]


def _load_decision(path: Path, rec, size: tuple[int, int]) -> dict | None:
    """A stored decision whose kept clip file is intact, else None (the gate then runs again)."""
    try:
        decision = json.loads(path.read_text())
        kept = next(t for t in decision["tries"] if t["try"] == decision["kept"])
    except (OSError, ValueError, KeyError, StopIteration, TypeError):
        return None
    ok = tensor_file_ok(rec.path.with_name(kept["file"]), ("frames",), {"frames": (rec.num_frames, *size, 3)})
    return decision if ok else None

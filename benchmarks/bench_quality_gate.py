"""The refiner's quality gate and the detectors it uses: what they cost.

Gate cases render ``clips`` clips of ``frames`` frames at ``size`` x ``size`` with the tiny demo models (4 steps,
CFG, batch 2) on a fresh cache with the gate off (``refine_s``), then run the gate on that finished cache with
thresholds every clip passes (``gate_s``: scoring only, nothing re-rendered, minus ``cached_s``, the same
re-run without the gate) and ``cost_pct`` = ``gate_s`` / ``refine_s``. That first gate run of a process also
loads the detectors (dlib's models ~2 s, Silero VAD); ``warm_gate_s`` / ``warm_cost_pct`` score the same clips
again with them loaded (the stored decisions removed), as every later run in a ComfyUI session does.
``forced_fail_s``: a fresh cache with 2 tries and an impossible identity threshold (every clip is rendered
twice and scored twice). Keyframes are random (``proxy``: no face, the statistics proxies) or scikit-image's
astronaut photo (``detectors``: a face in the reference, so every scored frame goes through dlib), with the
bundled real speech as audio (Silero VAD).

Detector cases time one call on the astronaut photo at ``size`` px (HOG detection, 5- / 68-point landmarks,
the 128-d embedding), Silero VAD per minute of speech (``rtf`` = seconds of compute per second of audio), and
the quality report per frame of a 6.6 s real-face clip.

Run: ``python -m benchmarks.bench_quality_gate [--only NAME]``.
"""

from __future__ import annotations

import time

from benchmarks.harness import Case, main


def _models(d):
    from avatar_cascade.demo.models import DIT_FILE, TEXT_ENCODER_FILE, VAE_FILE, write_demo_models
    from avatar_cascade.models.handle import WanModels
    from avatar_cascade.models.text_encoder import load_text_encoder
    from avatar_cascade.models.wan_dit import load_wan_dit
    from avatar_cascade.models.wan_vae import load_wan_vae

    m = d / "models"
    write_demo_models(m)
    return WanModels(
        load_wan_dit(m / "diffusion_models" / DIT_FILE),
        load_wan_vae(m / "vae" / VAE_FILE),
        load_text_encoder(m / "text_encoders" / TEXT_ENCODER_FILE),
    )


def _inputs(clips: int, frames: int, size: int, face: bool):
    import torch

    from avatar_cascade.media import AudioTrack
    from avatar_cascade.stages.aligner.aligner import align_audio
    from avatar_cascade.stages.aligner.settings import AlignerSettings
    from avatar_cascade.stages.inbetween.inbetween import inbetween_storyline
    from benchmarks.bench_refine_stitch import _inputs as random_inputs
    from tests import real_media as rm
    from tests.helpers import cpu_runtime

    kf, _, _ = random_inputs(clips, frames, (size, size))
    wave, sr, _ = rm.speech_with_pauses(pauses=4)
    need = ((frames - 1) * clips + 1) / 16 * sr
    wave = (
        wave[:, : int(need)] if wave.shape[1] >= need else torch.nn.functional.pad(wave, (0, int(need) - wave.shape[1]))
    )
    aligned = align_audio(
        AudioTrack(wave, sr), AlignerSettings(fps=16, clip_frames=frames, snap_seams_frames=0), cpu_runtime()
    )
    assert len(aligned.timeline.clips) == clips, len(aligned.timeline.clips)
    if face:
        kf.images[:] = torch.from_numpy(rm.astronaut(size))
    kf.frame_indices = aligned.timeline.seams
    return kf, aligned, inbetween_storyline(aligned.timeline, "a person talks to the camera")


def gate_cost(clips: int = 8, frames: int = 17, size: int = 64, face: bool = False) -> dict:
    import dataclasses
    import shutil
    import tempfile
    from pathlib import Path

    import torch

    from avatar_cascade.core.runtime import Runtime
    from avatar_cascade.sampling.settings import SamplerSettings
    from avatar_cascade.stages.refiner.gate import GateSettings
    from avatar_cascade.stages.refiner.refiner import RefinerSettings, refine_clips

    torch.set_num_threads(1)
    d = Path(tempfile.mkdtemp(prefix="bench_gate_"))
    try:
        models = _models(d)
        kf, aligned, story = _inputs(clips, frames, size, face)
        base = RefinerSettings(seed=0, batch_size=2, sampler=SamplerSettings(steps=4, guidance=3.0))
        rt = Runtime(device=torch.device("cpu"), show_progress=False)
        refine_clips(models, kf, aligned, story, base, rt, cache_dir=d / "warm", reroll="0")  # warm-up
        t0 = time.perf_counter()
        refine_clips(models, kf, aligned, story, base, rt, cache_dir=d / "c")
        refine_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        refine_clips(models, kf, aligned, story, base, rt, cache_dir=d / "c")  # all cached, gate off
        cached_s = time.perf_counter() - t0
        passing = dataclasses.replace(base, gate=GateSettings(tries=2, min_identity=0, min_sync=0, min_continuity=0))
        t0 = time.perf_counter()
        out = refine_clips(models, kf, aligned, story, passing, rt, cache_dir=d / "c")
        gate_s = time.perf_counter() - t0 - cached_s
        assert out.computed == 0
        for p in (d / "c").glob("gate_*.json"):  # forget the decisions: score again with the detectors loaded
            p.unlink()
        t0 = time.perf_counter()
        refine_clips(models, kf, aligned, story, passing, rt, cache_dir=d / "c")
        warm_s = time.perf_counter() - t0 - cached_s
        import json

        methods = json.loads((d / "c" / "refiner_manifest.json").read_text())["clips"][0]["gate"]["methods"]
        failing = dataclasses.replace(base, gate=GateSettings(tries=2, min_identity=1.0))
        t0 = time.perf_counter()
        refine_clips(models, kf, aligned, story, failing, rt, cache_dir=d / "f")
        forced_s = time.perf_counter() - t0
    finally:
        shutil.rmtree(d, ignore_errors=True)
    return {
        "clips": clips,
        "refine_s": refine_s,
        "cached_s": cached_s,
        "gate_s": gate_s,
        "cost_pct": 100 * gate_s / refine_s,
        "warm_gate_s": warm_s,
        "warm_cost_pct": 100 * warm_s / refine_s,
        "warm_ms_per_clip": 1000 * warm_s / clips,
        "forced_fail_s": forced_s,
        "identity_method": methods["identity"],
        "sync_method": methods["sync"],
    }


def detectors(size: int = 512) -> dict:
    import torch

    from avatar_cascade.models.detectors.face import face_models
    from tests import real_media as rm

    torch.set_num_threads(1)
    img = rm.astronaut(size)
    f5, f68 = face_models(), face_models(landmarks_68=True)

    def timed(fn, n=5):
        fn()
        t0 = time.perf_counter()
        for _ in range(n):
            out = fn()
        return (time.perf_counter() - t0) / n * 1000, out

    detect_ms, faces = timed(lambda: f5.detector.run(img, 1 if size < 400 else 0, 0.0))
    face = f5.detect(img)[0]
    lm5_ms, _ = timed(lambda: f5.landmarks(img, face.box), 20)
    lm68_ms, _ = timed(lambda: f68.landmarks(img, face.box), 20)
    embed_ms, _ = timed(lambda: f5.embedding(img, face))
    return {"detect_ms": detect_ms, "landmarks5_ms": lm5_ms, "landmarks68_ms": lm68_ms, "embed_ms": embed_ms}


def vad_speed(minutes: float = 1.0) -> dict:
    import torch

    from avatar_cascade.models.detectors.vad import load_silero_vad, speech_activity
    from tests import real_media as rm

    torch.set_num_threads(1)
    wave, sr, _ = rm.speech_with_pauses(pauses=4)
    reps = int(minutes * 60 * sr / wave.shape[1]) + 1
    x = wave[0].repeat(reps)[: int(minutes * 60 * sr)]
    load_silero_vad()
    t0 = time.perf_counter()
    act = speech_activity(x, sr, "silero_vad")
    s = time.perf_counter() - t0
    return {"seconds": s, "rtf": s / (minutes * 60), "regions": len(act.regions)}


def quality_report_speed() -> dict:
    import tempfile
    from pathlib import Path

    import torch

    from avatar_cascade.core.runtime import Runtime
    from avatar_cascade.stages.quality.report import quality_report
    from avatar_cascade.stages.quality.settings import QualitySettings
    from tests import real_media as rm

    torch.set_num_threads(1)
    path, _, _, ref = rm.talking_clip(Path(tempfile.mkdtemp()) / "clip.mp4")
    t0 = time.perf_counter()
    rep = quality_report(path, ref, QualitySettings(), Runtime(device=torch.device("cpu"), show_progress=False))
    s = time.perf_counter() - t0
    return {
        "frames": rep["frames"],
        "seconds": s,
        "ms_per_frame": 1000 * s / rep["frames"],
        "identity": rep["methods"]["identity"],
    }


CASES = [
    Case("gate_proxy_64px", gate_cost, {"clips": 8, "frames": 17, "size": 64, "face": False}),
    Case("gate_detectors_256px", gate_cost, {"clips": 4, "frames": 17, "size": 256, "face": True}),
    Case("detectors_256px", detectors, {"size": 256}),
    Case("detectors_512px", detectors, {"size": 512}),
    Case("vad_1min", vad_speed, {"minutes": 1.0}),
    Case("quality_report_256px", quality_report_speed, {}),
]

if __name__ == "__main__":
    main(__name__, CASES)

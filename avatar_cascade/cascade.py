"""The whole cascade, stage by stage, as the standalone CLI runs it.

Audio Aligner -> MLLM Director -> Blueprint -> Keyframes -> FLF Refiner -> Clip
Stitcher, with every intermediate written to a work folder (timeline.json,
storyline.json, blueprint.mp4, keyframes/, clips/). Finished clips are reused
on the next run. The ComfyUI nodes call the same stage functions.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from .audio_aligner import align_audio
from .blueprint import BlueprintSettings, render_blueprint
from .errors import InputError
from .keyframes import extract_keyframes
from .refiner import RefinerSettings, refine_clips
from .runtime import Runtime
from .sampling import SamplerSettings, check_resolution

log = logging.getLogger(__name__)

MODEL_FOLDERS = {
    "dit": "diffusion_models",
    "vae": "vae",
    "text_encoder": "text_encoders",
    "audio_encoder": "audio_encoders",
    "mllm": "LLM",
}


@dataclass
class CascadeConfig:
    """Everything a CLI run needs. Model names are resolved inside ``models_dir/<folder>/``."""

    image: Path
    audio: Path
    prompt: str
    models_dir: Path
    out: Path
    workdir: Path
    dit: str | None = None
    vae: str | None = None
    text_encoder: str | None = None
    audio_encoder: str | None = None
    mllm: str | None = None
    fps: str = "25"
    clip_frames: int = 81
    width: int = 832
    height: int = 480
    seed: int = 0
    blueprint: BlueprintSettings = field(default_factory=BlueprintSettings)
    refiner: RefinerSettings = field(default_factory=RefinerSettings)
    max_audio_s: float = 3600.0
    director_tokens: int = 512


def pick_model(models_dir: Path, role: str, name: str | None, required: bool = True) -> Path | None:
    """Resolve a model name inside ``models_dir/<folder>``; auto-pick when exactly one exists."""
    from .models.files import resolve_model_path

    folder = models_dir / MODEL_FOLDERS[role]
    if name is None:
        entries = sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) if folder.is_dir() else []
        if len(entries) == 1:
            name = entries[0]
        elif not required:
            return None
        else:
            listing = ", ".join(entries[:10]) or "nothing"
            raise InputError(
                f"--{role.replace('_', '-')}",
                None,
                f"no model named, and {folder} holds {listing}",
                f"name one with --{role.replace('_', '-')} NAME",
            )
    return resolve_model_path([folder], name, input_name=f"--{role.replace('_', '-')}")


class StageTimer:
    """Wall time per stage (seconds), logged and kept for benchmarks."""

    def __init__(self, timings: dict[str, float] | None = None) -> None:
        self.timings = timings if timings is not None else {}

    @contextlib.contextmanager
    def __call__(self, stage: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            dt = time.perf_counter() - t0
            self.timings[stage] = self.timings.get(stage, 0.0) + dt
            log.info("stage %s: %.2f s", stage, dt)


def run_cascade(cfg: CascadeConfig, runtime: Runtime, timings: dict[str, float] | None = None) -> Path:
    """Run all six stages; returns the written mp4 path (per-stage seconds go to ``timings``)."""
    from .media import load_audio, load_image
    from .models.audio_encoder import load_audio_encoder
    from .models.text_encoder import load_text_encoder
    from .models.wan_dit import load_wan_dit
    from .models.wan_vae import load_wan_vae
    from .stitcher import stitch_clips

    stage = StageTimer(timings)
    check_resolution(cfg.width, cfg.height)
    wd = cfg.workdir
    wd.mkdir(parents=True, exist_ok=True)
    # Inputs first: a bad image or audio fails before any model is loaded.
    reference = load_image(cfg.image, input_name="--image")
    audio = load_audio(cfg.audio, input_name="--audio", max_duration_s=cfg.max_audio_s)
    paths = {
        r: pick_model(cfg.models_dir, r, getattr(cfg, r), required=r in ("dit", "vae", "text_encoder"))
        for r in MODEL_FOLDERS
    }

    with stage("audio_aligner"):
        audio_encoder = load_audio_encoder(paths["audio_encoder"]) if paths["audio_encoder"] else None
        aligned = align_audio(audio, cfg.fps, cfg.clip_frames, runtime, audio_encoder=audio_encoder)
        aligned.save(wd)

    with stage("director"):
        storyline = _direct(cfg, paths, reference, audio, aligned, runtime)
    (wd / "storyline.json").write_text(storyline.to_json())

    with stage("load_models"):
        dit = load_wan_dit(paths["dit"], input_name="--dit")
        vae = load_wan_vae(paths["vae"], input_name="--vae")
        te = load_text_encoder(paths["text_encoder"], input_name="--text-encoder")

    with stage("blueprint"):
        blueprint = render_blueprint(dit, vae, te, reference, aligned, storyline, cfg.blueprint, runtime)
        blueprint.save(wd)
        _write_preview_video(blueprint.frames, blueprint.fps, wd / "blueprint.mp4")

    with stage("keyframes"):
        keyframes = extract_keyframes(blueprint, aligned, reference, cfg.width, cfg.height, runtime)
        keyframes.save(wd)

    with stage("refiner"):
        clips = refine_clips(dit, vae, te, keyframes, aligned, storyline, cfg.refiner, runtime, wd / "clips")
    log.info(
        "refiner: %d clips rendered, %d reused from %s",
        clips.computed,
        len(clips.records) - clips.computed,
        wd / "clips",
    )

    with stage("stitcher"):
        result = stitch_clips(
            clips.iter_frames(),
            aligned.timeline,
            audio,
            cfg.out,
            runtime,
            metadata={"comment": f"avatar-cascade: {cfg.prompt[:200]}"},
        )
    return result.path


def _direct(cfg: CascadeConfig, paths: dict, reference, audio, aligned, runtime: Runtime):
    """The Director stage: the MLLM when one is configured, else the rule-based storyline."""
    from .director import direct
    from .mllm import load_mllm

    mllm = load_mllm(paths["mllm"]) if paths["mllm"] else None
    if mllm is not None:
        with runtime.use_models(mllm.model):
            storyline = direct(
                mllm,
                reference,
                audio.waveform,
                audio.sample_rate,
                cfg.prompt,
                aligned.timeline,
                runtime,
                seed=cfg.seed,
                max_new_tokens=cfg.director_tokens,
            )
    else:
        storyline = direct(
            None, reference, audio.waveform, audio.sample_rate, cfg.prompt, aligned.timeline, runtime, seed=cfg.seed
        )
    return storyline


def _write_preview_video(frames, fps, path: Path) -> None:
    from .media import VideoWriter

    h, w = frames.shape[1:3]
    with VideoWriter(path, fps, w, h) as vw:
        vw.write(frames)


def demo_config(out: Path, workdir: Path, models_dir: Path, image: Path, audio: Path, prompt: str) -> CascadeConfig:
    """Settings for the tiny demo: every stage runs in seconds on 2 CPU cores (output is noise)."""
    fast = SamplerSettings(steps=4, guidance=3.0, shift=3.0)
    return CascadeConfig(
        image=image,
        audio=audio,
        prompt=prompt,
        models_dir=models_dir,
        out=out,
        workdir=workdir,
        fps="16",
        clip_frames=17,
        width=64,
        height=64,
        blueprint=BlueprintSettings(width=32, height=32, fps=8, window_frames=17, sampler=fast),
        refiner=RefinerSettings(batch_size=2, sampler=fast),
        director_tokens=128,
    )

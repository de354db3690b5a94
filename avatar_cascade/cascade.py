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

from avatar_cascade.cascade_models import extra_model_paths, load_generators
from avatar_cascade.cascade_models import refiner_models as build_refiner_models
from avatar_cascade.core.errors import InputError
from avatar_cascade.core.runtime import Runtime
from avatar_cascade.core.settings import Settings
from avatar_cascade.models.handle import WanModels
from avatar_cascade.models.mllm import load_mllm
from avatar_cascade.preflight import check_reroll
from avatar_cascade.stages.aligner.aligner import align_audio
from avatar_cascade.stages.aligner.settings import AlignerSettings
from avatar_cascade.stages.blueprint.sampler import blueprint_size, render_blueprint
from avatar_cascade.stages.blueprint.settings import BlueprintSettings
from avatar_cascade.stages.director.director import direct
from avatar_cascade.stages.director.settings import DirectorSettings
from avatar_cascade.stages.keyframes.extractor import extract_keyframes
from avatar_cascade.stages.keyframes.settings import KeyframeSettings
from avatar_cascade.stages.refiner.control_inputs import ControlSpec, build_control, check_control_early
from avatar_cascade.stages.refiner.refiner import refine_clips
from avatar_cascade.stages.refiner.settings import RefinerSettings
from avatar_cascade.stages.stitcher.settings import StitcherSettings

log = logging.getLogger(__name__)

MODEL_FOLDERS = {
    "dit": "diffusion_models",
    "vae": "vae",
    "text_encoder": "text_encoders",
    "audio_encoder": "audio_encoders",
    "mllm": "LLM",
    "clip_vision": "clip_vision",
}
OPTIONAL_ROLES = ("audio_encoder", "mllm", "clip_vision")


# The settings object of every stage, by the CascadeConfig field (and command-line prefix) that holds it.
STAGE_SETTINGS: dict[str, type[Settings]] = {
    "aligner": AlignerSettings,
    "director": DirectorSettings,
    "blueprint": BlueprintSettings,
    "keyframes": KeyframeSettings,
    "refiner": RefinerSettings,
    "stitcher": StitcherSettings,
}


@dataclass(kw_only=True)
class CascadeConfig:
    """Everything a CLI run needs. Model names are resolved inside ``models_dir/<folder>/``; each
    stage's settings object carries its own defaults (see :data:`STAGE_SETTINGS`)."""

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
    clip_vision: str | None = None
    audio_adapter: str | None = None
    loras: list[tuple[str, float]] = field(default_factory=list)
    reroll: str | None = None
    protect_models: bool = True  # refuse an output / work folder that touches a model file (False: the demo)
    upscale_model: str | None = None
    interpolator_model: str | None = None
    refiner_dit: str | None = None  # a Wan VACE DiT for guided refinement (models/diffusion_models)
    control: ControlSpec | None = None  # the refiner's control input (files; see stages.refiner.control_inputs)
    exact_keys: bool = False
    vace_reference: bool = False  # the refiner's VACE DiT reads --image as a VACE reference image
    aligner: AlignerSettings = field(default_factory=AlignerSettings)
    director: DirectorSettings = field(default_factory=DirectorSettings)
    blueprint: BlueprintSettings = field(default_factory=BlueprintSettings)
    keyframes: KeyframeSettings = field(default_factory=KeyframeSettings)
    refiner: RefinerSettings = field(default_factory=RefinerSettings)
    stitcher: StitcherSettings = field(default_factory=StitcherSettings)

    def stage_settings(self) -> dict[str, Settings]:
        return {name: getattr(self, name) for name in STAGE_SETTINGS}


def check_settings(cfg: CascadeConfig, flag_of=None) -> None:
    """Check every stage's settings before anything is loaded; ``flag_of(stage, name)`` names the input
    in the error (default ``stage.name``)."""
    for stage, settings in cfg.stage_settings().items():
        try:
            settings.check()
        except InputError as exc:
            name = flag_of(stage, exc.input_name) if flag_of else f"{stage}.{exc.input_name}"
            raise InputError(name, exc.value, exc.problem, exc.fix) from None


def pick_model(models_dir: Path, role: str, name: str | None, required: bool = True) -> Path | None:
    """Resolve a model name inside ``models_dir/<folder>``; auto-pick when exactly one exists."""
    from avatar_cascade.models.files import resolve_model_path

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


def run_cascade(cfg: CascadeConfig, runtime: Runtime, timings: dict[str, float] | None = None, flag_of=None) -> Path:
    """Run all six stages; returns the written mp4 path (per-stage seconds go to ``timings``).

    ``flag_of(stage, name)`` names a bad setting in the error (the CLI: its flag).
    """
    from avatar_cascade.core.locks import FolderLock, sweep_stale
    from avatar_cascade.preflight import check_run

    check_settings(cfg, flag_of)
    paths, extra = _model_paths(cfg)
    check_run(cfg, paths, extra, flag_of)
    cfg.workdir.mkdir(parents=True, exist_ok=True)
    with FolderLock(cfg.workdir):  # a second run on this folder is told it is busy
        sweep_stale(cfg.workdir, (".*.tmp", ".*.partial"), recursive=True)  # left by killed runs
        return _run_stages(cfg, runtime, StageTimer(timings), paths, extra)


def _run_stages(cfg: CascadeConfig, runtime: Runtime, stage: StageTimer, paths: dict, extra: dict) -> Path:
    from avatar_cascade.core.cache import atomic_write_text
    from avatar_cascade.models.audio_encoder import load_audio_encoder
    from avatar_cascade.models.rife import load_rife
    from avatar_cascade.models.upscale import load_upscale_model
    from avatar_cascade.stages.stitcher.stitcher import stitch_clips

    wd = cfg.workdir
    reference, audio = _inputs(cfg)
    # loaded now (small): a wrong file fails before hours of generation, not at the stitcher
    upscaler = load_upscale_model(extra["upscale_model"], "--upscale-model") if extra["upscale_model"] else None
    rife = load_rife(extra["interpolator_model"], "--interpolator-model") if extra["interpolator_model"] else None

    with stage("audio_aligner"):
        audio_encoder = load_audio_encoder(paths["audio_encoder"]) if paths["audio_encoder"] else None
        aligned = align_audio(audio, cfg.aligner, runtime, audio_encoder=audio_encoder)
        check_reroll(cfg.reroll, len(aligned.timeline.clips))
        aligned.save(wd)

    with stage("director"):
        storyline = _storyline(cfg, paths["mllm"], reference, audio, aligned, runtime)
    atomic_write_text(wd / "storyline.json", storyline.to_json())
    aligned.save(wd, storyline=storyline)  # timeline.png now with the shots

    with stage("load_models"):
        models = load_generators(cfg, paths, extra, aligned)
        refiner_models = build_refiner_models(models, extra)
        check_control_early(cfg.control, (refiner_models or models).dit, cfg.refiner.backend, models.dit,
                            cfg.vace_reference)  # fmt: skip
    clips = _generate(cfg, models, reference, aligned, storyline, runtime, stage, refiner_models)

    _record_warnings(wd, runtime)
    with stage("stitcher"):
        result = stitch_clips(
            clips.iter_frames(),
            aligned.timeline,
            audio,
            cfg.out,
            cfg.stitcher,
            runtime,
            metadata={"comment": f"avatar-cascade: {cfg.prompt[:200]}"},
            keyframes=clips.keyframes,
            upscale_model=upscaler,
            interpolator_model=rife,
        )
    return result.path


def _record_warnings(wd: Path, runtime: Runtime) -> None:
    """What the artist was warned about, kept in the work folder (``warnings.json``)."""
    import json

    from avatar_cascade.core.cache import atomic_write_text

    atomic_write_text(wd / "warnings.json", json.dumps({"warnings": runtime.warnings}, indent=1))


def _storyline(cfg: CascadeConfig, mllm_path: Path | None, reference, audio, aligned, runtime: Runtime):
    """The Director's storyline, cached in ``workdir/director/`` under everything it depends on (the MLLM
    folder's identity, image, audio, prompt, timeline, settings): a resume does not load or run the MLLM again.
    The Director logs its warnings (a timed cue past the end, a repaired reply); a reused one logs them again."""
    from avatar_cascade.artefacts.storyline import Storyline
    from avatar_cascade.core.cache import atomic_write_text, content_key
    from avatar_cascade.models.files import folder_identity

    key = content_key(
        {
            "format": "storyline/1",
            "mllm": folder_identity(mllm_path) if mllm_path else None,
            "reference": reference.float().contiguous(),
            "audio": [audio.waveform, audio.sample_rate],
            "prompt": cfg.prompt,
            "timeline": aligned.timeline.to_dict(),
            "settings": cfg.director,
        }
    )
    path = cfg.workdir / "director" / f"storyline_{key}.json"
    try:
        storyline = Storyline.from_json(path.read_text(encoding="utf-8"), aligned.timeline)
        log.info("director: reusing the storyline %s", path)
        for warning in storyline.warnings:  # said again on a resume (the Director said them the first time)
            runtime.warn("director", warning)
    except (OSError, ValueError):  # absent or damaged: direct again
        mllm = load_mllm(mllm_path, input_name="--mllm", dtype=runtime.dtype) if mllm_path else None
        storyline = direct(mllm, reference, audio, cfg.prompt, aligned.timeline, cfg.director, runtime)
        atomic_write_text(path, storyline.to_json())
    return storyline


def _model_paths(cfg: CascadeConfig) -> tuple[dict, dict]:
    """Model names first: a bad name fails before anything is read or written."""
    if not Path(cfg.models_dir).is_dir():
        problem = "is a file, not a folder" if Path(cfg.models_dir).exists() else "does not exist"
        raise InputError("--models", str(cfg.models_dir), problem, "give your ComfyUI models/ folder")
    paths = {r: pick_model(cfg.models_dir, r, getattr(cfg, r), required=r not in OPTIONAL_ROLES) for r in MODEL_FOLDERS}
    return paths, extra_model_paths(cfg)


def _inputs(cfg: CascadeConfig):
    """Inputs next: a bad image or audio fails before any model is loaded."""
    from avatar_cascade.media import load_audio, load_image

    reference = load_image(cfg.image, input_name="--image")
    audio = load_audio(cfg.audio, input_name="--audio", max_duration_s=cfg.aligner.max_duration_s)
    return reference, audio


def _generate(
    cfg: CascadeConfig, models: WanModels, reference, aligned, storyline, runtime: Runtime, stage: StageTimer,
    refiner_models: WanModels | None = None,
):  # fmt: skip
    """Blueprint -> keyframes -> refined sub-clips, each stage with its settings from ``cfg`` (the optional
    CLIP vision, ``models.image_encoder``, also scores the keyframes' identity)."""
    wd = cfg.workdir
    with stage("blueprint"):
        guide = None
        if cfg.control is not None and cfg.control.blueprint:  # built at the blueprint's own size
            w, h, _, _ = blueprint_size(models, reference, aligned, cfg.blueprint)
            guide = build_control(cfg.control, w, h)
        blueprint = render_blueprint(models, reference, aligned, storyline, cfg.blueprint, runtime, work_dir=wd,
                                     control=guide)  # fmt: skip
        blueprint.save(wd)
        blueprint.write_video(wd / "blueprint.mp4")

    with stage("keyframes"):
        keyframes = extract_keyframes(
            blueprint, aligned, reference, cfg.keyframes, runtime, models=models, storyline=storyline, work_dir=wd
        )

    with stage("refiner"):
        control = build_control(cfg.control, keyframes.width, keyframes.height)
        clips = refine_clips(
            refiner_models or models, keyframes, aligned, storyline, cfg.refiner, runtime, cache_dir=wd / "clips",
            reroll=cfg.reroll, control=control, exact_keys=cfg.exact_keys,
            vace_reference=reference if cfg.vace_reference else None,
        )  # fmt: skip
    log.info(
        "refiner: %d clips rendered, %d reused from %s",
        clips.computed,
        len(clips.records) - clips.computed,
        wd / "clips",
    )
    return clips


def demo_config(
    out: Path, workdir: Path, models_dir: Path, image: Path, audio: Path, prompt: str, names: dict[str, str]
) -> CascadeConfig:
    """Settings for the tiny demo: every stage runs in seconds on 2 CPU cores (output is noise); the samplers
    are ``auto``: the tiny DiT's preset (4 steps).

    ``names`` maps roles to the demo model names that ``write_demo_models`` returned.
    """
    return CascadeConfig(
        dit=names["dit"],
        vae=names["vae"],
        text_encoder=names["text_encoder"],
        audio_encoder=names["audio_encoder"],
        mllm=names.get("mllm"),
        image=image,
        audio=audio,
        prompt=prompt,
        models_dir=models_dir,
        out=out,
        workdir=workdir,
        audio_adapter=names["audio_adapter"],
        protect_models=False,
        aligner=AlignerSettings(fps="16", clip_frames=17),
        director=DirectorSettings(max_new_tokens=128),
        blueprint=BlueprintSettings(width=32, height=32, fps=8, window_frames=17, lead_frames=4),
        keyframes=KeyframeSettings(width=64, height=64),
        refiner=RefinerSettings(batch_size=2),
    )

"""Command line: ``python -m avatar_cascade {run,demo,demo-models} ...``."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import time
from pathlib import Path

from avatar_cascade.cli_control import _add_control_args, _control_spec
from avatar_cascade.core.errors import AvatarCascadeError

log = logging.getLogger("avatar_cascade")

DEMO_PROMPT = "A friendly presenter talks to the camera, smiling, with calm hand gestures. Smile at 0:02."


def _add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--image", type=Path, required=True, help="reference image (png/jpg/webp)")
    p.add_argument(
        "--audio", type=Path, required=True, help="speech or singing track (wav/flac/mp3/m4a/ogg or a video)"
    )
    p.add_argument("--prompt", required=True, help="text instruction for the Director")
    p.add_argument("--models", type=Path, required=True, help="a ComfyUI-style models/ folder")
    p.add_argument("--out", type=Path, required=True, help="output mp4")
    p.add_argument("--workdir", type=Path, help="intermediates folder (default: OUT without suffix + '_work')")
    p.add_argument("--dit", help="file in models/diffusion_models (auto when only one)")
    p.add_argument("--vae", help="file in models/vae")
    p.add_argument("--text-encoder", help="file in models/text_encoders")
    p.add_argument("--audio-encoder", help="file in models/audio_encoders (optional)")
    p.add_argument("--mllm", help="folder in models/LLM (optional; rule-based storyline without)")
    p.add_argument("--clip-vision", help="file in models/clip_vision (needed by Wan 2.1 I2V / FLF2V)")
    p.add_argument("--audio-adapter", help="InfiniteTalk adapter in models/model_patches or diffusion_models")
    p.add_argument("--lora", action="append", default=[], metavar="NAME[:STRENGTH]", help="LoRA in models/loras")
    p.add_argument("--reroll", help="re-render these clips with new seeds, e.g. '3, 7-9'")
    p.add_argument(
        "--ray",
        metavar="ADDRESS",
        help="render the refiner's clips on the Ray cluster at ADDRESS ('auto', HEAD_IP:6379 or ray://HEAD_IP:10001); "
        "short for --refiner-backend ray --refiner-ray-address ADDRESS",
    )
    p.add_argument(
        "--upscale-model",
        help="upscale model in models/upscale_models (.safetensors, ESRGAN family via spandrel), run on every "
        "frame before the resize to --output-height",
    )
    p.add_argument(
        "--interpolator-model",
        help="RIFE 4.x frame interpolator in models/frame_interpolation (.safetensors), used with "
        "--interpolation rife",
    )
    _add_control_args(p)
    _add_setting_args(p)


# Flags kept from before the settings flags were generated: each sets one setting of one stage.
ALIASES = {
    "--fps": ("aligner", "fps"),
    "--clip-frames": ("aligner", "clip_frames"),
    "--width": ("keyframes", "width"),
    "--height": ("keyframes", "height"),
    "--interpolate": ("stitcher", "interpolate"),
    "--output-height": ("stitcher", "output_height"),
    "--interpolation": ("stitcher", "interpolation"),
}
# Flags that set the setting of this name in every stage that has one (a stage's own flag wins).
SHARED = {"--seed": "seed", "--steps": "steps", "--framing": "framing"}


def _stage_leaves() -> dict:
    from avatar_cascade.cascade import STAGE_SETTINGS
    from avatar_cascade.core.settings import leaves

    return {stage: leaves(cls) for stage, cls in STAGE_SETTINGS.items()}


def stage_flag(stage: str, name: str) -> str:
    """The flag of setting ``name`` (flat name) of ``stage``: an alias such as ``--fps``, else ``--<stage>-<name>``."""
    for flag, target in ALIASES.items():
        if target == (stage, name):
            return flag
    return f"--{stage}-{name.replace('_', '-')}"


def _add_flag(p, flag: str, leaf, dest: str) -> None:
    from avatar_cascade.core.settings import to_widget

    shown = "none" if leaf.value is None and leaf.spec.none_as is None else to_widget(leaf)
    text = f"{leaf.spec.tooltip} (default: {shown})".replace("%", "%%")
    if leaf.kind == "BOOLEAN":
        p.add_argument(flag, dest=dest, action=argparse.BooleanOptionalAction, default=None, help=text)
        return
    metavar = "{" + ",".join(map(str, leaf.spec.choices)) + "}" if leaf.spec.choices else leaf.kind
    p.add_argument(flag, dest=dest, default=None, metavar=metavar, help=text)


def _add_setting_args(p: argparse.ArgumentParser) -> None:
    """The aliases, the shared flags and one flag per setting of every stage; every default is the
    settings class's own (None here = not given)."""
    from avatar_cascade.core.settings import to_widget

    stages = _stage_leaves()
    for flag, (stage, name) in ALIASES.items():
        leaf = next(leaf for leaf in stages[stage] if leaf.name == name)
        _add_flag(p, flag, leaf, f"set:{stage}:{name}")
    for flag, field_name in SHARED.items():
        found = [(stage, leaf) for stage, ls in stages.items() for leaf in ls if leaf.path[-1] == field_name]
        defaults = ", ".join(f"{stage} {leaf.name} {to_widget(leaf)}" for stage, leaf in found)
        text = f"{field_name} of every stage that has one (a stage's own flag wins; default: {defaults})"
        choices = found[0][1].spec.choices
        metavar = "{" + ",".join(choices) + "}" if choices else "INT"
        p.add_argument(flag, dest=f"shared:{field_name}", default=None, metavar=metavar, help=text)
    for stage, ls in stages.items():
        group = p.add_argument_group(f"{stage} settings")
        for leaf in ls:
            if leaf.spec.cli and (stage, leaf.name) not in ALIASES.values():
                _add_flag(group, stage_flag(stage, leaf.name), leaf, f"set:{stage}:{leaf.name}")


def _stage_values(stage: str, ls: list, given: dict, flags: dict) -> dict:
    """The engine values of the flags given for ``stage`` (shared flags first, its own flags win)."""
    from avatar_cascade.core.settings import from_text

    values = {}
    for flag, field_name in SHARED.items():
        text = given.get(f"shared:{field_name}")
        for leaf in ls if text is not None else ():
            if leaf.path[-1] == field_name:
                values[leaf.name], flags[(stage, leaf.name)] = from_text(leaf, text, flag), flag
    for leaf in ls:
        text = given.get(f"set:{stage}:{leaf.name}")
        if text is not None:
            flag = stage_flag(stage, leaf.name)
            values[leaf.name] = text if leaf.kind == "BOOLEAN" else from_text(leaf, text, flag)
            flags[(stage, leaf.name)] = flag
    return values


def build_run_config(args: argparse.Namespace):
    """``(CascadeConfig, flag_of)`` of a parsed ``run`` command; ``flag_of(stage, name)`` is the flag
    that set (or would set) a setting, for error messages."""
    from avatar_cascade.cascade import STAGE_SETTINGS, CascadeConfig
    from avatar_cascade.core.settings import build

    given, flags = vars(args), {}
    settings = {
        stage: build(STAGE_SETTINGS[stage], _stage_values(stage, ls, given, flags))
        for stage, ls in _stage_leaves().items()
    }
    if getattr(args, "ray", None):
        settings["refiner"] = dataclasses.replace(settings["refiner"], backend="ray", ray_address=args.ray)
        flags[("refiner", "ray_address")] = flags[("refiner", "backend")] = "--ray"
    cfg = CascadeConfig(
        image=args.image,
        audio=args.audio,
        prompt=args.prompt,
        models_dir=args.models,
        out=args.out,
        workdir=_workdir(args.out, args.workdir),
        dit=args.dit,
        vae=args.vae,
        text_encoder=args.text_encoder,
        audio_encoder=args.audio_encoder,
        mllm=args.mllm,
        clip_vision=args.clip_vision,
        audio_adapter=args.audio_adapter,
        loras=[_lora_arg(x) for x in args.lora],
        reroll=args.reroll,
        upscale_model=args.upscale_model,
        interpolator_model=args.interpolator_model,
        refiner_dit=args.refiner_dit,
        control=_control_spec(args),
        exact_keys=args.exact_keys,
        vace_reference=args.vace_reference,
        **settings,
    )
    return cfg, lambda stage, name: flags.get((stage, name), stage_flag(stage, name))


def run_config(argv: list[str]):
    """The CascadeConfig of ``python -m avatar_cascade run ARGV...`` (without running it)."""
    return build_run_config(_parser().parse_args(["run", *argv]))[0]


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m avatar_cascade", description=__doc__)
    ap.add_argument("-v", "--verbose", action="store_true")
    sub = ap.add_subparsers(dest="cmd", required=True)
    _add_run_args(sub.add_parser("run", help="run the cascade on your image, audio and models"))
    d = sub.add_parser("demo", help="run the cascade on bundled inputs with tiny models (output is noise)")
    d.add_argument("--out", type=Path, default=Path("avatar_cascade_demo.mp4"))
    d.add_argument("--workdir", type=Path)
    _add_quality_args(sub.add_parser("quality", help="quality report of a video against its reference and audio"))
    m = sub.add_parser("demo-models", help="write tiny demo models into a ComfyUI models/ tree")
    m.add_argument("--out", type=Path, required=True, help="the models/ folder to fill")
    m.add_argument("--inputs", type=Path, help="also copy the sample image and audio here (ComfyUI's input/ folder)")
    return ap


def _add_quality_args(q: argparse.ArgumentParser) -> None:
    q.add_argument("--video", type=Path, required=True, help="the video to judge")
    q.add_argument("--reference", type=Path, required=True, help="the reference image")
    q.add_argument("--audio", type=Path, help="the speech track (default: the video's own sound)")
    q.add_argument("--out", type=Path, required=True, help="folder for quality.json and quality.png")
    q.add_argument("--timeline", type=Path, help="timeline.json for the seams (default: <video>_work/timeline.json)")
    q.add_argument("--landmarks-68", action="store_true", help="68-point mouth landmarks (NON-COMMERCIAL data)")
    q.add_argument("--no-face-detectors", action="store_true", help="labelled image-statistics proxies only")
    q.add_argument("--vad", choices=("auto", "silero_vad", "energy"), default="auto", help="speech activity")


SAMPLE_INPUT_NAMES = ("avatar_cascade_sample_portrait.png", "avatar_cascade_sample_speech.flac")


def copy_sample_inputs(folder: Path) -> list[Path]:
    """Copy the bundled sample image and audio into ``folder`` (e.g. ComfyUI's input/) under the
    names the shipped demo workflow uses."""
    import shutil

    from avatar_cascade.media import sample_audio_path, sample_image_path

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for src, name in zip((sample_image_path(), sample_audio_path()), SAMPLE_INPUT_NAMES):
        shutil.copyfile(src, folder / name)
        out.append(folder / name)
    return out


def _lora_arg(text: str) -> tuple[str, float]:
    """``NAME`` or ``NAME:STRENGTH``; a Windows path (``C:\\loras\\x.safetensors``) is a name, not ``C`` with
    a strength (and is then refused as an absolute path by the model-name check)."""
    import re

    from avatar_cascade.core.errors import InputError

    name, _, strength = text.rpartition(":")
    if not name or re.fullmatch(r"[A-Za-z]:[\\/].*", text) and not re.fullmatch(r"[-+0-9.eE]+", strength):
        return text, 1.0
    try:
        return name, float(strength)
    except ValueError:
        raise InputError("--lora", text, "the strength after ':' is not a number", "write NAME or NAME:0.8") from None


def _workdir(out: Path, workdir: Path | None) -> Path:
    return workdir if workdir is not None else out.with_name(out.stem + "_work")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    restore = _second_interrupt_stops_at_once()
    try:
        return _dispatch(args)
    except AvatarCascadeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # disk full, read-only or vanished folder while writing: one line, never a traceback
        print(f"error: {_os_error(exc, args)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished clips are kept in the work folder; run again to resume", file=sys.stderr)
        restore = None  # a further Ctrl-C, until the process has exited, stops it at once (one line, 130)
        return 130
    finally:
        if restore is not None:
            restore()


def _second_interrupt_stops_at_once():
    """Ctrl-C raises KeyboardInterrupt (finished work is kept, partial files removed); a second Ctrl-C while
    that unwinds prints one line and exits at once (every write is atomic, so nothing half-written is left).
    Returns the function that puts the previous handler back (only in the main thread)."""
    import os
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def again(signum, frame):
        sys.stderr.write("interrupted again: stopped at once; finished work is kept in the work folder\n")
        sys.stderr.flush()
        os._exit(130)

    def first(signum, frame):
        signal.signal(signal.SIGINT, again)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, first)
    return lambda: signal.signal(signal.SIGINT, previous)


def _os_error(exc: OSError, args) -> str:
    """An OSError that escaped the engine, as one line naming the folder it happened in."""
    from avatar_cascade.core.paths import disk_error

    out = getattr(args, "out", None)
    where = Path(getattr(exc, "filename", None) or out or ".")
    name = "--out"
    workdir = getattr(args, "workdir", None) or (out is not None and _workdir(out, None))
    if args.cmd == "demo-models":
        name = (
            "--inputs" if args.inputs is not None and where.resolve().is_relative_to(args.inputs.resolve()) else "--out"
        )
    elif workdir and where.resolve().is_relative_to(Path(workdir).resolve()):
        name = "--workdir"
    return str(disk_error(exc, name, where))


def _quality(args) -> int:
    from avatar_cascade.core.runtime import Runtime
    from avatar_cascade.stages.quality.run import run_quality
    from avatar_cascade.stages.quality.settings import QualitySettings

    settings = QualitySettings(face_detectors=not args.no_face_detectors, landmarks_68=args.landmarks_68, vad=args.vad)
    runtime = Runtime()
    js, png, rep = run_quality(
        args.video, args.reference, args.out, settings, runtime, audio=args.audio, timeline=args.timeline
    )
    ident, lip, seams = rep["identity"], rep["lipsync_proxy"], rep["seams"]
    print(
        f"identity {ident['mean']} ({rep['methods']['identity']}), lip-sync proxy r={lip['correlation']}, "
        f"colour dE {rep['colour']['mean']}, seams max ratio {seams.get('max_ratio')}: wrote {js} and {png}"
    )
    for line in runtime.warnings:
        print(f"warning: {line}", file=sys.stderr)
    return 0


def _dispatch(args) -> int:
    from avatar_cascade.core.runtime import Runtime

    t0 = time.perf_counter()
    if args.cmd == "demo-models":
        from avatar_cascade.core.paths import check_work_folder
        from avatar_cascade.demo.models import write_demo_models

        check_work_folder(args.out, "--out")
        if args.inputs is not None:
            check_work_folder(args.inputs, "--inputs")
        written = write_demo_models(args.out)
        for role, name in written.items():
            print(f"{role}: {name}")
        if args.inputs is not None:
            for p in copy_sample_inputs(args.inputs):
                print(f"sample input: {p}")
        return 0

    if args.cmd == "quality":
        return _quality(args)
    from avatar_cascade.cascade import demo_config, run_cascade

    flag_of = None
    if args.cmd == "demo":
        from avatar_cascade.demo.models import write_demo_models
        from avatar_cascade.media import sample_audio_path, sample_image_path

        wd = _workdir(args.out, args.workdir)
        models = wd / "models"
        names = write_demo_models(models)
        cfg = demo_config(args.out, wd, models, sample_image_path(), sample_audio_path(), DEMO_PROMPT, names)
    else:
        cfg, flag_of = build_run_config(args)
    runtime = Runtime()
    out = run_cascade(cfg, runtime, flag_of=flag_of)
    print(f"wrote {out} in {time.perf_counter() - t0:.1f} s (intermediates in {cfg.workdir})")
    for line in runtime.warnings:
        print(f"warning: {line}", file=sys.stderr)
    return 0

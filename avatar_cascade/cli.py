"""Command line: ``python -m avatar_cascade {run,demo,demo-models} ...``."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

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
    p.add_argument("--fps", default="25", help="output frame rate, e.g. 25 or 30000/1001")
    p.add_argument("--clip-frames", type=int, default=81, help="sub-clip length, 4n+1")
    p.add_argument("--width", type=int, default=832)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m avatar_cascade", description=__doc__)
    ap.add_argument("-v", "--verbose", action="store_true")
    sub = ap.add_subparsers(dest="cmd", required=True)
    _add_run_args(sub.add_parser("run", help="run the cascade on your image, audio and models"))
    d = sub.add_parser("demo", help="run the cascade on bundled inputs with tiny models (output is noise)")
    d.add_argument("--out", type=Path, default=Path("avatar_cascade_demo.mp4"))
    d.add_argument("--workdir", type=Path)
    m = sub.add_parser("demo-models", help="write tiny demo models into a ComfyUI models/ tree")
    m.add_argument("--out", type=Path, required=True, help="the models/ folder to fill")
    m.add_argument("--inputs", type=Path, help="also copy the sample image and audio here (ComfyUI's input/ folder)")
    return ap


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
    from avatar_cascade.core.errors import InputError

    name, _, strength = text.rpartition(":") if ":" in text else (text, "", "1.0")
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
    try:
        return _dispatch(args)
    except AvatarCascadeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished clips are kept in the work folder; run again to resume", file=sys.stderr)
        return 130


def _dispatch(args) -> int:
    from avatar_cascade.core.runtime import Runtime

    t0 = time.perf_counter()
    if args.cmd == "demo-models":
        from avatar_cascade.demo.models import write_demo_models

        written = write_demo_models(args.out)
        for role, name in written.items():
            print(f"{role}: {name}")
        if args.inputs is not None:
            for p in copy_sample_inputs(args.inputs):
                print(f"sample input: {p}")
        return 0

    from avatar_cascade.cascade import CascadeConfig, demo_config, run_cascade
    from avatar_cascade.sampling.settings import SamplerSettings
    from avatar_cascade.stages.refiner.refiner import RefinerSettings

    if args.cmd == "demo":
        from avatar_cascade.demo.models import write_demo_models
        from avatar_cascade.media import sample_audio_path, sample_image_path

        wd = _workdir(args.out, args.workdir)
        models = wd / "models"
        names = write_demo_models(models)
        cfg = demo_config(args.out, wd, models, sample_image_path(), sample_audio_path(), DEMO_PROMPT, names)
    else:
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
            fps=args.fps,
            clip_frames=args.clip_frames,
            width=args.width,
            height=args.height,
            seed=args.seed,
            clip_vision=args.clip_vision,
            audio_adapter=args.audio_adapter,
            loras=[_lora_arg(x) for x in args.lora],
            reroll=args.reroll,
            refiner=RefinerSettings(seed=args.seed, sampler=SamplerSettings(steps=args.steps)),
        )
    out = run_cascade(cfg, Runtime())
    print(f"wrote {out} in {time.perf_counter() - t0:.1f} s (intermediates in {cfg.workdir})")
    return 0

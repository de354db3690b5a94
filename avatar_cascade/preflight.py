"""Everything a CLI run can check before any work: paths, model files, flags (``check_run``).

Called first by :func:`avatar_cascade.cascade.run_cascade`, before the work folder is created: the input
files, the output file and its container / codec (``media.output``), the work folder, that neither touches
an input or model file (``core.paths``), each model file's kind and completeness, LoRA strengths, code in
model folders and the MLLM's chat template (``models.preflight``), the frame rates and ``--reroll``. Every
problem is one :class:`InputError` / :class:`ModelFileError` naming the CLI flag, the value and the fix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from avatar_cascade.core.errors import InputError
from avatar_cascade.stages.refiner.refiner import parse_reroll


def check_run(cfg: Any, paths: dict, extra: dict, flag_of=None) -> None:
    """Everything checkable from names, flags and file headers, before any work: the output file and its
    container / codec, the work folder, that neither touches an input or model file (``core.paths``), the
    model files' kinds and completeness, LoRA strengths, code in model folders (``models.preflight``), the
    frame rates and the reroll list (``flag_of(stage, name)`` names a setting's flag)."""
    from avatar_cascade.artefacts.timeline import parse_fps
    from avatar_cascade.core.paths import check_not_inputs, check_work_folder
    from avatar_cascade.media.files import check_file
    from avatar_cascade.media.output import check_video_output
    from avatar_cascade.models.preflight import check_models

    flag = flag_of or (lambda stage, name: f"{stage}.{name}")
    check_file(cfg.image, "--image", "image")  # a folder or an unreadable file is named as such, first
    check_file(cfg.audio, "--audio", "audio")
    check_video_output(cfg.out, cfg.stitcher.codec, input_name="--out", codec_name=flag("stitcher", "codec"))
    check_work_folder(cfg.workdir, "--workdir")
    if Path(cfg.workdir).resolve() == Path(cfg.out).resolve():
        raise InputError(
            "--workdir", str(cfg.workdir), "is the same path as --out", "give the work folder a name of its own"
        )
    protected = {"--image": cfg.image, "--audio": cfg.audio}
    if cfg.protect_models:  # the demo's own models live in its work folder
        protected.update({f"--{r.replace('_', '-')}": p for r, p in paths.items() if p is not None})
        protected["--models"] = cfg.models_dir  # symlinked model names live here (their targets are above)
        protected["--audio-adapter"] = extra["audio_adapter"]
        protected.update({f"--lora {p.name}": p for p, _ in extra["loras"]})
    check_not_inputs(out={"--out": cfg.out}, folders={"--workdir": cfg.workdir}, protected=protected)
    files = {f"--{r.replace('_', '-')}": (p, r) for r, p in paths.items()}
    files["--audio-adapter"] = (extra["audio_adapter"], "audio_adapter")
    check_models(files, extra["loras"])
    video_fps, bp_fps = parse_fps(cfg.aligner.fps), parse_fps(cfg.blueprint.fps)
    if bp_fps > video_fps:
        raise InputError(
            flag("aligner", "fps"),
            cfg.aligner.fps,
            f"is lower than the blueprint's {bp_fps} fps (the blueprint cannot be denser than the video)",
            f"pass {flag('blueprint', 'fps')} {video_fps} (or lower), or raise {flag('aligner', 'fps')} to {bp_fps}",
        )
    check_reroll(cfg.reroll)  # the clip numbers are checked against the timeline after the aligner


def check_reroll(text: str | None, num_clips: int | None = None) -> None:
    """``--reroll`` read (and, with ``num_clips``, its clip numbers checked); errors name the flag."""
    try:
        parse_reroll(text, num_clips)
    except InputError as exc:
        raise InputError("--reroll", exc.value, exc.problem, exc.fix) from None

"""The MLLM Director: reference image + audio + instruction -> STORYLINE.

Top-down: measure the audio (duration, per-clip loudness, pauses) -> global pass
(image + instruction + audio summary -> identity, scene, style, emotional arc) ->
shot passes, ``shots_per_batch`` sub-clips at a time so hundreds of shots never
overflow the context -> validate -> apply the artist's timed instructions.

The model's output is never trusted: JSON is extracted from chatter and code
fences, common defects are repaired, the result is validated, a failed pass is
retried once with a correction prompt that names the error, and whatever is
still unusable is planned by :func:`~avatar_cascade.storyline.rule_based_storyline`
with a warning naming the shots filled by rules.

Director without a model: ``mllm=None`` gives the rule-based storyline (plus the
artist's timed instructions), so the cascade runs with no MLLM at all.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from string import Template

import numpy as np
import torch

from .errors import InputError
from .mllm import MLLM, parse_model_json, repair_json
from .runtime import Runtime
from .storyline import (
    FIELD_MAX_CHARS,
    GLOBAL_FIELDS,
    Shot,
    Storyline,
    apply_artist_instructions,
    energy_levels,
    format_indices,
    format_time,
    read_text_field,
    rule_based_storyline,
    shot_from_dict,
)
from .timeline import SubClip, Timeline

__all__ = ["AudioSummary", "direct", "parse_model_json", "repair_json", "summarize_audio"]

log = logging.getLogger(__name__)

PROMPTS = Path(__file__).parent / "prompts"
TOKENS_PER_SHOT = 96  # a shot pass may write at least this many tokens per shot
MAX_PAUSES_LISTED = 24
IMAGE_MAX_SIDE = 768  # pixels; the reference image is shrunk to this before the model sees it


def _template(name: str) -> Template:
    return Template((PROMPTS / name).read_text(encoding="utf-8"))


# -- the audio, as the model is told about it -------------------------------------------


@dataclass
class AudioSummary:
    """What the Director measures in the audio (seconds, dBFS)."""

    duration_s: float
    clip_db: list[float]  # RMS energy of each sub-clip's own audio, dBFS
    pauses: list[tuple[float, float]]  # low-energy spans (start, end), seconds

    def describe(self, timeline: Timeline) -> str:
        """The whole track in a few lines (for the global pass)."""
        n = len(self.clip_db)
        parts = min(10, n)
        chunks = [self.clip_db[k * n // parts : (k + 1) * n // parts] for k in range(parts)]  # none empty
        curve = [sum(c) / len(c) for c in chunks]
        shown = ", ".join(f"{format_time(a)}-{format_time(b)}" for a, b in self.pauses[:MAX_PAUSES_LISTED])
        more = f" (first {MAX_PAUSES_LISTED} listed)" if len(self.pauses) > MAX_PAUSES_LISTED else ""
        return (
            f"duration {format_time(self.duration_s)} ({self.duration_s:.1f} s), {n} shots of about "
            f"{float(timeline.clip_frames / timeline.fps):.1f} s\n"
            f"loudness over time in {parts} equal parts (dBFS): {', '.join(f'{v:.0f}' for v in curve)}\n"
            f"{len(self.pauses)} pauses{more}: {shown or 'none'}"
        )

    def clip_line(self, clip: SubClip, timeline: Timeline, level: str) -> str:
        """One line per shot (for the shot passes)."""
        a, b = timeline.frame_time(clip.frame_start), timeline.frame_time(clip.frame_end + 1)
        inside = [f"{format_time(p)}-{format_time(q)}" for p, q in self.pauses if p < b and q > a]
        return (
            f"shot {clip.index}: {format_time(a)}-{format_time(b)}, loudness {self.clip_db[clip.index]:.0f} dBFS "
            f"({level}), pauses: {', '.join(inside) or 'none'}"
        )


def summarize_audio(
    waveform: torch.Tensor, sample_rate: int, timeline: Timeline, window_s: float = 0.05, min_pause_s: float = 0.3
) -> AudioSummary:
    """Measure duration, per-clip RMS energy (dBFS) and pauses (>= ``min_pause_s`` s) of ``waveform`` [C, T]."""
    mono = (
        waveform.float()
        if waveform.dim() == 1
        else waveform[0].float()
        if len(waveform) == 1
        else waveform.float().mean(0)
    )
    power = mono.cpu().square()  # one pass over the audio; everything below reads it
    scale = sample_rate / timeline.sample_rate  # the waveform may be at another rate than the timeline

    def db(mean_square: torch.Tensor) -> torch.Tensor:
        return 10.0 * torch.log10(mean_square.clamp_min(1e-10))

    # owned sample ranges tile the audio: one reduceat sums every clip in a single pass
    bounds = [min(int(c.sample_range[0] * scale), power.numel() - 1) for c in timeline.clips]
    end = max(bounds[-1] + 1, min(int(timeline.clips[-1].sample_range[1] * scale), power.numel()))
    sums = np.add.reduceat(power[:end].numpy(), bounds).astype(np.float64)
    counts = np.maximum(np.diff(np.array(bounds + [end])), 1)
    clip_db = db(torch.from_numpy(sums / counts)).tolist()
    w = max(1, int(window_s * sample_rate))
    n = mono.numel() // w
    pauses: list[tuple[float, float]] = []
    if n:
        win = db(power[: n * w].view(n, w).mean(1))
        threshold = max(-55.0, float(torch.quantile(win, 0.9)) - 30.0)
        quiet = (win < threshold).tolist() + [False]
        start = None
        for k, q in enumerate(quiet):
            if q and start is None:
                start = k
            elif not q and start is not None:
                if (k - start) * w / sample_rate >= min_pause_s:
                    pauses.append((start * w / sample_rate, min(k * w, mono.numel()) / sample_rate))
                start = None
    return AudioSummary(duration_s=mono.numel() / sample_rate, clip_db=clip_db, pauses=pauses)


# -- the passes ---------------------------------------------------------------------


def _unwrap(obj: object, key: str) -> object:
    """``{"storyline": {...}}`` -> ``{...}``; also finds ``obj[key]`` one level down."""
    if isinstance(obj, dict) and key not in obj and len(obj) == 1:
        inner = next(iter(obj.values()))
        if isinstance(inner, (dict, list)):
            return inner
    return obj


def _read_global(obj: object, warnings: list[str]) -> tuple[dict, str | None]:
    obj = _unwrap(obj, "character")
    if not isinstance(obj, dict):
        return {}, f"expected a JSON object with the keys {', '.join(GLOBAL_FIELDS)}, got a {type(obj).__name__}"
    got, errors = {}, []
    for key in (*GLOBAL_FIELDS, "global_negative"):
        try:
            value = read_text_field(obj, key, key, warnings) if obj.get(key) not in (None, "") else ""
        except InputError as exc:
            errors.append(exc.problem)
            continue
        if value:
            got[key] = value
    errors += [f"{k}: missing" for k in GLOBAL_FIELDS if k not in got and not any(e.startswith(k) for e in errors)]
    return got, "; ".join(errors) or None


def _read_shots(obj: object, batch: list[SubClip], rules: Storyline, warnings: list[str]) -> tuple[dict, str | None]:
    """Validate one batch of shots; returns the usable ones by clip index and the errors."""
    obj = _unwrap(obj, "shots")
    items = obj.get("shots") if isinstance(obj, dict) else obj
    if isinstance(obj, dict) and items is None and "prompt" in obj:
        items = [obj]
    span = f"{batch[0].index}-{batch[-1].index}" if len(batch) > 1 else str(batch[0].index)
    if not isinstance(items, list):
        return {}, f'expected {{"shots": [...]}} with one shot per sub-clip {span}'
    errors = []
    if len(items) != len(batch):
        errors.append(f"shots: {len(items)} shots for {len(batch)} sub-clips ({span}); write exactly one for each")
    by_index = {c.index: c for c in batch}
    got: dict[int, Shot] = {}
    missing: dict[str, list[int]] = {}
    for pos, item in enumerate(items):
        idx = item.get("index") if isinstance(item, dict) else None
        if isinstance(idx, (str, float)) and str(idx).strip().removesuffix(".0").isdigit():
            idx = int(str(idx).strip().removesuffix(".0"))  # "3" or 3.0 from a sloppy model
        if idx is None and len(items) == len(batch):
            idx = batch[pos].index
        if idx not in by_index or isinstance(idx, bool):
            errors.append(f"shots[{pos}].index: {idx!r} is not one of the sub-clips {span}")
        elif idx in got:
            errors.append(f"shots[{pos}].index: {idx} appears twice (overlapping shots)")
        else:
            try:
                got[idx] = shot_from_dict(
                    {**item, "index": idx, "source": "director"}, by_index[idx], warnings, missing
                )
            except InputError as exc:
                errors.append(exc.problem)
    for name, where in missing.items():  # optional fields the model left out: take the rules' value
        where = [i for i in where if i in got]
        for i in where:
            got[i] = replace(got[i], **{name: getattr(rules.shots[i], name)})
        if where:
            warnings.append(f"{name} missing in shots {format_indices(where)}: filled by rules")
    return got, "; ".join(errors[:6]) or None


def _ask(mllm: MLLM, prompt: str, image, budget: int, seed: int, system: str, read, runtime: Runtime):
    """One pass: generate, parse, read; on error retry once with a correction prompt naming it.

    Returns the usable part (merged over both tries, the retry's winning) and the last error (None if usable).
    """
    got: dict = {}
    error, reply = None, ""
    for attempt in range(2):
        if attempt:
            runtime.check_interrupt()
            prompt = _template("director_retry.txt").substitute(prompt=prompt, error=error, reply=reply[:600])
        reply, stats = mllm.generate(prompt, image, budget, seed, system)
        log.debug(
            "director pass (try %d): %s tokens in, %s out", attempt + 1, stats.get("tokens_in"), stats.get("tokens_out")
        )
        try:
            part, error = read(parse_model_json(reply))
        except ValueError as exc:
            part, error = {}, str(exc)
        got.update(part)
        if error is None:
            return got, None
        log.info("director: unusable reply (try %d): %s", attempt + 1, error)
    return got, error


def _to_pil(image: torch.Tensor):
    from PIL import Image

    if (
        not isinstance(image, torch.Tensor)
        or image.dim() not in (3, 4)
        or image.shape[-1] not in (3, 4)
        or (image.dim() == 4 and image.shape[0] < 1)
    ):
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise InputError(
            "image",
            shape,
            "must be an IMAGE [H, W, 3] (or [B, H, W, 3]) with values 0..1",
            "connect the reference image (a Load Image node)",
        )
    if image.dim() == 4:
        image = image[0]
    arr = (image[..., :3].float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    pil = Image.fromarray(arr, "RGB")
    pil.thumbnail((IMAGE_MAX_SIDE, IMAGE_MAX_SIDE))
    return pil


def _check_audio(waveform: torch.Tensor, sample_rate: int) -> torch.Tensor:
    if isinstance(waveform, torch.Tensor) and waveform.dim() == 3:
        waveform = waveform[0]
    if isinstance(waveform, torch.Tensor) and waveform.dim() == 1:
        waveform = waveform[None]
    if not isinstance(waveform, torch.Tensor) or waveform.dim() != 2 or waveform.shape[-1] == 0:
        shape = tuple(waveform.shape) if isinstance(waveform, torch.Tensor) else type(waveform).__name__
        raise InputError(
            "audio",
            shape,
            "the waveform must be [channels, samples] with at least one sample",
            "connect the same audio as the Audio Aligner",
        )
    if not isinstance(sample_rate, int) or sample_rate <= 0:
        raise InputError("sample_rate", sample_rate, "must be a positive whole number of Hz", "pass the audio's rate")
    return waveform


def direct(
    mllm: MLLM | None,
    image: torch.Tensor,
    waveform: torch.Tensor,
    sample_rate: int,
    instruction: str,
    timeline: Timeline,
    runtime: Runtime,
    seed: int = 0,
    shots_per_batch: int = 16,
    max_new_tokens: int = 512,
    tokens_per_shot: int = TOKENS_PER_SHOT,
) -> Storyline:
    """Write the storyline: a global description and one shot per sub-clip of ``timeline``.

    Args:
        mllm: the multimodal LLM, or None for the rule-based Director (no model).
        image: reference image [H, W, 3], float 0..1.
        waveform: audio [C, T] at ``sample_rate`` Hz (the audio of ``timeline``).
        instruction: the artist's text; timed parts ("smile at 0:30", "look left during
            0:10-0:20") override the model on the shots covering those times.
        timeline: the master timeline from the Audio Aligner.
        runtime: progress / interrupt hooks. The model runs where it is: the caller places
            it, e.g. ``with runtime.use_models(mllm.model): direct(...)``.
        seed: generation seed (decoding is greedy, so the result is deterministic).
        shots_per_batch: sub-clips planned per shot pass (keeps long videos within context).
        max_new_tokens: tokens the model may write in a pass; a shot pass may write at
            least ``tokens_per_shot`` per shot of its batch.
        tokens_per_shot: see ``max_new_tokens`` (a real model needs about 60-90 per shot).

    Returns:
        A validated storyline; ``warnings`` lists what was repaired or planned by rules.
    """
    if not isinstance(shots_per_batch, int) or shots_per_batch < 1:
        raise InputError("shots_per_batch", shots_per_batch, "must be at least 1", "use 8 to 32")
    for name, value in (("max_new_tokens", max_new_tokens), ("tokens_per_shot", tokens_per_shot)):
        if not isinstance(value, int) or value < 1:
            raise InputError(name, value, "must be at least 1", f"use the default ({512 if 'max' in name else 96})")
    instruction = instruction or ""
    pil = _to_pil(image)
    summary = summarize_audio(_check_audio(waveform, sample_rate), sample_rate, timeline)
    rules = rule_based_storyline(instruction, timeline, summary.clip_db)
    if mllm is None:
        log.info("Director without a model: rule-based storyline for %d shots", len(timeline.clips))
        story = rules
    else:
        story = _plan_with_model(
            mllm,
            pil,
            summary,
            instruction,
            timeline,
            runtime,
            rules,
            seed,
            shots_per_batch,
            max_new_tokens,
            tokens_per_shot,
        )
    return apply_artist_instructions(story, instruction, timeline)


def _plan_with_model(
    mllm: MLLM,
    pil,
    summary: AudioSummary,
    instruction: str,
    timeline: Timeline,
    runtime: Runtime,
    rules: Storyline,
    seed: int,
    per_batch: int,
    max_new_tokens: int,
    tokens_per_shot: int,
) -> Storyline:
    clips = timeline.clips
    batches = [clips[i : i + per_batch] for i in range(0, len(clips), per_batch)]
    system = _template("director_system.txt").substitute()
    warnings: list[str] = []
    bar = runtime.progress(1 + len(batches), "director")
    try:
        runtime.check_interrupt()
        prompt = _template("director_global.txt").substitute(
            instruction=instruction.strip() or "(none: choose what fits the image and the audio)",
            audio=summary.describe(timeline),
            n_shots=len(clips),
        )
        glob, error = _ask(
            mllm, prompt, pil, max_new_tokens, seed, system, lambda obj: _read_global(obj, warnings), runtime
        )
        filled = [k for k in (*GLOBAL_FIELDS, "global_negative") if k not in glob]
        if [k for k in filled if k != "global_negative"]:
            warnings.append(f"global {', '.join(filled)} planned by rules (the MLLM's reply was unusable: {error})")
        glob = {k: glob.get(k, getattr(rules, k)) for k in (*GLOBAL_FIELDS, "global_negative")}
        bar.update(1)
        levels = energy_levels(summary.clip_db, len(clips))
        shots: dict[int, Shot] = {}
        errors: list[str] = []
        for batch in batches:
            runtime.check_interrupt()
            prompt = _template("director_shots.txt").substitute(
                global_json=json.dumps(glob, ensure_ascii=False),
                instruction=instruction.strip() or "(none)",
                shot_lines="\n".join(summary.clip_line(c, timeline, levels[c.index]) for c in batch),
                count=len(batch),
                first=batch[0].index,
                last=batch[-1].index,
            )
            budget = max(max_new_tokens, tokens_per_shot * len(batch))
            got, error = _ask(
                mllm,
                prompt,
                None,
                budget,
                seed,
                system,
                lambda obj, b=batch: _read_shots(obj, b, rules, warnings),
                runtime,
            )
            shots.update(got)
            if error is not None and any(c.index not in got for c in batch):
                errors.append(error)
            bar.update(1)
    finally:
        bar.close()
    by_rules = [c.index for c in clips if c.index not in shots]
    if by_rules:
        warnings.append(
            f"shots {format_indices(by_rules)} were planned by rules (the MLLM's reply was unusable: "
            f"{errors[0][:FIELD_MAX_CHARS] if errors else 'no reply'})"
        )
    for w in warnings:
        log.warning("director: %s", w)
    return Storyline(shots=[shots.get(c.index, rules.shots[c.index]) for c in clips], warnings=warnings, **glob)

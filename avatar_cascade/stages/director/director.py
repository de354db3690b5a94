"""The MLLM Director: reference image + audio + instruction -> STORYLINE.

Top-down: measure the audio (duration, per-clip loudness, pauses) -> global pass
(image + instruction + audio -> identity, scene, style, emotional arc) -> shot
passes, ``shots_per_batch`` sub-clips at a time so hundreds of shots never
overflow the context -> validate -> apply the artist's timed instructions.

How the model gets the audio (:mod:`avatar_cascade.stages.director.audio`): every model
reads what the Director measured (duration, loudness contour, per-shot loudness,
pauses); a model that hears (Qwen2.5-Omni) also gets the real audio, resampled to
16 kHz, at most ``audio_seconds`` per pass: the global pass hears the whole track
when it fits, else excerpts from its beginning, middle and end; each shot pass
hears its batch's own time span when it fits, else one excerpt from each shot.

The model's output is never trusted: JSON is extracted from chatter and code
fences, common defects are repaired, the result is validated, a failed pass is
retried once with a correction prompt that names the error, and whatever is
still unusable is planned by :func:`~avatar_cascade.artefacts.storyline.rule_based_storyline`
with a warning naming the shots filled by rules.

Director without a model: ``mllm=None`` gives the rule-based storyline (plus the
artist's timed instructions), so the cascade runs with no MLLM at all.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path
from string import Template

import torch

from avatar_cascade.artefacts.storyline import (
    FIELD_MAX_CHARS,
    GLOBAL_FIELDS,
    Shot,
    Storyline,
    format_indices,
    read_text_field,
    shot_from_dict,
)
from avatar_cascade.artefacts.timeline import SubClip, Timeline
from avatar_cascade.core.errors import InputError
from avatar_cascade.core.runtime import Runtime
from avatar_cascade.media import AudioTrack
from avatar_cascade.models.mllm import MLLM, AudioExcerpt
from avatar_cascade.stages.director.audio import (
    AudioSummary,
    check_audio,
    cut_excerpts,
    excerpt_spans,
    shot_span,
    summarize_audio,
)
from avatar_cascade.stages.director.cues import apply_artist_instructions
from avatar_cascade.stages.director.json_output import parse_model_json
from avatar_cascade.stages.director.rules import energy_levels, rule_based_storyline
from avatar_cascade.stages.director.settings import DirectorSettings

log = logging.getLogger(__name__)

PROMPTS = Path(__file__).parent / "prompts"
IMAGE_MAX_SIDE = 768  # pixels; the reference image is shrunk to this before the model sees it


def _template(name: str) -> Template:
    return Template((PROMPTS / name).read_text(encoding="utf-8"))


# -- reading the model's replies ------------------------------------------------------


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


class _Pass:
    """Asks the model one question: generate, parse, read; on error retry once naming the error.

    Keeps the Director's totals (passes, tokens in/out, audio tokens, generate seconds).
    """

    def __init__(self, mllm: MLLM, system: str, seed: int, runtime: Runtime) -> None:
        self.mllm, self.system, self.seed, self.runtime = mllm, system, seed, runtime
        self.totals = {"calls": 0, "tokens_in": 0, "audio_tokens": 0, "tokens_out": 0, "generate_s": 0.0}

    def __call__(self, prompt: str, image, audio: list[AudioExcerpt], budget: int, read) -> tuple[dict, str | None]:
        """Returns the usable part (merged over both tries, the retry's winning) and the last error (None if usable)."""
        got: dict = {}
        error, reply = None, ""
        extra = {"audio": audio} if audio else {}
        for attempt in range(2):
            if attempt:
                self.runtime.check_interrupt()
                prompt = _template("director_retry.txt").substitute(prompt=prompt, error=error, reply=reply[:600])
            reply, stats = self.mllm.generate(prompt, image, budget, self.seed, self.system, **extra)
            self.totals["calls"] += 1
            for k in ("tokens_in", "audio_tokens", "tokens_out"):
                self.totals[k] += int(stats.get(k, 0))
            self.totals["generate_s"] += float(stats.get("seconds", 0.0))
            log.debug(
                "director pass (try %d): %s tokens in (%s audio), %s out",
                attempt + 1,
                stats.get("tokens_in"),
                stats.get("audio_tokens", 0),
                stats.get("tokens_out"),
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


def direct(
    mllm: MLLM | None,
    reference: torch.Tensor,
    audio: AudioTrack,
    instruction: str,
    timeline: Timeline,
    settings: DirectorSettings,
    runtime: Runtime,
) -> Storyline:
    """Write the storyline: a global description and one shot per sub-clip of ``timeline``.

    Args:
        mllm: the multimodal LLM, or None for the rule-based Director (no model).
        reference: reference image [H, W, 3] (or [B, H, W, 3]: the first), float 0..1.
        audio: the audio of ``timeline`` (``waveform`` [C, T] at ``sample_rate`` Hz), e.g. the
            Audio Aligner's ``aligned.audio``.
        instruction: the artist's text; timed parts ("smile at 0:30", "look left during
            0:10-0:20", "wave at 45s") override the model on the shots covering those
            times. Only explicit times are applied: "during the chorus" stays part of the
            general instruction (nothing here finds choruses or words in the audio).
        timeline: the master timeline from the Audio Aligner.
        settings: seed, token budgets (shots per pass, tokens per pass and per shot) and the
            seconds of real audio a hearing model gets per pass; see :class:`DirectorSettings`.
        runtime: device, progress and interrupt hooks; the MLLM is placed on the compute device
            for the model passes (``runtime.use_models(*mllm.modules())``) and offloaded after.

    Returns:
        A validated storyline; ``warnings`` lists what was repaired or planned by rules.
    """
    settings.check()
    instruction = instruction or ""
    pil = _to_pil(reference)
    if not isinstance(audio, AudioTrack):
        raise InputError(
            "audio", type(audio).__name__, "must be an AudioTrack (waveform + sample rate)", "pass the aligner's audio"
        )
    sample_rate = audio.sample_rate
    waveform = check_audio(audio.waveform, sample_rate)
    summary = summarize_audio(waveform, sample_rate, timeline)
    rules = rule_based_storyline(instruction, timeline, summary.clip_db)
    if mllm is None:
        log.info("Director without a model: rule-based storyline for %d shots", len(timeline.clips))
        runtime.warn("director", f"no MLLM connected: all {len(timeline.clips)} shots planned by rules")
        story = rules
    else:
        hearing = _Hearing(mllm, waveform, sample_rate, timeline, float(settings.audio_seconds))
        told, cut = fit_instruction(mllm, instruction, settings)
        with runtime.use_models(*mllm.modules()):
            story = _plan_with_model(
                mllm, pil, summary, hearing, told, timeline, runtime, rules, settings.seed,
                settings.shots_per_batch, settings.max_new_tokens, settings.tokens_per_shot,
            )  # fmt: skip
        story = replace(story, warnings=[*cut, *story.warnings])
    story = apply_artist_instructions(story, instruction, timeline)
    for line in story.warnings:  # shown to the artist (the node, the CLI), not only in storyline.json
        runtime.warn("director", line)
    return story


PROMPT_RESERVE_TOKENS = 2048  # the templates, the image's and the audio's tokens, with room to spare


def fit_instruction(mllm: MLLM, instruction: str, settings: DirectorSettings) -> tuple[str, list[str]]:
    """The instruction as the model reads it: cut to what its context leaves after the reply and the
    prompt's other parts, with a warning (logged, and returned for the storyline) when cut. Timed cues are
    still read from the whole instruction."""
    if not hasattr(mllm, "fit_text"):  # a stand-in without a tokenizer (scripted replies)
        return instruction, []
    reply = max(settings.max_new_tokens, settings.tokens_per_shot * settings.shots_per_batch)
    budget = max(256, mllm.context_tokens - reply - PROMPT_RESERVE_TOKENS)
    told, n = mllm.fit_text(instruction, budget)
    if told == instruction:
        return instruction, []
    warning = (
        f"the instruction is {n} tokens; the MLLM's {mllm.context_tokens}-token context leaves {budget} for it: "
        f"the model read its first {budget} tokens (timed cues are still applied from the whole text)"
    )
    log.warning("director: %s", warning)
    return told, [warning]


class _Hearing:
    """The audio excerpts each pass hears (none for a model that cannot hear)."""

    def __init__(self, mllm: MLLM, waveform: torch.Tensor, sample_rate: int, timeline: Timeline, budget_s: float):
        self.on = bool(mllm.accepts_audio and mllm.audio_rate and budget_s > 0)
        self.mllm, self.waveform, self.sample_rate, self.timeline = mllm, waveform, sample_rate, timeline
        self.budget_s = budget_s

    def _cut(self, spans: list[tuple[float, float]], parts: int) -> list[AudioExcerpt]:
        if not self.on:
            return []
        chosen = excerpt_spans(spans, self.budget_s, self.mllm.max_audio_s, parts)
        return cut_excerpts(self.waveform, self.sample_rate, chosen, self.mllm.audio_rate)

    def whole(self) -> list[AudioExcerpt]:
        return self._cut([(0.0, self.waveform.shape[-1] / self.sample_rate)], 3)

    def shots(self, batch: list[SubClip]) -> list[AudioExcerpt]:
        return self._cut([shot_span(c, self.timeline) for c in batch], 1)

    @staticmethod
    def note(excerpts: list[AudioExcerpt]) -> str:
        """The line telling the model what it hears."""
        if not excerpts:
            return ""
        return (
            f"You also hear the audio itself: {len(excerpts)} excerpt(s) attached above, each labelled with its "
            "time span. Let the voice (emotion, energy, rhythm) guide the performance."
        )


def _plan_with_model(
    mllm: MLLM,
    pil,
    summary: AudioSummary,
    hearing: _Hearing,
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
    ask = _Pass(mllm, _template("director_system.txt").substitute(), seed, runtime)
    warnings: list[str] = []
    bar = runtime.progress(1 + len(batches), "director")
    try:
        runtime.check_interrupt()
        heard = hearing.whole()
        prompt = _template("director_global.txt").substitute(
            instruction=instruction.strip() or "(none: choose what fits the image and the audio)",
            audio=summary.describe(timeline),
            hearing=_Hearing.note(heard),
            n_shots=len(clips),
        )
        glob, error = ask(prompt, pil, heard, max_new_tokens, lambda obj: _read_global(obj, warnings))
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
            heard = hearing.shots(batch)
            prompt = _template("director_shots.txt").substitute(
                global_json=json.dumps(glob, ensure_ascii=False),
                instruction=instruction.strip() or "(none)",
                shot_lines="\n".join(summary.clip_line(c, timeline, levels[c.index]) for c in batch),
                hearing=_Hearing.note(heard),
                count=len(batch),
                first=batch[0].index,
                last=batch[-1].index,
            )
            budget = max(max_new_tokens, tokens_per_shot * len(batch))
            got, error = ask(prompt, None, heard, budget, lambda obj, b=batch: _read_shots(obj, b, rules, warnings))
            shots.update(got)
            if error is not None and any(c.index not in got for c in batch):
                errors.append(error)
            bar.update(1)
    finally:
        bar.close()
    t = ask.totals
    log.info(
        "director: %d model calls, %d tokens in (%d audio), %d out, %.1f s generating",
        t["calls"], t["tokens_in"], t["audio_tokens"], t["tokens_out"], t["generate_s"],
    )  # fmt: skip
    by_rules = [c.index for c in clips if c.index not in shots]
    if by_rules:
        warnings.append(
            f"shots {format_indices(by_rules)} were planned by rules (the MLLM's reply was unusable: "
            f"{errors[0][:FIELD_MAX_CHARS] if errors else 'no reply'})"
        )
    for w in warnings:
        log.warning("director: %s", w)
    return Storyline(shots=[shots.get(c.index, rules.shots[c.index]) for c in clips], warnings=warnings, **glob)

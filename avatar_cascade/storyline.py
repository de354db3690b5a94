"""The AVATAR_STORYLINE artefact: a global description plus one shot per sub-clip.

Units: ``frame_start`` / ``frame_end`` are inclusive output-frame indices equal to
the timeline's sub-clip ranges (consecutive shots share their seam frame, exactly
like the sub-clips); times in artist instructions are seconds.

A storyline is plain data: :meth:`Storyline.to_json` writes it, and
:meth:`Storyline.from_json` / :meth:`Storyline.validate` read it back against a
timeline, so an artist can edit it as JSON in the graph. Validation is strict
about structure (one shot per sub-clip, spans equal to the clip frame ranges,
``prompt`` present) and lenient about details (long text is truncated and
missing optional fields are defaulted, each with a warning).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import asdict, dataclass, field, replace
from fractions import Fraction

from .errors import InputError
from .timeline import SubClip, Timeline

log = logging.getLogger(__name__)

FORMAT = "avatar_storyline/1"
FIELD_MAX_CHARS = 300
SOURCES = ("director", "rules", "artist")
GLOBAL_FIELDS = ("character", "scene", "style", "emotional_arc")
SHOT_FIELDS = ("emotion", "expression", "action", "camera", "negative_prompt")
FIX = "edit the storyline JSON (one shot per sub-clip, in order) or regenerate it with the Director"


@dataclass
class Shot:
    """The plan for one sub-clip (frames inclusive, equal to the clip's range)."""

    index: int
    frame_start: int
    frame_end: int
    emotion: str
    expression: str
    action: str
    camera: str
    prompt: str
    negative_prompt: str
    source: str = "director"


@dataclass
class Storyline:
    """Global description (identity, scene, style, emotional arc) and the shots."""

    character: str
    scene: str
    style: str
    emotional_arc: str
    shots: list[Shot]
    global_negative: str = ""
    warnings: list[str] = field(default_factory=list)

    def global_prompt(self) -> str:
        """One prompt for the blueprint DiT: character, scene, style and emotional arc."""
        arc = f"emotional arc: {_clean(self.emotional_arc)}" if self.emotional_arc.strip() else ""
        parts = [_clean(p) for p in (self.character, self.scene, self.style)] + [arc]
        return ". ".join(p for p in parts if p) + "."

    def shot_prompt(self, i: int) -> str:
        """Prompt of sub-clip ``i``: the global context plus the shot's local plan."""
        s = self.shots[i]
        local = [
            _clean(s.prompt),
            *(
                f"{k}: {_clean(v)}"
                for k, v in (
                    ("emotion", s.emotion),
                    ("expression", s.expression),
                    ("action", s.action),
                    ("camera", s.camera),
                )
                if v.strip()
            ),
        ]
        return self.global_prompt() + " " + ". ".join(p for p in local if p) + "."

    def shot_negative(self, i: int) -> str:
        """Negative prompt of sub-clip ``i``: global negatives plus the shot's own."""
        terms: list[str] = []
        for text in (self.global_negative, self.shots[i].negative_prompt):
            for t in (x.strip() for x in text.split(",")):
                if t and t.lower() not in (u.lower() for u in terms):
                    terms.append(t)
        return ", ".join(terms)

    def to_json(self) -> str:
        return json.dumps({"format": FORMAT, **asdict(self)}, indent=1, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str, timeline: Timeline) -> Storyline:
        """Parse and validate storyline JSON; errors say line/column or field and shot."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            excerpt = text[max(0, exc.pos - 40) : exc.pos + 40]
            raise InputError(
                "storyline", excerpt, f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}", FIX
            ) from exc
        return cls.validate(data, timeline)

    @classmethod
    def validate(cls, data: object, timeline: Timeline) -> Storyline:
        """Check ``data`` (decoded JSON) against ``timeline`` and build a Storyline."""
        if not isinstance(data, dict):
            raise InputError("storyline", type(data).__name__, "the top level must be a JSON object", FIX)
        old = data.get("warnings")
        warnings = [w for w in old if isinstance(w, str)] if isinstance(old, list) else []
        n_old = len(warnings)
        missing: dict[str, list[int]] = {}
        texts = {k: read_text_field(data, k, k, warnings, missing) for k in (*GLOBAL_FIELDS, "global_negative")}
        shots_in = data.get("shots")
        if not isinstance(shots_in, list):
            raise InputError("storyline", shots_in, "shots: missing or not a list", FIX)
        clips = timeline.clips
        if len(shots_in) != len(clips):
            raise InputError(
                "storyline",
                f"{len(shots_in)} shots",
                f"shots: has {len(shots_in)} shots but the timeline has {len(clips)} sub-clips",
                FIX,
            )
        shots = [shot_from_dict(item, clip, warnings, missing) for item, clip in zip(shots_in, clips, strict=True)]
        for name, where in missing.items():
            warnings.append(f"{name} missing in shots {format_indices(where)}: set to ''")
        for w in warnings[n_old:]:
            log.warning("storyline: %s", w)
        return cls(shots=shots, warnings=warnings, **texts)


def shot_from_dict(
    item: object,
    clip: SubClip,
    warnings: list[str],
    missing: dict[str, list[int]] | None = None,
    source: str = "director",
) -> Shot:
    """Validate one shot against its sub-clip; raises InputError naming ``shots[i].field``.

    Missing ``index``/``frame_start``/``frame_end`` are taken from ``clip``; given
    ones must match it. Missing optional text fields become "" (recorded in
    ``missing`` by field name, or warned one by one when it is None).
    """
    where = f"shots[{clip.index}]"
    if not isinstance(item, dict):
        raise InputError("storyline", item, f"{where}: must be a JSON object", FIX)
    idx = item.get("index", clip.index)
    if not _is_int(idx) or idx != clip.index:
        problem = f"{where}.index: is {idx!r}, expected {clip.index} (shots are in order)"
        raise InputError("storyline", idx, problem, FIX)
    for key, want in (("frame_start", clip.frame_start), ("frame_end", clip.frame_end)):
        got = item.get(key, want)
        if not _is_int(got):
            raise InputError("storyline", got, f"{where}.{key}: must be a whole frame number", FIX)
        if got != want:
            span = f"sub-clip {clip.index} spans frames {clip.frame_start}-{clip.frame_end}"
            clash = "overlaps the previous shot" if key == "frame_start" and got < want else "does not match"
            raise InputError("storyline", got, f"{where}.{key}: {got} {clash} ({span})", FIX)
    if not isinstance(item.get("prompt"), (str, int, float, list)) or not str(item["prompt"]).strip():
        raise InputError("storyline", item.get("prompt"), f"{where}.prompt: missing", FIX)
    texts = {
        k: read_text_field(item, k, f"{where}.{k}", warnings, missing, clip.index) for k in ("prompt", *SHOT_FIELDS)
    }
    src = item.get("source", source)
    if src not in SOURCES:
        warnings.append(f"{where}.source: {src!r} is not one of {', '.join(SOURCES)}; set to {source!r}")
        src = source
    return Shot(index=clip.index, frame_start=clip.frame_start, frame_end=clip.frame_end, source=src, **texts)


def format_indices(indices: list[int]) -> str:
    """``[0, 1, 2, 5, 7, 8]`` -> ``"0-2, 5, 7-8"``."""
    out: list[list[int]] = []
    for i in sorted(set(indices)):
        if out and out[-1][1] == i - 1:
            out[-1][1] = i
        else:
            out.append([i, i])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in out)


def format_time(seconds: float) -> str:
    """Seconds -> ``m:ss.s``."""
    m, s = divmod(round(max(0.0, seconds), 1), 60.0)
    return f"{int(m)}:{s:04.1f}"


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _clean(text: str) -> str:
    return text.strip().rstrip(".;, ")


def read_text_field(
    d: dict,
    key: str,
    where: str,
    warnings: list[str],
    missing: dict[str, list[int]] | None = None,
    index: int | None = None,
) -> str:
    """Read text field ``d[key]``: coerce numbers / lists of scalars, cap the length, default "".

    A missing field is recorded in ``missing[key]`` when ``missing`` and ``index``
    are given, else warned about as ``where``. Raises InputError for non-text values.
    """
    v = d.get(key)
    if v is None:
        if missing is not None and index is not None:
            missing.setdefault(key, []).append(index)
        else:
            warnings.append(f"{where}: missing, set to ''")
        return ""
    if isinstance(v, (list, tuple)) and all(isinstance(x, (str, int, float)) for x in v):
        v = ", ".join(str(x) for x in v)
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        v = str(v)
    if not isinstance(v, str):
        raise InputError("storyline", v, f"{where}: must be text, got {type(v).__name__}", FIX)
    v = " ".join(v.split())
    if len(v) > FIELD_MAX_CHARS:
        warnings.append(f"{where}: truncated from {len(v)} to {FIELD_MAX_CHARS} characters")
        v = v[:FIELD_MAX_CHARS].rstrip()
    return v


# -- the rule-based plan ------------------------------------------------------------

_MOODS = {
    "happ": "happy",
    "joy": "joyful",
    "cheer": "cheerful",
    "smil": "happy",
    "excit": "excited",
    "sad": "sad",
    "melanchol": "melancholic",
    "angr": "angry",
    "serious": "serious",
    "calm": "calm",
    "confiden": "confident",
    "warm": "warm",
    "friendly": "friendly",
    "energ": "energetic",
    "passion": "passionate",
    "tender": "tender",
    "nervous": "nervous",
    "surpris": "surprised",
}
_GESTURES = (
    "open-palm hand gesture",
    "nodding for emphasis",
    "leaning slightly towards the camera",
    "one hand raised for emphasis",
    "shoulders moving with the rhythm of speech",
)
_CAMERAS = ("static medium close-up", "slow push-in, medium close-up", "static medium shot")
RULES_NEGATIVE = "blurry face, distorted mouth, deformed hands, identity change, flicker"
RULES_GLOBAL_NEGATIVE = "low quality, worst quality, jpeg artefacts, watermark, text, extra limbs, static frame"


def _mood(instruction: str) -> str:
    text = instruction.lower()
    hits = [(text.find(k), m) for k, m in _MOODS.items() if k in text]
    return min(hits)[1] if hits else "natural"


def energy_levels(energy: list[float] | None, n: int) -> list[str]:
    """Per-clip level from RMS energy in dBFS: quiet / calm / animated (relative to the loudest)."""
    if not energy:
        return ["calm"] * n
    loud = max(energy)
    out = []
    for e in energy:
        if e < -50.0 or e < loud - 30.0:
            out.append("quiet")
        elif e < loud - 8.0:
            out.append("calm")
        else:
            out.append("animated")
    return out


def _arc(levels: list[str], mood: str) -> str:
    score = {"quiet": 0, "calm": 1, "animated": 2}
    third = max(1, len(levels) // 3)
    first = sum(score[v] for v in levels[:third]) / third
    last = sum(score[v] for v in levels[-third:]) / third
    if len(set(levels)) == 1:
        shape = {"quiet": "mostly quiet and still", "calm": "steady and composed", "animated": "lively throughout"}
        return f"{mood}, {shape[levels[0]]}"
    if last - first > 0.5:
        return f"{mood}, building from calm to animated"
    if first - last > 0.5:
        return f"{mood}, starting animated and settling down"
    return f"{mood}, rising and falling with the speech"


def rule_based_storyline(instruction: str, timeline: Timeline, energy: list[float] | None) -> Storyline:
    """A deterministic storyline from the instruction and per-clip audio energy.

    Args:
        instruction: the artist's text (mood words such as "happy" set the emotion).
        timeline: the master timeline (one shot per sub-clip).
        energy: per-clip RMS energy in dBFS (louder clips get livelier expression and
            gestures; quiet ones a calm face with the mouth closed), or None.
    """
    if energy is not None and len(energy) != len(timeline.clips):
        raise InputError(
            "energy",
            f"{len(energy)} values",
            f"needs one value per sub-clip ({len(timeline.clips)})",
            "pass the per-clip energy of this timeline",
        )
    mood = _mood(strip_timed_instructions(instruction))
    levels = energy_levels(energy, len(timeline.clips))
    shots = []
    for clip, level in zip(timeline.clips, levels, strict=True):
        if level == "quiet":
            emo, expr, act, cam = (
                f"{mood}, at rest",
                "relaxed face, mouth closed, soft gaze at the camera",
                "still, gentle breathing, small head movement",
                _CAMERAS[0],
            )
        elif level == "calm":
            emo, expr, act, cam = (
                mood,
                "natural speaking expression, clear lip movement, eyes on the camera",
                "subtle head movement",
                _CAMERAS[0],
            )
        else:
            emo, expr = f"{mood}, animated", "expressive face, wide mouth movements, raised eyebrows"
            act, cam = _GESTURES[clip.index % len(_GESTURES)], _CAMERAS[clip.index % len(_CAMERAS)]
        shots.append(
            Shot(
                clip.index,
                clip.frame_start,
                clip.frame_end,
                emo,
                expr,
                act,
                cam,
                f"the person speaks to the camera, {expr}, {act}",
                RULES_NEGATIVE,
                "rules",
            )
        )
    scene = " ".join(strip_timed_instructions(instruction).split())[:FIELD_MAX_CHARS] or "speaking to the camera"
    return Storyline(
        character="the person in the reference image, same face, hair and clothes",
        scene=scene,
        style="photorealistic video, natural lighting, sharp focus, steady framing",
        emotional_arc=_arc(levels, mood),
        shots=shots,
        global_negative=RULES_GLOBAL_NEGATIVE,
    )


# -- artist control: timed instructions --------------------------------------------

_T = r"(\d+:\d{1,2}(?::\d{1,2})?(?:\.\d+)?|\d+(?:\.\d+)?(?:\s*(?:s|secs?|seconds)\b)?)"
_RANGE = re.compile(rf"\b(?:during|from|between)?\s*{_T}\s*(?:-|\u2013|to|and|until)\s*{_T}", re.I)
_POINT = re.compile(rf"\b(?:at|@|around)\s+{_T}", re.I)
_CLAUSE = re.compile(r"[;,\n]|\.(?!\d)|\b(?:and then|then|and)\b(?=\s+(?:at|during|from|between)\b)", re.I)
_EXPRESSION_WORDS = {
    "smil": "happy",
    "laugh": "joyful",
    "grin": "happy",
    "frown": "displeased",
    "cry": "sad",
    "tear": "sad",
    "wink": "playful",
    "surpris": "surprised",
    "shock": "shocked",
    "sad": "sad",
    "angr": "angry",
    "serious": "serious",
    "blink": "",
    "mouth": "",
    "eyebrow": "",
    "pout": "sulky",
}


@dataclass
class TimedInstruction:
    """An artist instruction pinned to a time (``end_s`` None) or a span, in seconds."""

    start_s: float
    end_s: float | None
    text: str


def _seconds(t: str) -> float:
    t = re.sub(r"[a-z\s]+$", "", t.strip().lower())
    total = 0.0
    for part in t.split(":"):
        total = total * 60.0 + float(part)
    return total


def _clauses(instruction: str) -> list[str]:
    return [c.strip() for c in _CLAUSE.split(instruction) if c and c.strip()]


def parse_timed_instructions(instruction: str) -> list[TimedInstruction]:
    """Find "smile at 0:30", "at 1:05 look left", "look left during 0:10-0:20" (mm:ss or seconds)."""
    found = []
    for clause in _clauses(instruction):
        m = _RANGE.search(clause)
        if m and (":" in m.group(0) or re.search(r"during|from|between|s\b|sec", m.group(0), re.I)):
            a, b = sorted((_seconds(m.group(1)), _seconds(m.group(2))))
        else:
            m = _POINT.search(clause)
            if not m:
                continue
            a, b = _seconds(m.group(1)), None
        text = (clause[: m.start()] + " " + clause[m.end() :]).strip(" .,;:-")
        text = re.sub(r"^(?:and|then|please)\s+", "", " ".join(text.split()), flags=re.I)
        if text:
            found.append(TimedInstruction(a, b, text[:FIELD_MAX_CHARS]))
    return found


def strip_timed_instructions(instruction: str) -> str:
    """The instruction without its timed clauses (what applies to the whole video)."""
    keep = [c for c in _clauses(instruction) if not (_RANGE.search(c) or _POINT.search(c))]
    return ", ".join(keep)


def _owning_clip(timeline: Timeline, frame: int) -> int:
    """Index of the clip that owns ``frame`` (a seam frame belongs to the clip it starts)."""
    idx = 0
    for c in timeline.clips:
        if c.frame_start <= frame:
            idx = c.index
    return idx


def apply_artist_instructions(storyline: Storyline, instruction: str, timeline: Timeline) -> Storyline:
    """Apply timed artist instructions to the shots covering their times (they win over the model)."""
    shots = list(storyline.shots)
    warnings = list(storyline.warnings)
    fps = timeline.fps
    for ti in parse_timed_instructions(instruction):
        f0 = int(Fraction(ti.start_s).limit_denominator(1000) * fps)
        f1 = f0 if ti.end_s is None else max(f0, int(Fraction(ti.end_s).limit_denominator(1000) * fps) - 1)
        if f0 >= timeline.num_frames:
            warnings.append(
                f"'{ti.text}' at {format_time(ti.start_s)} is after the end of the audio "
                f"({format_time(timeline.duration_s)}): ignored"
            )
            continue
        first, last = _owning_clip(timeline, f0), _owning_clip(timeline, min(f1, timeline.num_frames - 1))
        hits = [k for k in _EXPRESSION_WORDS if k in ti.text.lower()]
        for i in range(first, last + 1):
            s = shots[i]
            changes = {"expression": ti.text} if hits else {"action": ti.text}
            if hits and _EXPRESSION_WORDS[hits[0]]:
                changes["emotion"] = _EXPRESSION_WORDS[hits[0]]
            prompt = f"{ti.text}, {s.prompt}" if s.source != "artist" else f"{s.prompt}, {ti.text}"
            shots[i] = replace(s, prompt=prompt[:FIELD_MAX_CHARS], source="artist", **changes)
        log.info("artist instruction %r applied to shots %s", ti.text, format_indices(list(range(first, last + 1))))
    return replace(storyline, shots=shots, warnings=warnings)

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

The rule-based plan lives in :mod:`avatar_cascade.stages.director.rules`, the artist's
timed instructions in :mod:`avatar_cascade.stages.director.cues`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field

from avatar_cascade.artefacts.timeline import SubClip, Timeline
from avatar_cascade.core.errors import InputError

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

"""Artist control: timed instructions ("smile at 0:30") pinned onto the shots covering them.

Only explicit times are recognised, and a time must look like one:

* ``m:ss`` or ``h:mm:ss`` (decimals allowed): "smile at 0:30", "at 1:05 look left";
* a number with a seconds unit (``s``, ``sec``, ``secs``, ``second``, ``seconds``):
  "wave at 45s", "nod from 12.5 s to 14 s";
* a span with ``during`` / ``from`` / ``between`` or a dash, where at least one end
  looks like a time: "look left during 0:10-0:20", "between 10 and 20 seconds".

A bare number is not a time ("look at 2 people" is no cue; "at 2" neither - write
"at 2s" or "at 0:02"). Musical or spoken landmarks ("during the chorus", "when she
says hello") are not located: nothing analyses lyrics or song structure, so such
clauses stay part of the general instruction the Director model reads.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, replace
from fractions import Fraction

from avatar_cascade.artefacts.storyline import FIELD_MAX_CHARS, Storyline, format_indices, format_time
from avatar_cascade.artefacts.timeline import Timeline

log = logging.getLogger(__name__)

# Every time token starts at the start of a number ((?<![\d.:]) - no match attempt inside a run of digits),
# so a prompt holding a long run of digits costs linear time, not quadratic.
_START = r"(?<![\d.:])"
_CLOCK = r"\d+:\d{1,2}(?::\d{1,2})?(?:\.\d+)?"
_UNIT = r"\s*(?:seconds?|secs?|s)\b"
_TOKEN = rf"{_START}(?:{_CLOCK}|\d+(?:\.\d+)?(?:{_UNIT})?)"
_RANGE = re.compile(
    rf"(?:\b(?:during|from|between|at)\s+)?({_TOKEN})\s*(?:-|\u2013|\bto\b|\band\b|\buntil\b)\s*({_TOKEN})", re.I
)
_POINT = re.compile(rf"(?:\bat\b|@|\baround\b)\s*{_START}({_CLOCK}|\d+(?:\.\d+)?{_UNIT})", re.I)
_TIMELIKE = re.compile(rf"^(?:{_CLOCK}|\d+(?:\.\d+)?{_UNIT})$", re.I)
_JOIN = re.compile(r"\b(?:and then|and|then)\b", re.I)
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
    out = []
    for c in _CLAUSE.split(instruction):
        if c and c.strip():
            out += [part.strip() for part in _split_cues(c) if part.strip()]
    return out


def _time_spans(clause: str) -> list[tuple[int, int]]:
    """``(start, end)`` of every time in ``clause`` (time-like ranges, then points outside them), in order."""
    spans = [m.span() for m in _RANGE.finditer(clause) if _TIMELIKE.match(m.group(1)) or _TIMELIKE.match(m.group(2))]
    for m in _POINT.finditer(clause):
        if not any(a <= m.start() < b for a, b in spans):
            spans.append(m.span())
    return sorted(spans)


def _split_cues(clause: str) -> list[str]:
    """Split "wave at 2s and nod at 0:03.5" into one clause per time: at the last "and" / "then" between
    two consecutive times (the "and" of "between 10 and 20 seconds" lies inside its time). Linear time."""
    spans = _time_spans(clause)
    cuts = []
    for (_, end), (start, _) in zip(spans, spans[1:]):
        joins = list(_JOIN.finditer(clause, end, start))
        if joins:
            cuts.append(joins[-1].span())
    if not cuts:
        return [clause]
    parts, pos = [], 0
    for a, b in cuts:
        parts.append(clause[pos:a])
        pos = b
    return [*parts, clause[pos:]]


def find_time(clause: str) -> tuple[float, float | None, re.Match] | None:
    """The time (start, end or None, seconds) a clause is pinned to, and its match; None when it has none."""
    for m in _RANGE.finditer(clause):
        if _TIMELIKE.match(m.group(1)) or _TIMELIKE.match(m.group(2)):
            a, b = sorted((_seconds(m.group(1)), _seconds(m.group(2))))
            return a, b, m
    m = _POINT.search(clause)
    return (_seconds(m.group(1)), None, m) if m else None


def parse_timed_instructions(instruction: str) -> list[TimedInstruction]:
    """Find "smile at 0:30", "at 1:05 look left", "look left during 0:10-0:20", "wave at 45s"."""
    found = []
    for clause in _clauses(instruction):
        hit = find_time(clause)
        if hit is None:
            continue
        a, b, m = hit
        text = (clause[: m.start()] + " " + clause[m.end() :]).strip(" .,;:-")
        text = re.sub(r"^(?:and|then|please)\s+", "", " ".join(text.split()), flags=re.I)
        if text:
            found.append(TimedInstruction(a, b, text[:FIELD_MAX_CHARS]))
    return found


def strip_timed_instructions(instruction: str) -> str:
    """The instruction without its timed clauses (what applies to the whole video)."""
    return ", ".join(c for c in _clauses(instruction) if find_time(c) is None)


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
            log.warning("director: %s", warnings[-1])  # on the console too, not only in storyline.json
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

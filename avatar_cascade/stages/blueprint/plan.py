"""The blueprint's window plan: which blueprint frames each window renders and with which prompt.

Units: blueprint frames (``i`` shows time ``i / blueprint_fps`` seconds); output
frames are the timeline's (``f`` shows ``f / video_fps``).

Windows are anchored on the reference, not on each other: every window starts
from the reference image (its frame 0) and renders ``length`` frames; window 0
starts at time 0 and keeps all its frames, window ``w >= 1`` starts ``lead``
frames before its *chunk* and drops those first ``lead`` frames (the move away
from the reference's pose), keeping ``[chunk_start, chunk_start + count)``.
Chunks tile the blueprint exactly: window 0 holds ``[0, window_frames)``, then
every window ``window_frames - lead`` more. The last window is cut to the
shortest 4n+1 length that reaches the end. Every frame is therefore one DiT
generation from the reference (anchor depth 1) at any duration.

Prompt per window (``prompt_mode``), because a window can span several shots:

* ``"centre"``: the shot active at the window's centre frame.
* ``"majority"`` (default): the shot covering most of the window's frames
  (ties: the one holding the centre frame, else the earlier shot).
* ``"combine"``: the global prompt followed by the local plans of every shot
  the window touches, in order ("... Then ..."); negatives are merged.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from fractions import Fraction

from avatar_cascade.core.errors import InputError

PROMPT_MODES = ("majority", "centre", "combine")


@dataclass(frozen=True)
class BlueprintWindow:
    """One window of the blueprint (blueprint frame indices).

    Attributes:
        index: window number.
        start: blueprint time (frame index) of its first rendered frame, the reference.
        length: frames it renders (4n+1).
        count: frames its chunk holds (``[chunk_start, chunk_start + count)``).
        chunk_start: first blueprint frame it keeps (``start + lead``).
        shots: storyline shots (sub-clips) its frames fall in, in order.
        prompt / negative: the text it is conditioned on.
    """

    index: int
    start: int
    length: int
    count: int
    shots: tuple[int, ...]
    prompt: str = ""
    negative: str = ""
    chunk_start: int = 0

    @property
    def lead(self) -> int:
        """Rendered frames dropped before the chunk (0 for window 0)."""
        return self.chunk_start - self.start


def window_times(window: BlueprintWindow, bp_fps: Fraction) -> list[Fraction]:
    """Time in seconds (exact) of every frame the window renders (frame ``j`` shows ``(start + j) / bp_fps``)."""
    return [Fraction(window.start + j) / bp_fps for j in range(window.length)]


def _round_up_4n1(n: int) -> int:
    n = max(n, 5)
    return n + ((1 - n) % 4)


def plan_window_spans(total: int, window_frames: int, lead: int) -> list[tuple[int, int, int, int]]:
    """``(start, length, chunk_start, count)`` of every window of a blueprint of ``total`` frames."""
    if total < 1:
        raise ValueError("a blueprint needs at least one frame")
    first = min(window_frames, total)
    spans = [(0, min(window_frames, _round_up_4n1(total)), 0, first)]
    stride = window_frames - lead
    c = first
    while c < total:
        count = min(stride, total - c)
        length = window_frames if count == stride else min(window_frames, _round_up_4n1(lead + count))
        spans.append((c - lead, length, c, count))
        c += count
    return spans


def shot_of_frames(timeline, bp_fps: Fraction, frames: range) -> list[int]:
    """Sub-clip (= storyline shot) index of every blueprint frame in ``frames``."""
    ends = [c.frame_end for c in timeline.clips]
    out = []
    for i in frames:
        f = int(Fraction(i) / bp_fps * timeline.fps)  # output frame shown at that time (floor)
        out.append(min(bisect.bisect_left(ends, f), len(ends) - 1))
    return out


def choose_shots(per_frame: list[int], mode: str) -> tuple[int, ...]:
    """The shot(s) a window is prompted with, from the shot of each of its frames."""
    centre = per_frame[(len(per_frame) - 1) // 2]
    if mode == "centre":
        return (centre,)
    if mode == "combine":
        return tuple(dict.fromkeys(per_frame))
    counts: dict[int, int] = {}
    for k in per_frame:
        counts[k] = counts.get(k, 0) + 1
    best = max(counts.values())
    tied = [k for k in counts if counts[k] == best]
    return (centre,) if centre in tied else (min(tied),)


def local_prompt(storyline, k: int) -> str:
    """The shot's own plan: its prompt without the global description in front."""
    full, head = storyline.shot_prompt(k), storyline.global_prompt()
    return full[len(head) :].strip() if full.startswith(head) else full


def window_text(storyline, shots: tuple[int, ...]) -> tuple[str, str]:
    """(prompt, negative) for a window prompted with ``shots``."""
    if len(shots) == 1:
        return storyline.shot_prompt(shots[0]), storyline.shot_negative(shots[0])
    prompt = storyline.global_prompt() + " " + " Then ".join(local_prompt(storyline, k) for k in shots)
    terms: list[str] = []
    for k in shots:
        for t in (x.strip() for x in storyline.shot_negative(k).split(",")):
            if t and t.lower() not in (u.lower() for u in terms):
                terms.append(t)
    return prompt, ", ".join(terms)


def plan_windows(
    timeline, storyline, bp_fps: Fraction, total: int, window_frames: int, lead: int, prompt_mode: str
) -> list[BlueprintWindow]:
    """Every window of a blueprint of ``total`` frames at ``bp_fps``, with its prompt."""
    if prompt_mode not in PROMPT_MODES:
        raise InputError(
            "prompt_mode", prompt_mode, "is not a known way to prompt a window", f"use one of {', '.join(PROMPT_MODES)}"
        )
    if len(storyline.shots) != len(timeline.clips):
        raise InputError(
            "storyline",
            f"{len(storyline.shots)} shots",
            f"the timeline has {len(timeline.clips)} sub-clips",
            "connect the storyline made for this timeline",
        )
    windows = []
    for w, (start, length, chunk_start, count) in enumerate(plan_window_spans(total, window_frames, lead)):
        per_frame = shot_of_frames(timeline, bp_fps, range(chunk_start, chunk_start + count))
        shots = choose_shots(per_frame, prompt_mode)
        prompt, negative = window_text(storyline, shots)
        windows.append(BlueprintWindow(w, start, length, count, shots, prompt, negative, chunk_start))
    return windows

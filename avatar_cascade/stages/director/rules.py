"""The rule-based storyline: a deterministic plan from the instruction and the audio's loudness.

Used when there is no Director model, and for every shot (or global field) the
model's reply could not provide. Loud sub-clips get livelier expression and
gestures, quiet ones a calm face with the mouth closed; mood words in the
instruction ("happy", "serious", ...) set the emotion.
"""

from __future__ import annotations

from avatar_cascade.artefacts.storyline import FIELD_MAX_CHARS, Shot, Storyline
from avatar_cascade.artefacts.timeline import Timeline
from avatar_cascade.core.errors import InputError
from avatar_cascade.stages.director.cues import strip_timed_instructions

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

"""AVATAR_STORYLINE: schema validation, JSON round trip, rule-based plan, artist timing."""

from __future__ import annotations

import json

import pytest

from avatar_cascade.artefacts.storyline import FIELD_MAX_CHARS, Storyline, format_indices
from avatar_cascade.artefacts.timeline import plan_timeline
from avatar_cascade.core.errors import InputError
from avatar_cascade.stages.director.cues import (
    apply_artist_instructions,
    parse_timed_instructions,
    strip_timed_instructions,
)
from avatar_cascade.stages.director.rules import rule_based_storyline

SR = 16000


def _timeline(seconds: float):
    return plan_timeline(int(seconds * SR), SR, 25, 81)  # 81-frame clips: one every 3.2 s


def _data(tl) -> dict:
    return json.loads(rule_based_storyline("a cheerful talk", tl, None).to_json())


def test_round_trip_is_identical():
    tl = _timeline(20)
    story = rule_based_storyline("Talk warmly about the weather", tl, [-20.0 - i for i in range(len(tl.clips))])
    again = Storyline.from_json(story.to_json(), tl)
    assert again == story
    assert again.to_json() == story.to_json()


def test_spans_follow_the_timeline_and_share_seams():
    tl = _timeline(20)
    story = rule_based_storyline("", tl, None)
    assert [(s.frame_start, s.frame_end) for s in story.shots] == [(c.frame_start, c.frame_end) for c in tl.clips]
    assert all(a.frame_end == b.frame_start for a, b in zip(story.shots, story.shots[1:], strict=False))
    assert {s.source for s in story.shots} == {"rules"}


def test_invalid_json_names_line_and_column():
    tl = _timeline(7)
    text = _data(tl)
    broken = json.dumps(text, indent=1).replace('"scene":', '"scene"', 1)
    with pytest.raises(InputError) as err:
        Storyline.from_json(broken, tl)
    assert err.value.input_name == "storyline"
    assert "line" in str(err.value) and "column" in str(err.value)


def test_missing_prompt_names_field_and_shot():
    tl = _timeline(15)
    data = _data(tl)
    del data["shots"][3]["prompt"]
    with pytest.raises(InputError, match=r"shots\[3\]\.prompt: missing"):
        Storyline.validate(data, tl)


def test_overlapping_shot_is_rejected():
    tl = _timeline(15)
    data = _data(tl)
    data["shots"][2]["frame_start"] -= 10  # starts inside shot 1
    with pytest.raises(InputError, match=r"shots\[2\]\.frame_start: \d+ overlaps the previous shot"):
        Storyline.validate(data, tl)


def test_span_not_matching_the_clip_is_rejected():
    tl = _timeline(15)
    data = _data(tl)
    data["shots"][1]["frame_end"] += 4
    with pytest.raises(InputError, match=r"shots\[1\]\.frame_end: .*does not match"):
        Storyline.validate(data, tl)


def test_wrong_shot_count_is_rejected():
    tl = _timeline(15)
    data = _data(tl)
    data["shots"].pop()
    with pytest.raises(InputError, match=rf"has {len(tl.clips) - 1} shots but the timeline has {len(tl.clips)}"):
        Storyline.validate(data, tl)


def test_non_text_field_is_rejected():
    tl = _timeline(7)
    data = _data(tl)
    data["shots"][0]["emotion"] = {"mood": "happy"}
    with pytest.raises(InputError, match=r"shots\[0\]\.emotion: must be text"):
        Storyline.validate(data, tl)


def test_long_text_truncated_and_missing_optional_defaulted_with_warnings():
    tl = _timeline(10)
    data = _data(tl)
    data["shots"][1]["prompt"] = "word " * 200
    for k in (0, 2):
        del data["shots"][k]["camera"]
    del data["style"]
    story = Storyline.validate(data, tl)
    assert len(story.shots[1].prompt) <= FIELD_MAX_CHARS
    assert story.shots[0].camera == "" and story.style == ""
    joined = "\n".join(story.warnings)
    assert "shots[1].prompt: truncated" in joined
    assert "camera missing in shots 0, 2" in joined
    assert "style: missing" in joined


def test_prompts_combine_global_and_shot():
    tl = _timeline(7)
    story = rule_based_storyline("calm interview", tl, None)
    story.character, story.scene, story.style, story.emotional_arc = "a man", "a library", "film look", "calm to warm"
    g = story.global_prompt()
    assert all(x in g for x in ("a man", "a library", "film look", "calm to warm"))
    story.shots[1].camera = "slow dolly-in"
    p = story.shot_prompt(1)
    assert p.startswith(g) and "slow dolly-in" in p and story.shots[1].expression in p
    story.global_negative = "blurry, watermark"
    story.shots[1].negative_prompt = "Blurry, frozen face"
    assert story.shot_negative(1) == "blurry, watermark, frozen face"


def test_rules_follow_energy():
    tl = _timeline(12)  # 4 clips
    story = rule_based_storyline("be happy", tl, [-12.0, -60.0, -25.0, -11.0])
    loud, quiet, calm = story.shots[0], story.shots[1], story.shots[2]
    assert "mouth closed" in quiet.expression
    assert "animated" in loud.emotion and "gesture" in loud.action
    assert "happy" in calm.emotion
    assert rule_based_storyline("be happy", tl, [-12.0, -60.0, -25.0, -11.0]) == story  # deterministic
    with pytest.raises(InputError):
        rule_based_storyline("", tl, [-10.0])


def test_parse_timed_instructions():
    found = parse_timed_instructions(
        "Be warm. Smile at 0:30 and at 1:05 look left, look right during 0:10-0:20; "
        "wave at 45s. Nod from 12.5 s to 14 s"
    )
    got = [(t.start_s, t.end_s, t.text) for t in found]
    assert got == [
        (30.0, None, "Smile"),
        (65.0, None, "look left"),
        (10.0, 20.0, "look right"),
        (45.0, None, "wave"),
        (12.5, 14.0, "Nod"),
    ]
    assert strip_timed_instructions("Be warm. Smile at 0:30, speak slowly") == "Be warm, speak slowly"


@pytest.mark.parametrize(
    ("instruction", "expected"),
    [
        ("look at 2 people", []),  # a bare number is not a time
        ("smile at 2", []),
        ("between 2 and 3 people", []),
        ("look at 2s", [(2.0, None, "look")]),
        ("look at 0:02", [(2.0, None, "look")]),
        ("wave @ 30 sec", [(30.0, None, "wave")]),
        ("nod between 10 and 20 seconds", [(10.0, 20.0, "nod")]),
        ("smile at 0:02 - 0:04", [(2.0, 4.0, "smile")]),
        ("at 1:02:03.5 bow", [(3723.5, None, "bow")]),
    ],
)
def test_only_time_like_tokens_make_a_cue(instruction, expected):
    assert [(t.start_s, t.end_s, t.text) for t in parse_timed_instructions(instruction)] == expected


def test_landmarks_without_times_stay_in_the_general_instruction():
    text = "Raise both arms during the chorus, look at 2 people, smile at 0:04"
    assert [t.text for t in parse_timed_instructions(text)] == ["smile"]
    assert strip_timed_instructions(text) == "Raise both arms during the chorus, look at 2 people"
    tl = _timeline(12)
    story = apply_artist_instructions(rule_based_storyline(text, tl, None), text, tl)
    assert [s.source for s in story.shots] == ["rules", "artist", "rules", "rules"]
    assert "during the chorus" in story.scene and "look at 2 people" in story.scene


def test_smile_at_30s_lands_on_the_shot_covering_30s():
    tl = _timeline(60)
    story = apply_artist_instructions(rule_based_storyline("", tl, None), "smile at 0:30", tl)
    hit = [s for s in story.shots if s.source == "artist"]
    assert len(hit) == 1
    t0, t1 = tl.frame_time(hit[0].frame_start), tl.frame_time(hit[0].frame_end)
    assert t0 <= 30.0 < t1
    assert hit[0].expression == "smile" and hit[0].emotion == "happy" and hit[0].prompt.startswith("smile")


def test_timed_range_covers_every_overlapping_shot_and_late_times_warn():
    tl = _timeline(60)
    story = apply_artist_instructions(
        rule_based_storyline("", tl, None), "look left during 0:10-0:20. wave at 5:00", tl
    )
    hit = [s.index for s in story.shots if s.source == "artist"]
    assert hit == [3, 4, 5, 6]  # clips start every 3.2 s: 9.6, 12.8, 16.0, 19.2
    assert story.shots[3].action == "look left"
    assert any("5:00" in w and "after the end" in w for w in story.warnings)


def test_format_indices():
    assert format_indices([5, 0, 1, 2, 7, 8]) == "0-2, 5, 7-8"

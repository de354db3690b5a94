"""JSON out of a language model's reply: extraction from prose and code fences, and repair.

Small models write almost-JSON: single quotes, unquoted keys, Python literals,
trailing or missing commas, comments, mismatched closers, and replies cut off
by the token budget. :func:`parse_model_json` finds the first JSON block in a
reply and, when strict decoding fails, repairs it with the ``json-repair``
library. What the JSON must contain (keys, types, one shot per sub-clip) is
checked by the Director's readers, not here.
"""

from __future__ import annotations

import json
import re


def repair_json(text: str) -> str:
    """Fix what small models get wrong in JSON (``json_repair``); returns compact text ``json.loads`` accepts.

    Handles single-quoted strings, unquoted keys and bare-word values, Python
    literals (True/None), trailing and missing commas, ``//`` comments, stray or
    mismatched closers, and truncation (open strings and brackets are closed; a
    dangling key without a value is dropped).
    """
    from json_repair import repair_json as repair

    return repair(text, ensure_ascii=False, separators=(",", ":"))


def _extract(text: str) -> str | None:
    """The first JSON-looking block: inside a code fence if there is one, balanced if possible.

    Kept here rather than left to ``json_repair``: given prose with several JSON values, it
    returns them all as one list, while a model's answer is its first block.
    """
    fence = re.search(r"```(?:json|JSON)?\s*\n?(.*?)(?:```|$)", text, re.S)
    if fence and re.search(r"[{\[]", fence.group(1)):
        text = fence.group(1)
    starts = [p for p in (text.find("{"), text.find("[")) if p >= 0]
    if not starts:
        return None
    start = min(starts)
    depth, in_str, esc = 0, False, False
    for j in range(start, len(text)):
        c = text[j]
        if in_str:
            if esc:
                esc = False
            elif c == "\\":
                esc = True
            elif c == '"':
                in_str = False
        elif c == '"':
            in_str = True
        elif c in "{[":
            depth += 1
        elif c in "}]":
            depth -= 1
            if depth == 0:
                return text[start : j + 1]
    return text[start:]


def parse_model_json(text: str) -> object:
    """Decode the JSON in a model reply (prose, code fences and common defects tolerated).

    Raises:
        ValueError: when the reply holds no JSON block (a block is always repaired into a value;
            the Director's readers then say what it lacks).
    """
    block = _extract(text)
    if block is None:
        raise ValueError("the reply contains no JSON object")
    try:
        return json.loads(block)
    except json.JSONDecodeError:
        pass
    return json.loads(repair_json(block))

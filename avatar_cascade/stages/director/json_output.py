"""JSON out of a language model's reply: extraction from prose and code fences, and repair.

Small models write almost-JSON: single quotes, unquoted keys, Python literals,
trailing or missing commas, comments, mismatched closers, and replies cut off
by the token budget. :func:`parse_model_json` finds the first JSON block in a
reply and, when strict decoding fails, runs :func:`repair_json` on it.
"""

from __future__ import annotations

import json
import re

_BARE = re.compile(r"[^\s{}\[\]:,\"']+")
_NUMBER = re.compile(r"-?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_LITERALS = {"true": "true", "false": "false", "null": "null", "True": "true", "False": "false", "None": "null"}


def _number(word: str) -> str:
    try:
        return str(int(word))
    except ValueError:
        return json.dumps(float(word))


def _read_string(text: str, i: int) -> tuple[str, int]:
    """Read a '...' or "..." string starting at ``i``; returns (decoded, next index). Closes it at EOF."""
    quote, out, i = text[i], [], i + 1
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            try:
                out.append(
                    json.loads(f'"\\{text[i + 1]}"') if text[i + 1] != "u" else chr(int(text[i + 2 : i + 6], 16))
                )
                i += 6 if text[i + 1] == "u" else 2
            except ValueError:
                out.append(text[i + 1])
                i += 2
            continue
        if c == quote:
            return "".join(out), i + 1
        out.append(c)
        i += 1
    return "".join(out), i


def repair_json(text: str) -> str:
    """Fix what small models get wrong in JSON; returns text that ``json.loads`` accepts.

    Handles single-quoted strings, unquoted keys and bare-word values, Python
    literals (True/None), trailing and missing commas, ``//`` comments, stray or
    mismatched closers, and truncation (open strings, dangling keys and open
    brackets are closed).
    """
    out: list[str] = []
    stack: list[list] = []  # [bracket, expecting] with expecting in key/colon/value/comma
    i, done = 0, False

    def value_start() -> None:
        if stack and stack[-1][1] == "comma":
            out.append(",")
            stack[-1][1] = "key" if stack[-1][0] == "{" else "value"
        if stack and stack[-1][1] == "colon":
            out.append(":")

    def value_end() -> None:
        nonlocal done
        if stack:
            stack[-1][1] = "comma"
        else:
            done = True

    while i < len(text) and not done:
        c = text[i]
        if c.isspace():
            i += 1
        elif text.startswith("//", i):
            j = text.find("\n", i)
            i = len(text) if j < 0 else j
        elif c in "{[":
            value_start()
            out.append(c)
            stack.append([c, "key" if c == "{" else "value"])
            i += 1
        elif c in "}]":
            want = "{" if c == "}" else "["
            if any(b == want for b, _ in stack):
                while stack:
                    b, exp = stack.pop()
                    if out[-1] == ",":
                        out.pop()
                    if exp in ("colon", "value") and b == "{" and out[-1] != "{":
                        out.append(":null" if exp == "colon" else "null")
                    out.append("}" if b == "{" else "]")
                    if b == want:
                        break
                value_end()
            i += 1
        elif c == ",":
            if stack and stack[-1][1] == "comma":
                out.append(",")
                stack[-1][1] = "key" if stack[-1][0] == "{" else "value"
            i += 1
        elif c == ":":
            if stack and stack[-1][1] == "colon":
                out.append(":")
                stack[-1][1] = "value"
            i += 1
        else:
            if c in "\"'":
                s, i = _read_string(text, i)
                token = json.dumps(s, ensure_ascii=False)
            else:
                m = _BARE.match(text, i)
                word, i = m.group(0), m.end()
                is_key = bool(stack) and stack[-1][0] == "{" and stack[-1][1] in ("key", "comma")
                if is_key:
                    token = json.dumps(word)
                else:
                    token = _LITERALS.get(word) or (_number(word) if _NUMBER.fullmatch(word) else json.dumps(word))
            if stack and stack[-1][0] == "{" and stack[-1][1] in ("key", "comma"):
                if stack[-1][1] == "comma":
                    out.append(",")
                out.append(token)
                stack[-1][1] = "colon"
            else:
                value_start()
                out.append(token)
                if stack and stack[-1][1] == "colon":
                    stack[-1][1] = "value"
                value_end()
    while stack:  # truncated: close what is open
        b, exp = stack.pop()
        if out[-1] == ",":
            out.pop()
        if b == "{" and exp in ("colon", "value") and out[-1] != "{":
            out.append(":null" if exp == "colon" else "null")
        out.append("}" if b == "{" else "]")
        if stack:
            stack[-1][1] = "comma"
    return "".join(out)


def _extract(text: str) -> str | None:
    """The first JSON-looking block: inside a code fence if there is one, balanced if possible."""
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
        ValueError: naming what is wrong (no JSON found, or where decoding failed).
    """
    block = _extract(text)
    if block is None:
        raise ValueError("the reply contains no JSON object")
    try:
        return json.loads(block)
    except json.JSONDecodeError:
        pass
    fixed = repair_json(block)
    try:
        return json.loads(fixed)
    except json.JSONDecodeError as exc:
        raise ValueError(f"the JSON is invalid at line {exc.lineno} column {exc.colno}: {exc.msg}") from exc

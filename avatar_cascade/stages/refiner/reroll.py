"""The refiner's ``reroll`` text: which clips to render again with new seeds."""

from __future__ import annotations

import re

from avatar_cascade.core.errors import InputError

_REROLL_TOKEN = re.compile(r"^(\d+)(?:-(\d+))?$")


def parse_reroll(text: str | None, num_clips: int | None = None) -> dict[int, int]:
    """``"3, 7-9"`` -> ``{3: 1, 7: 1, 8: 1, 9: 1}``: clip index (0-based) -> seed offset.

    Every mention adds one to a clip's offset, so ``"3, 3"`` is clip 3's second re-roll.
    """
    out: dict[int, int] = {}
    for token in re.split(r"[,;\s]+", re.sub(r"\s*-\s*", "-", (text or "").strip())):
        if not token:
            continue
        m = _REROLL_TOKEN.match(token)
        if m is None:
            raise InputError("reroll", text, f"cannot read {token!r}", "list clip numbers like '3, 7-9'")
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) is not None else lo
        if hi < lo:
            raise InputError("reroll", text, f"range {token!r} runs backwards", f"write {hi}-{lo}")
        if num_clips is not None and hi >= num_clips:
            raise InputError(
                "reroll", text, f"clip {hi} does not exist (clips are 0-{num_clips - 1})", "use clip numbers in range"
            )
        for k in range(lo, hi + 1):
            out[k] = out.get(k, 0) + 1
    return out

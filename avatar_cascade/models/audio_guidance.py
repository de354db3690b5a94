"""InfiniteTalk's two-scale classifier-free guidance (text and audio), as pure functions for the sampler.

From MeiGen-AI/InfiniteTalk ``wan/multitalk.py`` (Apache-2.0), its non-APG path: per step the
model runs with (text, audio) = cond, (negative prompt, audio) = drop_text and (negative
prompt, zero audio) = uncond, combined as
``uncond + text_scale * (cond - drop_text) + audio_scale * (drop_text - uncond)``; with
``text_scale == 1`` it runs cond and (text, zero audio) = drop_audio instead and uses
``drop_audio + audio_scale * (cond - drop_audio)``. Defaults there: text 5.0, audio 4.0.
"Zero audio" is all-zero wav2vec2 features passed through the adapter (not "no adapter").
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch


def guidance_branches(text_scale: float, audio_scale: float) -> tuple[tuple[str, bool, bool], ...]:
    """The forwards InfiniteTalk's guidance needs: ``(name, with_text, with_audio)`` per branch.

    ``with_text`` False = the negative prompt; ``with_audio`` False = zero audio (``None`` rows).
    """
    text_on, audio_on = not math.isclose(text_scale, 1.0), not math.isclose(audio_scale, 1.0)
    if text_on and audio_on:
        return (("cond", True, True), ("drop_text", False, True), ("uncond", False, False))
    if text_on:
        return (("cond", True, True), ("drop_text", False, True))
    if audio_on:
        return (("cond", True, True), ("drop_audio", True, False))
    return (("cond", True, True),)


def combine_guidance(preds: Mapping[str, torch.Tensor], text_scale: float, audio_scale: float) -> torch.Tensor:
    """Combine the branch predictions as ``wan/multitalk.py`` does (its non-APG path).

    Three branches: ``uncond + text*(cond - drop_text) + audio*(drop_text - uncond)``; with
    ``text_scale == 1``: ``drop_audio + audio*(cond - drop_audio)``. With ``audio_scale == 1`` the
    three-branch formula reduces to ``drop_text + text*(cond - drop_text)``, so uncond is skipped.
    """
    cond = preds["cond"]
    if "uncond" in preds:
        drop_text, uncond = preds["drop_text"], preds["uncond"]
        return uncond + text_scale * (cond - drop_text) + audio_scale * (drop_text - uncond)
    if "drop_audio" in preds:
        return preds["drop_audio"] + audio_scale * (cond - preds["drop_audio"])
    if "drop_text" in preds:
        return preds["drop_text"] + text_scale * (cond - preds["drop_text"])
    return cond

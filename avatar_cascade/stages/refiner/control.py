"""Guided refinement: sub-clips through a Wan VACE DiT under a control video (pose, depth, line art...).

With a VACE DiT the refiner renders each sub-clip from VACE's control context instead of the
FLF concat channels (see :mod:`avatar_cascade.sampling.vace` and
:mod:`avatar_cascade.sampling.vace_requests`, shared with the blueprint):

* the clip's control video is its exact slice of the :class:`~avatar_cascade.artefacts.control.ControlVideo`
  (frames ``render_start .. render_end``), grey with mask 1 where there is no control;
* its keyframes sit at their ``keyframe_offsets`` in the same video with mask 0 (known: VACE
  keeps them), so keyframes stay anchored, with or without control;
* optional VACE reference images (the avatar's reference) add latent frames in front of the clip
  that are cut off before decoding;
* the audio adapter (InfiniteTalk) applies as on the other DiTs: the sampling loop passes the
  clip's audio window and pins a known first frame's latent;
* ``exact_keys`` pastes the keyframes' pixels over the decoded frames at their offsets, so drawn
  keys come out exactly as drawn (ToonCrafter-style in-betweening).

Without a VACE DiT nothing here runs: the refiner's plain path (and its cache keys) are untouched.
"""

from __future__ import annotations

import torch

from avatar_cascade.artefacts.control import ControlVideo
from avatar_cascade.models.wan_vace import is_vace
from avatar_cascade.sampling.vace_requests import (
    ClipControl,
    VaceRequest,
    check_control,
    fit_references,
    guidance_for,
    paste_known,
    sample_vace_batch,
    unguided,
    vace_video,
    with_control,
)

__all__ = [
    "ClipControl", "VaceRequest", "check_control", "clip_control", "fit_references", "guidance_for", "is_vace",
    "paste_known", "sample_vace_batch", "vace_video", "with_control",
]  # fmt: skip


def clip_control(
    control: ControlVideo | None, clip, fps, height: int, width: int, exact_keys: bool,
    references: torch.Tensor | None = None,
) -> ClipControl:  # fmt: skip
    """Clip ``clip``'s control: its exact slice at the control's strength (with the fitted VACE ``references``
    ``[R,3,H,W]``, or None); a clip that no control frame reaches is unguided (grey, mask 1, strength 1: what
    it renders without a control input)."""
    n = clip.render_frames
    if control is None:
        return unguided(n, height, width, exact_keys, references)
    frames, masks, idx = control.clip_slice(clip.render_start, n, fps, height, width)
    if all(i is None for i in idx):  # no control frame in this clip: unguided, exactly as without a control
        return unguided(n, height, width, exact_keys, references)
    return ClipControl(frames, masks, float(control.strength), exact_keys, references)

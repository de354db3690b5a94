"""Guided refinement: sub-clips through a Wan VACE DiT under a control video (pose, depth, line art...).

With a VACE DiT the refiner renders each sub-clip from VACE's control context instead of the
FLF concat channels (see :mod:`avatar_cascade.sampling.vace`):

* the clip's control video is its exact slice of the :class:`~avatar_cascade.artefacts.control.ControlVideo`
  (frames ``render_start .. render_end``), grey with mask 1 where there is no control;
* its keyframes sit at their ``keyframe_offsets`` in the same video with mask 0 (known: VACE
  keeps them), so keyframes stay anchored, with or without control;
* the audio adapter (InfiniteTalk) applies as on the other DiTs: the sampling loop passes the
  clip's audio window and pins a known first frame's latent;
* ``exact_keys`` pastes the keyframes' pixels over the decoded frames at their offsets, so drawn
  keys come out exactly as drawn (ToonCrafter-style in-betweening).

Without a VACE DiT nothing here runs: the refiner's plain path (and its cache keys) are untouched.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch

from avatar_cascade.artefacts.control import ControlVideo
from avatar_cascade.core.errors import InputError
from avatar_cascade.models.wan_vace import is_vace
from avatar_cascade.sampling.conditioning import ClipRequest
from avatar_cascade.sampling.vace import vace_context, vace_control


@dataclass
class VaceRequest(ClipRequest):
    """A :class:`ClipRequest` with its VACE control: ``control [3,T,H,W]`` in [-1,1], ``control_masks
    [T,H,W]`` (1 = generate), ``strength`` and ``exact_keys``."""

    control: torch.Tensor | None = field(default=None, repr=False)
    control_masks: torch.Tensor | None = field(default=None, repr=False)
    strength: float = 1.0
    exact_keys: bool = False


@dataclass
class ClipControl:
    """One sub-clip's slice of the control (what its cache key and its request carry)."""

    frames: torch.Tensor
    masks: torch.Tensor
    strength: float
    exact_keys: bool

    def key_parts(self) -> list:
        return [self.frames, self.masks, float(self.strength), bool(self.exact_keys)]


def check_control(dit, control: ControlVideo | None, backend: str) -> None:
    """Refuse a control input without a VACE DiT, and VACE on a backend that cannot carry it."""
    if control is not None and not is_vace(dit):
        raise InputError(
            "control",
            getattr(dit, "variant", "unknown"),
            "a control video needs a Wan VACE DiT (this DiT has no VACE control branch)",
            "load wan2.1_vace_1.3B / wan2.1_vace_14B in the DiT loader",
        )
    if is_vace(dit) and backend == "ray":
        raise InputError("backend", backend, "the Ray backend does not carry VACE control yet", "use backend 'local'")


def clip_control(control: ControlVideo | None, clip, fps, height: int, width: int, exact_keys: bool) -> ClipControl:
    """Clip ``clip``'s control: its exact slice at the control's strength; a clip that no control frame
    reaches is unguided (grey, mask 1, strength 1: what it renders without a control input)."""
    n = clip.render_frames
    frames, masks, idx = (None, None, []) if control is None else control.clip_slice(
        clip.render_start, n, fps, height, width
    )
    if all(i is None for i in idx):  # no control frame in this clip: unguided, exactly as without a control
        return ClipControl(torch.zeros(3, n, height, width), torch.ones(n, height, width), 1.0, exact_keys)
    return ClipControl(frames, masks, float(control.strength), exact_keys)


def with_control(req: ClipRequest, ctl: ClipControl) -> VaceRequest:
    """``req`` carrying its clip's control."""
    fields = {k: getattr(req, k) for k in ("num_frames", "known", "prompt_embeds", "negative_embeds", "seed", "audio")}
    return VaceRequest(**fields, control=ctl.frames, control_masks=ctl.masks, strength=ctl.strength,
                       exact_keys=ctl.exact_keys)


def vace_video(req: VaceRequest) -> tuple[torch.Tensor, torch.Tensor]:
    """The clip's VACE control video and masks: its control slice with its known frames at mask 0."""
    video, masks = req.control.clone(), req.control_masks.clone()
    for p, frame in req.known.items():
        video[:, p] = frame
        masks[p] = 0.0
    return video, masks


def vace_guidance(dit, vae, reqs: list[VaceRequest]):
    """A context under which the sampling loop's forwards read the batch's VACE control (one strength per batch)."""
    strengths = {float(r.strength) for r in reqs}
    if len(strengths) != 1:
        raise ValueError("one VACE strength per batch")
    pairs = [vace_video(r) for r in reqs]
    ctx = vace_context(vae, torch.stack([v for v, _ in pairs]), torch.stack([m for _, m in pairs]))
    experts = [m for _, m in dit.experts()]
    return vace_control(experts, ctx, strengths.pop())


def paste_known(frames: torch.Tensor, reqs: list[ClipRequest]) -> torch.Tensor:
    """Decoded clips ``[B,T,H,W,3]`` uint8 with the known frames of ``exact_keys`` requests pasted in exactly."""
    if not any(getattr(r, "exact_keys", False) for r in reqs):
        return frames
    out = frames.clone()
    for b, r in enumerate(reqs):
        if getattr(r, "exact_keys", False):
            for p, f in r.known.items():
                out[b, p] = ((f + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0)
    return out


def guidance_for(dit, vae, reqs) -> contextlib.AbstractContextManager | None:
    """The VACE context of a batch of :class:`VaceRequest` (None for plain requests)."""
    if reqs and isinstance(reqs[0], VaceRequest):
        return vace_guidance(dit, vae, reqs)
    return None

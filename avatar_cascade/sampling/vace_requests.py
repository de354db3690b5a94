"""sampling.vace_requests: clips rendered through a Wan VACE DiT, for every stage that samples with one.

A :class:`VaceRequest` is a :class:`~avatar_cascade.sampling.conditioning.ClipRequest` that carries its
clip's control slice (a :class:`ClipControl`: frames, masks, strength, optional reference images). The
stages (the refiner's sub-clips, the blueprint's windows) build one per clip and sample the batch with
:func:`sample_vace_batch`: the clip's known frames sit at mask 0 in its VACE video (:func:`vace_video`),
the batch's context is fed to the DiT's forwards (:func:`~avatar_cascade.sampling.vace.vace_control`),
reference images add latent frames in front that are cut off before decoding
(:mod:`avatar_cascade.sampling.vace`; ``sample_clips(reference_frames=)``), and ``exact_keys`` pastes the
known frames' pixels over the decoded frames (:func:`paste_known`).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch

from avatar_cascade.core.errors import InputError
from avatar_cascade.models.wan_vace import is_vace
from avatar_cascade.sampling.conditioning import ClipRequest, decode_to_uint8, encode_condition
from avatar_cascade.sampling.vace import fit_reference, vace_context, vace_control


@dataclass
class VaceRequest(ClipRequest):
    """A :class:`ClipRequest` with its VACE control: ``control [3,T,H,W]`` in [-1,1], ``control_masks
    [T,H,W]`` (1 = generate), ``strength``, ``exact_keys`` and ``references [R,3,H,W]`` in [-1,1] (or None)."""

    control: torch.Tensor | None = field(default=None, repr=False)
    control_masks: torch.Tensor | None = field(default=None, repr=False)
    strength: float = 1.0
    exact_keys: bool = False
    references: torch.Tensor | None = field(default=None, repr=False)


@dataclass
class ClipControl:
    """One clip's slice of the control (what its cache key and its request carry)."""

    frames: torch.Tensor
    masks: torch.Tensor
    strength: float
    exact_keys: bool
    references: torch.Tensor | None = None

    def key_parts(self) -> list:
        parts = [self.frames, self.masks, float(self.strength), bool(self.exact_keys)]
        return parts if self.references is None else [*parts, {"vace_reference": self.references}]


def unguided(num_frames: int, height: int, width: int, exact_keys: bool = False, references=None) -> ClipControl:
    """The control of a clip no control frame reaches: grey, mask 1, strength 1 (as without a control input)."""
    return ClipControl(torch.zeros(3, num_frames, height, width), torch.ones(num_frames, height, width), 1.0,
                       exact_keys, references)  # fmt: skip


def check_control(dit, control, backend: str = "local", references=None) -> None:
    """Refuse a control input (or reference images) without a VACE DiT, and VACE on a backend that cannot
    carry it."""
    for name, given in (("control", control), ("vace_reference", references)):
        if given is not None and not is_vace(dit):
            raise InputError(
                name,
                getattr(dit, "variant", "unknown"),
                f"a {'control video' if name == 'control' else 'VACE reference image'} needs a Wan VACE DiT "
                "(this DiT has no VACE control branch)",
                "load wan2.1_vace_1.3B / wan2.1_vace_14B in the DiT loader",
            )
    if is_vace(dit) and backend == "ray":
        raise InputError("backend", backend, "the Ray backend does not carry VACE control yet", "use backend 'local'")


def fit_references(images: torch.Tensor | None, height: int, width: int) -> torch.Tensor | None:
    """Reference images (an IMAGE batch ``[R, H, W, C]`` float 0..1, or one image ``[H, W, 3]``; uint8 too) ->
    ``[R, 3, height, width]`` in [-1, 1] (:func:`~avatar_cascade.sampling.vace.fit_reference`); None stays None."""
    from avatar_cascade.artefacts.control import control_from_images

    if images is None:
        return None
    if isinstance(images, torch.Tensor) and images.ndim == 3:
        images = images[None]
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8:
        images = control_from_images(images, "vace_reference")
    return torch.stack([fit_reference(im, height, width) for im in images])


def with_control(req: ClipRequest, ctl: ClipControl) -> VaceRequest:
    """``req`` carrying its clip's control."""
    fields = {k: getattr(req, k) for k in ("num_frames", "known", "prompt_embeds", "negative_embeds", "seed", "audio")}
    return VaceRequest(**fields, control=ctl.frames, control_masks=ctl.masks, strength=ctl.strength,
                       exact_keys=ctl.exact_keys, references=ctl.references)  # fmt: skip


def vace_video(req: VaceRequest) -> tuple[torch.Tensor, torch.Tensor]:
    """The clip's VACE control video and masks: its control slice with its known frames at mask 0."""
    video, masks = req.control.clone(), req.control_masks.clone()
    for p, frame in req.known.items():
        video[:, p] = frame
        masks[p] = 0.0
    return video, masks


def reference_count(reqs) -> int:
    """Reference latent frames in front of every clip of the batch (0 without references)."""
    counts = {0 if getattr(r, "references", None) is None else len(r.references) for r in reqs}
    if len(counts) != 1:
        raise ValueError("one number of VACE reference images per batch")
    return counts.pop()


def vace_guidance(dit, vae, reqs: list[VaceRequest]):
    """A context under which the sampling loop's forwards read the batch's VACE control (one strength per batch)."""
    strengths = {float(r.strength) for r in reqs}
    if len(strengths) != 1:
        raise ValueError("one VACE strength per batch")
    pairs = [vace_video(r) for r in reqs]
    refs = torch.stack([r.references for r in reqs]) if reference_count(reqs) else None
    ctx = vace_context(vae, torch.stack([v for v, _ in pairs]), torch.stack([m for _, m in pairs]), refs)
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


def sample_vace_batch(dit, vae, reqs: list[VaceRequest], height: int, width: int, sample) -> torch.Tensor:
    """Sample and decode a batch of VACE clips: ``[B, T, H, W, 3]`` uint8 on CPU.

    ``sample(condition, reference_frames)`` runs the sampling loop (``sample_clips``: clean latents ``[B, z,
    T_lat, h, w]``, the reference latent frames in front already dropped, so the clips keep their frame
    count); it is called under the batch's control, whose context leads with the references' frames.
    """
    cond = encode_condition(vae, reqs, height, width)
    with vace_guidance(dit, vae, reqs):
        lat = sample(cond, reference_count(reqs))
    return paste_known(decode_to_uint8(vae, lat), reqs)

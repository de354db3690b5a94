"""Negative-frame guidance: steer a sub-clip away from what drift looks like (training-free).

Kling-Avatar reports a *negative-frame CFG* at inference; its exact form is not
public. This is a training-free approximation built from parts the Wan
first-last-frame DiT already understands. Next to the normal condition (the
sub-clip's two keyframes ``F``, VAE-encoded into the concat channels), a second
condition ``D(F)`` holds the same keyframes **degraded the way long generations
drift**: blurred, desaturated, lower contrast, with a warm colour cast. For every
guidance branch the DiT is run on both, and the prediction is pushed away from
the drifted one:

    v_s(c) = v(x_t, t, c, F) + s * (v(x_t, t, c, F) - v(x_t, t, c, D(F)))

and text classifier-free guidance is then applied as usual,
``v = v_s(c-) + g * (v_s(c+) - v_s(c-))``. Because both steps are linear this is
the same as ``v = v_cfg(F) + s * (v_cfg(F) - v_cfg(D(F)))``: text guidance with
clean keyframes, extrapolated away from text guidance with drifted ones.

``s`` is ``negative_frame_strength``; at ``s = 0`` the guidance is not installed,
so the output is bit-identical to plain sampling. Cost at ``s > 0``: one more DiT
forward per guidance branch and step (about 2x the DiT time) and one more VAE
encode per batch. The degradation is fixed (see :func:`drift_degrade`), not
learned; a stronger variant would condition the negative branch on the
previous sample's own drifted estimate.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

import torch

#: Degradation of :func:`drift_degrade`: Gaussian blur sigma as a fraction of the short side,
#: saturation and contrast factors, and an additive warm cast (R up, B down) in [-1, 1] units.
BLUR_FRACTION = 0.015
SATURATION = 0.7
CONTRAST = 0.85
WARM_CAST = (0.08, 0.02, -0.08)
# What a clip's cache key records of the degradation (only when the strength is > 0, so plain clips keep
# their keys). "torchvision-1": blur / saturation / contrast through torchvision (up to 1e-3 from the
# hand-written version of v0.1, whose clips must not be mixed with these).
DEGRADE_PARAMS = ("torchvision-1", BLUR_FRACTION, SATURATION, CONTRAST, WARM_CAST)


def drift_degrade(frames: torch.Tensor) -> torch.Tensor:
    """What a drifted frame looks like: ``[N, 3, H, W]`` in [-1, 1] -> same shape and range.

    Gaussian blur (sigma = 1.5% of the short side, at least 0.8 px; radius 3 sigma, reflect
    padding), saturation x0.7 and contrast x0.85 (torchvision's ``adjust_saturation`` /
    ``adjust_contrast``: blends with the grey image / its mean), then a warm cast.
    """
    from torchvision.transforms.v2 import functional as TF

    x = (frames.float() + 1) / 2  # torchvision's colour operations work on [0, 1] images
    sigma = max(0.8, BLUR_FRACTION * min(x.shape[-2:]))
    radius = min(max(1, round(3 * sigma)), x.shape[-2] - 1, x.shape[-1] - 1)
    if radius >= 1:
        x = TF.gaussian_blur(x, [2 * radius + 1] * 2, [sigma, sigma])
    x = TF.adjust_contrast(TF.adjust_saturation(x, SATURATION), CONTRAST)
    x = x * 2 - 1 + torch.tensor(WARM_CAST, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return x.clamp(-1, 1).to(frames.dtype)


class _Guide:
    """The forward hook behind :func:`negative_frame_guidance` (one per sampling run)."""

    def __init__(self, negative_condition: torch.Tensor, strength: float) -> None:
        self.negative_condition = negative_condition
        self.strength = float(strength)
        self.inside = False

    def __call__(self, module: torch.nn.Module, args: tuple, kwargs: dict, output):
        if self.inside:  # the drifted pass itself
            return None
        hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
        rows, b = hidden.shape[0], self.negative_condition.shape[0]
        if rows % b:
            raise RuntimeError(f"negative-frame guidance: a forward of {rows} rows for {b} clips")
        neg = self.negative_condition.to(hidden.device, hidden.dtype)
        neg = neg.repeat(rows // b, *([1] * (neg.ndim - 1)))
        drifted = torch.cat([hidden[:, : -neg.shape[1]], neg], dim=1)
        self.inside = True
        try:
            if "hidden_states" in kwargs:
                out_neg = module(*args, **{**kwargs, "hidden_states": drifted})
            else:
                out_neg = module(drifted, *args[1:], **kwargs)
        finally:
            self.inside = False
        v, v_neg = _sample(output), _sample(out_neg)
        guided = v + self.strength * (v - v_neg)
        if isinstance(output, tuple):
            return (guided, *output[1:])
        output.sample = guided
        return output


@contextlib.contextmanager
def negative_frame_guidance(
    modules: Iterable[torch.nn.Module], negative_condition: torch.Tensor, strength: float
) -> Iterator[None]:
    """While the block runs, every forward of ``modules`` returns ``v + s * (v - v_drifted)``.

    ``modules`` are the DiT transformer(s) (both experts of a Wan 2.2 pair).
    ``negative_condition`` is the ``[B, 4 + z, T_lat, h, w]`` concat condition
    (mask + latents) of the batch's ``B`` clips built from
    :func:`drift_degrade`-ed keyframes. A forward may stack several guidance
    branches of the same clips (``k * B`` rows, branch by branch, clips in
    order), as the sampler's batched CFG does; the condition is tiled to match.
    The drifted pass is a second call of the same module with the same
    arguments but the concat channels, made from inside a forward hook, so hooks
    and contexts that condition the forward (audio adapter, image tokens, LoRAs)
    apply to both passes row for row. ``strength`` 0 still runs both passes;
    callers skip this context for exact plain sampling.
    """
    guide = _Guide(negative_condition, strength)
    handles = [m.register_forward_hook(guide, with_kwargs=True) for m in modules]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _sample(out) -> torch.Tensor:
    return out[0] if isinstance(out, tuple) else out.sample

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

``s`` is ``negative_frame_strength``; at ``s = 0`` the wrapper is not used at all,
so the output is bit-identical to plain sampling. Cost at ``s > 0``: one more DiT
forward per guidance branch and step (about 2x the DiT time) and one more VAE
encode per batch. The degradation is fixed (see :func:`drift_degrade`), not
learned; a stronger variant would condition the negative branch on the
previous sample's own drifted estimate.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: Degradation of :func:`drift_degrade`: Gaussian blur sigma as a fraction of the short side,
#: saturation and contrast factors, and an additive warm cast (R up, B down) in [-1, 1] units.
BLUR_FRACTION = 0.015
SATURATION = 0.7
CONTRAST = 0.85
WARM_CAST = (0.08, 0.02, -0.08)


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``[N, C, H, W]`` with reflect padding (radius 3 sigma, capped by the size)."""
    radius = min(max(1, round(3 * sigma)), x.shape[-2] - 1, x.shape[-1] - 1)
    if radius < 1:
        return x
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    x = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def drift_degrade(frames: torch.Tensor) -> torch.Tensor:
    """What a drifted frame looks like: ``[N, 3, H, W]`` in [-1, 1] -> same shape and range.

    Blur (sigma = 1.5% of the short side, at least 0.8 px), saturation x0.7,
    contrast x0.85 around the mean, and a warm cast.
    """
    x = frames.float()
    sigma = max(0.8, BLUR_FRACTION * min(x.shape[-2:]))
    x = _gaussian_blur(x, sigma)
    luma = (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]).expand_as(x)
    x = luma + SATURATION * (x - luma)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = mean + CONTRAST * (x - mean)
    x = x + torch.tensor(WARM_CAST, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return x.clamp(-1, 1).to(frames.dtype)


class NegativeFrameGuidance(torch.nn.Module):
    """Wraps a Wan DiT so every call returns ``v + s * (v - v_drifted)`` (see the module docstring).

    ``negative_condition`` is the ``[B, 4 + z, T_lat, h, w]`` concat condition
    (mask + latents) built from :func:`drift_degrade`-ed keyframes for the ``B``
    clips of the batch. A call may stack several guidance branches of the same
    clips (``k * B`` rows, branch by branch, clips in order), as the sampler's
    batched CFG does; the negative condition is tiled to match. The drifted pass
    is a second call with the same keyword arguments, so side inputs (text,
    image or audio tokens) line up row for row.
    """

    def __init__(self, transformer: torch.nn.Module, negative_condition: torch.Tensor, strength: float) -> None:
        super().__init__()
        self.inner = transformer
        self.negative_condition = negative_condition
        self.strength = float(strength)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["inner"], name)

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs):
        rows, b = hidden_states.shape[0], self.negative_condition.shape[0]
        if rows % b:
            raise RuntimeError(f"negative-frame guidance: {rows} rows for {b} clips")
        neg = self.negative_condition.to(hidden_states.device, hidden_states.dtype).repeat(
            rows // b, *([1] * (hidden_states.ndim - 1))
        )
        drifted = torch.cat([hidden_states[:, : -neg.shape[1]], neg], dim=1)
        out = self.inner(hidden_states, *args, **kwargs)
        out_neg = self.inner(drifted, *args, **kwargs)
        v, v_neg = _sample(out), _sample(out_neg)
        guided = v + self.strength * (v - v_neg)
        if isinstance(out, tuple):
            return (guided, *out[1:])
        out.sample = guided
        return out


def _sample(out) -> torch.Tensor:
    return out[0] if isinstance(out, tuple) else out.sample

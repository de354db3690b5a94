"""The learned interpolator in the stitcher's stream: RIFE 4.x (:mod:`avatar_cascade.models.rife`), written frames.

Same interface as :class:`~avatar_cascade.stages.stitcher.interpolate.FrameInterpolator`: for each pair of
consecutive frames the in-between frames at ``ts`` come from one forward pass of the IFNet (the ``ts``
batched, each its own timestep channel, as RIFE 4.x takes any ``t``). RIFE runs on the frames as written
(after the upscale model / resize: it was trained on the frames it interpolates, and its ``scale``
setting is how it copes with large ones), on the device and in the dtype its weights are on (the stitcher
places it with ``Runtime.use_models``). Memory: one pair of frames and the network's activations.
"""

from __future__ import annotations

import numpy as np
import torch

from avatar_cascade.core.errors import InputError


def check_rife_model(model, input_name: str = "interpolator_model"):
    """``model`` if it is this pack's RIFE IFNet (what the loader node / ``--interpolator-model`` give)."""
    from avatar_cascade.models.rife import IFNet

    if not isinstance(model, IFNet):
        raise InputError(
            input_name,
            type(model).__name__,
            "is not a RIFE frame interpolator",
            "connect Avatar Cascade: Load Frame Interpolator (RIFE, models/frame_interpolation)",
        )
    return model


class LearnedInterpolator:
    """RIFE in-between frames of uint8 ``[H, W, 3]`` frames, one pair at a time.

    Args:
        model: a :class:`~avatar_cascade.models.rife.IFNet`.
        scale: RIFE's ``scale`` (1.0 up to 1080p, 0.5 for 4K).
        ensemble: also run the swapped pair and average.
    """

    method = "rife"

    def __init__(self, model, scale: float = 1.0, ensemble: bool = False) -> None:
        self.model = check_rife_model(model)
        self.scale, self.ensemble = float(scale), bool(ensemble)
        self._last: tuple[np.ndarray, torch.Tensor] | None = None  # (the last frame, as a model input)

    def between(
        self, lo0: np.ndarray, lo1: np.ndarray, ts: list[float], hi0: np.ndarray | None = None, hi1=None
    ) -> list[np.ndarray]:
        """The frames at times ``ts`` (each in (0, 1)) between ``hi0`` and ``hi1`` (uint8 ``[H, W, 3]``;
        ``lo0`` / ``lo1``, the frames as rendered, stand in when not given)."""
        from avatar_cascade.models.rife import interpolate

        hi0 = lo0 if hi0 is None else hi0
        hi1 = lo1 if hi1 is None else hi1
        x0 = self._last[1] if self._last is not None and self._last[0] is hi0 else self._tensor(hi0)
        x1 = self._tensor(hi1)
        self._last = (hi1, x1)
        n = len(ts)
        t = torch.tensor(ts, dtype=x0.dtype, device=x0.device).view(n, 1, 1, 1)
        out = interpolate(self.model, x0.expand(n, -1, -1, -1), x1.expand(n, -1, -1, -1), t, self.scale, self.ensemble)
        frames = out.float().clamp(0, 1).mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        return list(frames)

    def rebind(self, old: np.ndarray, new: np.ndarray) -> None:
        """``new`` (a copy of ``old``) stands for ``old`` from now on (its model input is reused)."""
        if self._last is not None and self._last[0] is old:
            self._last = (new, self._last[1])

    def _tensor(self, frame: np.ndarray) -> torch.Tensor:
        p = next(self.model.parameters())
        x = torch.from_numpy(np.ascontiguousarray(frame)).to(p.device)
        return x.permute(2, 0, 1)[None].to(p.dtype).div_(255)

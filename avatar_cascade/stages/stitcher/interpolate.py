"""Frame interpolation for the stitcher's stream: motion-compensated in-between frames (DIS optical flow).

For two consecutive frames ``I0`` and ``I1`` and a time ``t`` in (0, 1) between them:

1. dense optical flow both ways, ``F01`` (I0 -> I1) and ``F10`` (I1 -> I0), with OpenCV's DIS
   (Kroeger et al. 2016, ``cv2.DISOpticalFlow``) on the luma of the frames as rendered (before any
   upscaling; at most ``max_flow_side`` pixels on the long side);
2. the flow from the in-between frame back into each neighbour by a fixed point of backward warping:
   the pixel ``x`` at time ``t`` came from ``p0 = x - t d`` in ``I0`` with ``d = F01(p0)``, and from
   ``p1 = x - (1 - t) e`` in ``I1`` with ``e = F10(p1)``; a few iterations ``d <- F01(x - t d)`` solve it
   (exact for translations, and for rotations up to the flow's own smoothness);
3. occlusion from the same fixed point: where the in-between pixel is hidden in one neighbour (the
   background a moving object is about to cover or has just uncovered) the iteration has no fixed
   point and jumps between the object's flow and the background's; its residual
   ``|F01(x - t d) - d|`` (pixels) is large there, and that neighbour's weight falls to 0 at
   ``_MISS_PX`` pixels of residual, so the pixel comes from the neighbour that shows it;
4. both neighbours are warped to ``t`` (``cv2.remap``, bilinear) at the output resolution (the flow
   sample positions are resized and scaled to it) and blended with weights ``(1 - t) v0`` and
   ``t v1``, ``v`` the visibility of step 3 (``cv2.blendLinear``).

``blend`` (the flow-free linear mix ``(1 - t) I0 + t I1``) is kept as a labelled choice: it ghosts on
every motion, but it is exact on still shots and costs nothing.

The learned interpolator (RIFE 4.x, weights the user supplies) is :mod:`.learned`.
"""

from __future__ import annotations

import numpy as np

from avatar_cascade.stages.stitcher.settings import INTERPOLATIONS

MAX_FLOW_SIDE = 1024
_FIXED_POINT_STEPS = 4
_MISS_PX = 1.0


def blend_frames(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    """``(1 - t) a + t b`` of two uint8 ``[H, W, 3]`` frames, rounded."""
    if t == 0.5:
        return ((a.astype(np.uint16) + b + 1) >> 1).astype(np.uint8)
    return np.rint(a.astype(np.float32) * (1 - t) + b.astype(np.float32) * t).astype(np.uint8)


class FrameInterpolator:
    """In-between frames of consecutive frames, one pair at a time (the stitcher's stream).

    Args:
        method: ``"flow"`` (motion-compensated, default) or ``"blend"``.
        max_flow_side: flow is estimated on frames at most this many pixels on the long side.

    :meth:`between` takes each pair as rendered (``lo0``, ``lo1``: where the flow is measured) and as
    written (``hi0``, ``hi1``: the same frames after upscaling; the same arrays when not upscaled).
    The luma of the last frame is kept for the next pair, so each frame is converted once.
    """

    def __init__(self, method: str = "flow", max_flow_side: int = MAX_FLOW_SIDE) -> None:
        if method not in INTERPOLATIONS or method == "rife":  # rife: stitcher.learned
            raise ValueError(f"unknown interpolation {method!r}; use 'flow' or 'blend'")
        self.method = method
        self.max_flow_side = max_flow_side
        self._dis = None
        self._grids: dict[tuple[int, int], np.ndarray] = {}
        self._last: tuple[np.ndarray, np.ndarray] | None = None  # (the last frame, its flow-size luma)

    def between(
        self, lo0: np.ndarray, lo1: np.ndarray, ts: list[float], hi0: np.ndarray | None = None, hi1=None
    ) -> list[np.ndarray]:
        """The frames at times ``ts`` (each in (0, 1)) between ``hi0`` and ``hi1`` (uint8 ``[H, W, 3]``)."""
        hi0 = lo0 if hi0 is None else hi0
        hi1 = lo1 if hi1 is None else hi1
        if self.method == "blend":
            return [blend_frames(hi0, hi1, t) for t in ts]
        f01, f10 = self.flows(lo0, lo1)
        return [self._warp_blend(hi0, hi1, f01, f10, t) for t in ts]

    def rebind(self, old: np.ndarray, new: np.ndarray) -> None:
        """``new`` (a copy of ``old``) stands for ``old`` from now on (its luma is reused, ``old`` freed)."""
        if self._last is not None and self._last[0] is old:
            self._last = (new, self._last[1])

    # -- flow ---------------------------------------------------------------------------

    def flows(self, lo0: np.ndarray, lo1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(F01, F10)``: ``[h, w, 2]`` float32 flows (x, y pixels of the flow-size frames)."""
        import cv2

        if self._dis is None:
            self._dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        g0 = self._last[1] if self._last is not None and self._last[0] is lo0 else self._luma(lo0)
        g1 = self._luma(lo1)
        self._last = (lo1, g1)
        return self._dis.calc(g0, g1, None), self._dis.calc(g1, g0, None)

    def _luma(self, frame: np.ndarray) -> np.ndarray:
        import cv2

        gray = cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)
        h, w = gray.shape
        r = self.max_flow_side / max(h, w)
        if r < 1:
            gray = cv2.resize(gray, (max(8, round(w * r)), max(8, round(h * r))), interpolation=cv2.INTER_AREA)
        return gray

    def _grid(self, shape: tuple[int, int]) -> np.ndarray:
        """Pixel coordinates ``[h, w, 2]`` (x, y) float32, cached per size."""
        grid = self._grids.get(shape)
        if grid is None:
            ys, xs = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32)
            grid = self._grids[shape] = np.ascontiguousarray(np.stack([xs, ys], -1))
        return grid

    # -- warp ---------------------------------------------------------------------------

    def _warp_blend(self, hi0, hi1, f01, f10, t: float) -> np.ndarray:
        import cv2

        grid = self._grid(f01.shape[:2])
        d, miss0 = _back_flow(f01, grid, t)  # the in-between pixel x is at x - t d in I0
        e, miss1 = _back_flow(f10, grid, 1 - t)  # and at x - (1 - t) e in I1
        p0, p1 = cv2.scaleAdd(d, -t, grid), cv2.scaleAdd(e, t - 1, grid)
        w0 = (1 - t) * _visibility(miss0) + 1e-3
        w1 = t * _visibility(miss1) + 1e-3
        h, w = hi0.shape[:2]
        if (h, w) != f01.shape[:2]:
            p0, p1 = self._to_size(p0, (h, w)), self._to_size(p1, (h, w))
            w0 = cv2.resize(w0, (w, h), interpolation=cv2.INTER_LINEAR)
            w1 = cv2.resize(w1, (w, h), interpolation=cv2.INTER_LINEAR)
        a = cv2.remap(hi0, p0, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        b = cv2.remap(hi1, p1, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        return cv2.blendLinear(a, b, w0, w1)

    def _to_size(self, points: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """Sample positions ``[h, w, 2]`` in flow-size pixels -> the same positions at output ``size``
        (pixel centres aligned: ``X = (x + 0.5) s - 0.5``)."""
        import cv2

        h, w = size
        scale = np.array([w / points.shape[1], h / points.shape[0]], np.float32)
        big = cv2.resize(points, (w, h), interpolation=cv2.INTER_LINEAR)
        big *= scale
        big += 0.5 * scale - 0.5
        return big


def _sample(field: np.ndarray, points: np.ndarray) -> np.ndarray:
    """``field`` (``[h, w]`` or ``[h, w, 2]`` float32) read at ``points`` ``[h, w, 2]`` (bilinear, clamped)."""
    import cv2

    return cv2.remap(field, points, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def _back_flow(flow: np.ndarray, grid: np.ndarray, t: float) -> tuple[np.ndarray, np.ndarray]:
    """``d`` with ``d = flow(x - t d)`` at every pixel ``x`` (fixed-point iterations from ``d = flow(x)``), and
    how far from a fixed point it ends, ``|flow(x - t d) - d|`` (pixels, ``[h, w]``): large where the
    in-between pixel has no counterpart in that frame (the iteration jumps between a moving object and
    the background it covers or uncovers)."""
    import cv2

    d = flow
    for _ in range(_FIXED_POINT_STEPS):
        d = _sample(flow, cv2.scaleAdd(d, -t, grid))
    nxt = _sample(flow, cv2.scaleAdd(d, -t, grid))
    diff = nxt - d
    return nxt, np.sqrt(np.einsum("...i,...i->...", diff, diff))


def _visibility(miss: np.ndarray) -> np.ndarray:
    """Weight 1 where a neighbour's sample is a fixed point (the pixel is visible there), falling to 0 at
    ``_MISS_PX`` pixels of residual; softened over a few pixels. ``[h, w]`` float32."""
    import cv2

    visible = np.clip(1.0 - miss / _MISS_PX, 0.0, 1.0).astype(np.float32)
    return cv2.GaussianBlur(visible, (5, 5), 0)

"""Raising the resolution in the stitcher's stream: an upscale model (tiled) and/or a resize to the output height.

Each frame as rendered (uint8 ``[h, w, 3]``) becomes a frame of the output size:

* with an upscale model (a spandrel ``ImageModelDescriptor``, ComfyUI's ``UPSCALE_MODEL``): the frame
  is cut into ``tile`` x ``tile`` tiles, each run with ``overlap`` pixels of context on every side
  and only its own part of the output kept (no seams for models whose receptive field is within the
  overlap), on the device the stitcher placed it on (``Runtime.use_models``: ComfyUI's model
  management in the nodes); on a CUDA out-of-memory error the tile side is halved and the
  frame retried (as ComfyUI's ``ImageUpscaleWithModel`` does);
* then, when ``output_height`` is set and differs from what the model made, a resize to it
  (``cv2.INTER_AREA`` down, Lanczos up), the width following the aspect ratio (a multiple of 8).

Memory per frame is one input frame, one model output frame and one tile's activations: constant
over the length of the video.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)

DEFAULT_TILE = 512
TILE_OVERLAP = 32


def output_size(height: int, width: int, output_height: int | None, scale: int = 1) -> tuple[int, int]:
    """``(H, W)`` of a ``height`` x ``width`` frame after a ``scale`` x model and the resize to
    ``output_height`` (None: the model's size); the width keeps the aspect ratio, rounded to a multiple
    of 8 (854 x 480 -> 1920 x 1080, 832 x 480 -> 1872 x 1080)."""
    if output_height is None:
        return height * scale, width * scale
    w = width * output_height / height
    return output_height, max(8, int(round(w / 8)) * 8)


class FrameScaler:
    """Rendered frames -> output-size frames (see the module doc); the identity when nothing is asked.

    Args:
        size: ``(h, w)`` of the rendered frames.
        output_height: pixels, or None for the model's (or the frames') own height.
        model: spandrel image model, or None for a plain resize. It runs where its weights are: the
            stitcher places it with ``Runtime.use_models`` (ComfyUI's model management in the nodes).
        tile: tile side in input pixels (the model path).
    """

    def __init__(self, size: tuple[int, int], output_height: int | None, model: Any = None, tile: int = DEFAULT_TILE):
        self.model, self.tile = model, int(tile)
        self.scale = int(model.scale) if model is not None else 1
        self.src = size
        self.size = output_size(size[0], size[1], output_height, self.scale)

    @property
    def identity(self) -> bool:
        return self.model is None and self.size == self.src

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        """One uint8 ``[h, w, 3]`` frame -> uint8 ``[H, W, 3]`` at :attr:`size`."""
        if self.identity:
            return frame
        if self.model is not None:
            frame = self._model_frame(frame)
        return _resize(frame, self.size)

    def _model_frame(self, frame: np.ndarray) -> np.ndarray:
        while True:
            try:
                return upscale_tiled(self.model, frame, self.tile, TILE_OVERLAP, self.model.device, self.model.dtype)
            except torch.OutOfMemoryError:
                if self.tile <= 64:
                    raise
                self.tile //= 2
                log.warning("upscale: out of memory, tile side lowered to %d", self.tile)
                torch.cuda.empty_cache()


@torch.inference_mode()
def upscale_tiled(
    model: Any,
    frame: np.ndarray,
    tile: int = DEFAULT_TILE,
    overlap: int = TILE_OVERLAP,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> np.ndarray:
    """``model`` (spandrel image model, ``scale`` s) on a uint8 ``[h, w, 3]`` frame in tiles -> ``[s h, s w, 3]``.

    Each ``tile`` x ``tile`` tile is run with ``overlap`` input pixels of context around it (clamped at
    the frame's edges) and only its own ``s tile`` x ``s tile`` of the output is kept.
    """
    s = int(model.scale)
    h, w = frame.shape[:2]
    x = torch.from_numpy(np.ascontiguousarray(frame)).to(device).permute(2, 0, 1)[None].to(dtype).div_(255)
    out = torch.empty((h * s, w * s, 3), dtype=torch.uint8, device=device)
    for y0 in range(0, h, tile):
        for x0 in range(0, w, tile):
            y1, x1 = min(y0 + tile, h), min(x0 + tile, w)
            py0, px0 = max(0, y0 - overlap), max(0, x0 - overlap)
            py1, px1 = min(h, y1 + overlap), min(w, x1 + overlap)
            y = model(x[:, :, py0:py1, px0:px1])
            oy, ox = (y0 - py0) * s, (x0 - px0) * s
            part = y[0, :, oy : oy + (y1 - y0) * s, ox : ox + (x1 - x0) * s]
            part = part.float().clamp_(0, 1).mul_(255).round_().to(torch.uint8)
            out[y0 * s : y1 * s, x0 * s : x1 * s] = part.permute(1, 2, 0)
    return out.cpu().numpy()


def _resize(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    import cv2

    h, w = size
    if frame.shape[:2] == (h, w):
        return frame
    down = h < frame.shape[0]
    return cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA if down else cv2.INTER_LANCZOS4)

"""Line art without weights: XDoG (eXtended Difference of Gaussians, Winnemöller et al. 2012).

``U = (1 + p) * G_sigma(I) - p * G_{k sigma}(I)`` on the luma ``I`` in [0, 1]; a pixel is paper
(1) where ``U >= epsilon`` and ink ``1 + tanh(phi * (U - epsilon))`` below it, so edges (where
the sharpened image dips) become soft dark lines and flat areas stay white. ``sigma`` is in pixels
of the frame (line width grows with it). The control output is white lines on black, as ComfyUI's
line-art / scribble preprocessors give (``invert=False`` returns dark lines on white paper).
"""

from __future__ import annotations

import numpy as np

from avatar_cascade.core.errors import InputError


def _blur(x: np.ndarray, sigma: float) -> np.ndarray:
    import cv2

    return cv2.GaussianBlur(x, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REPLICATE)


def xdog(
    image: np.ndarray,
    sigma: float = 0.8,
    k: float = 1.6,
    p: float = 20.0,
    epsilon: float = 0.0,
    phi: float = 10.0,
    invert: bool = True,
) -> np.ndarray:
    """XDoG line art of one RGB image ``[H, W, 3]`` (uint8, or float in [0, 1]): ``[H, W, 3]`` uint8.

    Args:
        sigma: inner Gaussian width in pixels (> 0).
        k: outer / inner width ratio (> 1; 1.6 approximates the Laplacian of Gaussian).
        p: edge sharpening (how far ``U`` dips at an edge).
        epsilon: threshold on ``U`` in luma units. 0 (default) inks edges only (a flat area, where
            ``U`` equals the luma, stays paper even when black); higher values also ink dark areas.
        phi: ink softness (higher: harder lines).
        invert: True (default) white lines on black; False dark lines on white.
    """
    if sigma <= 0 or k <= 1:
        raise InputError("sigma/k", (sigma, k), "need sigma > 0 and k > 1", "use sigma 0.8, k 1.6")
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[-1] not in (3, 4):
        raise InputError("image", img.shape, "expected an RGB image [H, W, 3]", "connect an IMAGE")
    rgb = img[..., :3].astype(np.float32)
    if img.dtype == np.uint8:
        rgb /= 255.0
    luma = (0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]).astype(np.float32)
    u = (1 + p) * _blur(luma, sigma) - p * _blur(luma, k * sigma)
    paper = np.where(u >= epsilon, 1.0, 1.0 + np.tanh(phi * (u - epsilon)))
    lines = 1.0 - paper if invert else paper
    out = (np.clip(lines, 0, 1) * 255).round().astype(np.uint8)
    return np.repeat(out[..., None], 3, axis=-1)


def xdog_frames(frames: np.ndarray, **kwargs) -> np.ndarray:
    """:func:`xdog` of every frame of ``[N, H, W, 3]``."""
    return np.stack([xdog(f, **kwargs) for f in frames])

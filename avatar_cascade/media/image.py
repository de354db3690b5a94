"""Images: load a file (PIL) or validate a ComfyUI IMAGE, as ``[H, W, 3]`` float32 0..1."""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np
import torch

from avatar_cascade.core.errors import InputError
from avatar_cascade.media.files import check_file

log = logging.getLogger(__name__)

MIN_IMAGE_SIDE = 64
MAX_IMAGE_SIDE = 8192


def load_image(path: str | os.PathLike, input_name: str = "image") -> torch.Tensor:
    """Load an image file as ``[H, W, 3]`` float32 in 0..1.

    EXIF orientation is applied; multi-frame files give their first frame.
    Transparent pixels are composited over **white**. Greyscale and palette
    images are expanded to RGB; 16-bit images (``I;16``, ``I``) keep their
    precision (divided by 65535). Sides must be within
    ``MIN_IMAGE_SIDE``..``MAX_IMAGE_SIDE`` (64..8192) pixels.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    p = check_file(path, input_name, "image")
    fix_size = f"use an image between {MIN_IMAGE_SIDE} and {MAX_IMAGE_SIDE} pixels per side (resize it first)"
    try:
        img = Image.open(p)
    except Image.DecompressionBombError as exc:
        raise InputError(input_name, str(path), "the image is far too large to decode safely", fix_size) from exc
    except PermissionError as exc:
        raise InputError(
            input_name, str(path), "cannot be read (permission denied)", "make the file readable (chmod +r) or copy it"
        ) from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InputError(
            input_name, str(path), f"could not be read as an image ({exc})", "pick a PNG, JPEG or WebP image"
        ) from exc
    with img:
        w, h = img.size
        if min(w, h) < MIN_IMAGE_SIDE or max(w, h) > MAX_IMAGE_SIDE:
            raise InputError(input_name, str(path), f"is {w}x{h} pixels", fix_size)
        try:
            img.load()
            img = ImageOps.exif_transpose(img) or img
            return _pil_to_tensor(img)
        except InputError:
            raise
        except (OSError, SyntaxError, ValueError) as exc:
            raise InputError(
                input_name, str(path), f"is damaged and could not be decoded ({exc})", "re-export the image"
            ) from exc


def _pil_to_tensor(img: Any) -> torch.Tensor:
    from PIL import Image

    mode = img.mode
    if mode.startswith("I") or mode == "F":  # 16/32-bit integer or float greyscale
        arr = np.asarray(img, dtype=np.float32)
        arr = arr / 65535.0 if mode != "F" else _float_scale(arr)
        grey = np.clip(arr, 0.0, 1.0)
        return torch.from_numpy(np.repeat(grey[..., None], 3, axis=2).copy())
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in img.info)
    if has_alpha:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    rgb = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(rgb.copy())


def _float_scale(arr: np.ndarray) -> np.ndarray:
    """A 32-bit float image on its own scale: 0..1 as is; a peak above 1 means 0..255 (up to 255) or 0..65535
    (scientific / HDR exports), instead of clipping it all to white."""
    if not np.isfinite(arr).all():
        raise InputError("image", "float image with NaN/inf", "contains NaN or infinite pixels", "re-export the image")
    peak = float(arr.max(initial=0.0))
    if peak <= 1.0:
        return arr
    scale = 255.0 if peak <= 255.0 else 65535.0
    log.info("float image with values up to %.1f: read as 0..%d", peak, int(scale))
    return arr / scale


def check_image_tensor(image: torch.Tensor, input_name: str = "image") -> torch.Tensor:
    """Validate a ComfyUI IMAGE (``[B,H,W,C]`` or ``[H,W,C]``) and return ``[H, W, 3]`` float32 0..1.

    Only the first image of a batch is used; an alpha channel (C=4) is dropped;
    a single channel (C=1) is repeated to RGB. uint8 input is scaled by 1/255.
    """
    if not isinstance(image, torch.Tensor):
        raise InputError(input_name, type(image).__name__, "is not an image tensor", "connect an IMAGE output")
    x = image
    if x.ndim == 4:
        if x.shape[0] == 0:
            raise InputError(input_name, tuple(x.shape), "the image batch is empty", "connect a non-empty IMAGE")
        if x.shape[0] > 1:
            log.info("%s: batch of %d images, using the first", input_name, x.shape[0])
        x = x[0]
    if x.ndim != 3 or x.shape[-1] not in (1, 3, 4) or min(x.shape[:2]) < 1:
        raise InputError(
            input_name, tuple(image.shape), "expected [B,H,W,C] or [H,W,C] with C = 1, 3 or 4", "connect an IMAGE"
        )
    x = x.detach().cpu()
    x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
    if not torch.isfinite(x).all():
        raise InputError(input_name, "tensor with NaN/inf", "contains NaN or infinite values", "fix the upstream node")
    if x.shape[-1] == 4:
        log.info("%s: dropping the alpha channel", input_name)
        x = x[..., :3]
    elif x.shape[-1] == 1:
        x = x.expand(-1, -1, 3)
    return x.clamp(0.0, 1.0).contiguous()

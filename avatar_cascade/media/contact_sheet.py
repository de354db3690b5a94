"""Contact sheet of the chosen keyframes: a grid of thumbnails with their scores written under them."""

from __future__ import annotations

from typing import Any

import torch

from avatar_cascade.media.frames import resize_uint8

THUMB_WIDTH = 160
COLUMNS = 6
_ABBREV = {
    "identity": "id",
    "sharpness": "sh",
    "face": "fa",
    "mouth": "mo",
    "colour": "co",
    "centre": "ce",
    "diversity": "di",
}


def caption_lines(index: int, score: dict) -> list[str]:
    """Text under keyframe ``index``: seam, time, source and anchor depth (``d1``); the reference's framing;
    the total; the scores, abbreviated."""
    head = f"#{index}"
    if "time_s" in score:
        head += f" t={score['time_s']:.2f}s"
    src = score.get("blueprint_index")
    head += f" bp{src}" if src is not None else f" {score.get('source', '')}"
    if score.get("anchor_depth") is not None:
        head += f" d{score['anchor_depth']}"
    lines = [head, *score.get("framing_caption", [])]
    if "total" in score:
        lines.append(f"total {score['total']:.2f}" + (" lifted" if score.get("lifted") else ""))
    parts = [f"{ab} {score[k]:.2f}" for k, ab in _ABBREV.items() if isinstance(score.get(k), float)]
    for i in range(0, len(parts), 3):
        lines.append("  ".join(parts[i : i + 3]))
    return lines


def render_contact_sheet(images: torch.Tensor, scores: list[dict], columns: int = COLUMNS) -> Any:
    """A PIL image: keyframes ``[S,H,W,3]`` uint8 in a grid, each with its caption."""
    from PIL import Image, ImageDraw, ImageFont

    s, h, w = images.shape[:3]
    tw = THUMB_WIDTH
    th = max(1, round(h * tw / w))
    thumbs = torch.cat([resize_uint8(images[i : i + 16], th, tw) for i in range(0, s, 16)])
    font = ImageFont.load_default()
    line_h = 12
    captions = [caption_lines(i, scores[i] if i < len(scores) else {}) for i in range(s)]
    cap_h = line_h * max(len(c) for c in captions) + 6
    cols = max(1, min(columns, s))
    rows = -(-s // cols)
    pad = 6
    sheet = Image.new("RGB", (cols * (tw + pad) + pad, rows * (th + cap_h + pad) + pad), (24, 24, 24))
    draw = ImageDraw.Draw(sheet)
    for i in range(s):
        x = pad + (i % cols) * (tw + pad)
        y = pad + (i // cols) * (th + cap_h + pad)
        sheet.paste(Image.fromarray(thumbs[i].numpy()), (x, y))
        for j, line in enumerate(captions[i]):
            draw.text((x + 2, y + th + 3 + j * line_h), line, fill=(235, 235, 235), font=font)
    return sheet


def as_uint8_tensor(image: Any) -> torch.Tensor:
    """A PIL image as ``[H,W,3]`` uint8 (for previews and IMAGE outputs)."""
    import numpy as np

    return torch.from_numpy(np.asarray(image.convert("RGB")).copy())

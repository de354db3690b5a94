"""Render a UI-format workflow as a node-graph picture (for the README), with PIL only.

Boxes at the nodes' ``pos`` / ``size``, a title bar, input slots on the left, output slots on the
right, widget values below, and links drawn as curves coloured by type. Run from the repository root:

    python scripts/render_workflow_png.py   # workflows/avatar_cascade_demo.json -> docs/demo_workflow.png
    python scripts/render_workflow_png.py WORKFLOW.json OUT.png
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

ROOT = Path(__file__).resolve().parents[1]
SCALE = 1.0
TITLE_H, SLOT_H, WIDGET_H, PAD = 30, 22, 24, 40
BG, NODE_BG, TITLE_BG, TEXT, DIM = (32, 32, 36), (53, 53, 58), (34, 85, 120), (235, 235, 235), (165, 165, 170)
CORE_TITLE_BG = (70, 70, 76)
TYPE_COLOURS = {
    "IMAGE": (100, 181, 246),
    "AUDIO": (239, 154, 154),
    "AVATAR_DIT": (186, 104, 200),
    "AVATAR_VAE": (255, 138, 101),
    "AVATAR_TEXT_ENCODER": (255, 213, 79),
    "AVATAR_AUDIO_ENCODER": (240, 98, 146),
    "AVATAR_MLLM": (77, 208, 225),
    "AVATAR_CLIP_VISION": (174, 213, 129),
    "AVATAR_TIMELINE": (129, 199, 132),
    "AVATAR_STORYLINE": (255, 183, 77),
    "AVATAR_BLUEPRINT": (144, 164, 174),
    "AVATAR_KEYFRAMES": (121, 134, 203),
    "AVATAR_CLIPS": (77, 182, 172),
}


def _font(size: int) -> ImageFont.ImageFont:
    for name in ("DejaVuSans.ttf", "Arial.ttf"):
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            continue
    return ImageFont.load_default()


def _short(value: object, limit: int = 30) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    text = text.replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _bezier(a: tuple[float, float], b: tuple[float, float], steps: int = 40) -> list[tuple[float, float]]:
    dx = max(60.0, abs(b[0] - a[0]) * 0.5)
    c1, c2 = (a[0] + dx, a[1]), (b[0] - dx, b[1])
    pts = []
    for i in range(steps + 1):
        t = i / steps
        u = 1 - t
        pts.append(
            (
                u**3 * a[0] + 3 * u * u * t * c1[0] + 3 * u * t * t * c2[0] + t**3 * b[0],
                u**3 * a[1] + 3 * u * u * t * c1[1] + 3 * u * t * t * c2[1] + t**3 * b[1],
            )
        )
    return pts


def _height(node: dict) -> float:
    rows = max(len(node.get("inputs", [])), len(node.get("outputs", [])), 1)
    return TITLE_H + SLOT_H * rows + WIDGET_H * len(node.get("widgets_values", [])) + 8


def render(workflow: dict, out: Path) -> Path:
    """Draw ``workflow`` (UI format) to ``out`` (PNG); returns ``out``."""
    nodes = workflow["nodes"]
    x0 = min(n["pos"][0] for n in nodes) - PAD
    y0 = min(n["pos"][1] for n in nodes) - PAD
    x1 = max(n["pos"][0] + n["size"][0] for n in nodes) + PAD
    y1 = max(n["pos"][1] + _height(n) for n in nodes) + PAD
    img = Image.new("RGB", (int(x1 - x0), int(y1 - y0)), BG)
    draw = ImageDraw.Draw(img)
    f_title, f_text = _font(15), _font(12)
    by_id = {n["id"]: n for n in nodes}

    def at(x: float, y: float) -> tuple[float, float]:
        return x - x0, y - y0

    def out_slot(node: dict, slot: int) -> tuple[float, float]:
        x, y = node["pos"]
        return at(x + node["size"][0], y + TITLE_H + SLOT_H * slot + SLOT_H / 2)

    def in_slot(node: dict, slot: int) -> tuple[float, float]:
        x, y = node["pos"]
        return at(x, y + TITLE_H + SLOT_H * slot + SLOT_H / 2)

    for _lid, src, s_slot, dst, d_slot, typ in workflow["links"]:
        colour = TYPE_COLOURS.get(typ, DIM)
        draw.line(_bezier(out_slot(by_id[src], s_slot), in_slot(by_id[dst], d_slot)), fill=colour, width=3)

    for node in nodes:
        x, y = at(*node["pos"])
        w, h = node["size"][0], _height(node)
        core = "cnr_id" not in node.get("properties", {})
        draw.rounded_rectangle([x, y, x + w, y + h], radius=8, fill=NODE_BG, outline=(20, 20, 22), width=2)
        draw.rounded_rectangle([x, y, x + w, y + TITLE_H], radius=8, fill=CORE_TITLE_BG if core else TITLE_BG)
        title = node.get("title") or node["type"].replace("AvatarCascade", "Avatar Cascade: ")
        draw.text((x + 10, y + 7), _short(title, 34), fill=TEXT, font=f_title)
        for i, inp in enumerate(node.get("inputs", [])):
            cx, cy = in_slot(node, i)
            draw.ellipse([cx - 5, cy - 5, cx + 5, cy + 5], fill=TYPE_COLOURS.get(inp["type"], DIM))
            draw.text((cx + 10, cy - 7), inp["name"], fill=DIM, font=f_text)
        for i, outp in enumerate(node.get("outputs", [])):
            cx, cy = out_slot(node, i)
            draw.ellipse([cx - 5, cy - 5, cx + 5, cy + 5], fill=TYPE_COLOURS.get(outp["type"], DIM))
            label = outp["name"]
            draw.text((cx - 10 - draw.textlength(label, font=f_text), cy - 7), label, fill=DIM, font=f_text)
        rows = max(len(node.get("inputs", [])), len(node.get("outputs", [])), 1)
        wy = y + TITLE_H + SLOT_H * rows
        for value in node.get("widgets_values", []):
            if value is None:
                continue
            draw.rounded_rectangle([x + 8, wy + 2, x + w - 8, wy + WIDGET_H - 2], radius=6, fill=(40, 40, 44))
            draw.text((x + 16, wy + 5), _short(value, 40), fill=TEXT, font=f_text)
            wy += WIDGET_H
    out.parent.mkdir(parents=True, exist_ok=True)
    img.save(out, optimize=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("workflow", nargs="?", default=str(ROOT / "workflows" / "avatar_cascade_demo.json"))
    ap.add_argument("out", nargs="?", default=str(ROOT / "docs" / "demo_workflow.png"))
    args = ap.parse_args(argv)
    path = render(json.loads(Path(args.workflow).read_text()), Path(args.out))
    print("wrote", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

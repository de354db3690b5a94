"""The quality report as one PNG (PIL only): four panels over the video's time.

1. identity to the reference per second (0..1; grey line at 0.5 = dlib's same-person threshold);
2. mouth openness (orange) and speech activity (green) per frame, with the lip-sync proxy in the title;
3. colour ΔE to the reference per second (the per-minute means as a step line);
4. the luma jump between consecutive frames, clip boundaries in red with their seam ratio.
"""

from __future__ import annotations

from PIL import Image, ImageDraw, ImageFont

WIDTH, PANEL_H, PAD, LEFT = 1000, 150, 8, 48
BG, AXIS, TEXT = (250, 250, 248), (120, 120, 120), (30, 30, 30)
IDENTITY, MOUTH, SPEECH, COLOUR, JUMP, SEAM = (
    (40, 90, 170),
    (230, 120, 20),
    (70, 160, 90),
    (150, 60, 150),
    (90, 98, 110),
    (210, 40, 40),
)


def _font():
    try:
        return ImageFont.load_default(size=12)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


class _Panel:
    def __init__(self, draw, top: int, duration_s: float, y_max: float, title: str, font) -> None:
        self.d, self.top, self.dur, self.y_max, self.font = draw, top, max(duration_s, 1e-6), max(y_max, 1e-6), font
        self.x0, self.x1, self.y0, self.y1 = LEFT, WIDTH - PAD, top + 18, top + PANEL_H - 4
        draw.text((LEFT, top + 2), title, fill=TEXT, font=font)
        draw.rectangle([self.x0, self.y0, self.x1, self.y1], outline=AXIS)
        draw.text((4, self.y0 - 2), f"{y_max:.3g}", fill=AXIS, font=font)
        draw.text((4, self.y1 - 12), "0", fill=AXIS, font=font)

    def xy(self, t: float, v: float) -> tuple[float, float]:
        x = self.x0 + (self.x1 - self.x0) * min(max(t / self.dur, 0.0), 1.0)
        y = self.y1 - (self.y1 - self.y0) * min(max(v / self.y_max, 0.0), 1.0)
        return x, y

    def line(self, points: list[tuple[float, float]], colour, width: int = 1) -> None:
        if len(points) == 1:
            x, y = self.xy(*points[0])
            self.d.ellipse([x - 2, y - 2, x + 2, y + 2], fill=colour)
        elif points:
            self.d.line([self.xy(t, v) for t, v in points], fill=colour, width=width)

    def vline(self, t: float, colour, label: str = "") -> None:
        x, _ = self.xy(t, 0)
        self.d.line([(x, self.y0), (x, self.y1)], fill=colour)
        if label:
            self.d.text((x + 2, self.y0 + 2), label, fill=colour, font=self.font)


def render_report(report: dict) -> Image.Image:
    """Draw ``report`` (from :func:`~avatar_cascade.stages.quality.report.quality_report`, with its series)."""
    fps = float(eval_fps(report["fps"]))
    dur = report["duration_s"]
    img = Image.new("RGB", (WIDTH, 4 * PANEL_H + 24), BG)
    d, font = ImageDraw.Draw(img), _font()
    m = report["methods"]
    d.text(
        (PAD, 4),
        f"{report['video']}  {report['frames']} frames @ {report['fps']} fps, {dur:.2f} s",
        fill=TEXT,
        font=font,
    )
    ident = report["identity"]
    p = _Panel(
        d,
        20,
        dur,
        1.0,
        f"identity to the reference ({m['identity']}): mean {ident['mean']}, drift {ident['drift_per_minute']}/min",
        font,
    )
    p.line([(0, 0.5), (dur, 0.5)], (200, 200, 200))
    p.line([(t, v) for t, v in ident["per_second"]], IDENTITY, 2)
    series = report.get("_series", {})
    ls = report["lipsync_proxy"]
    p = _Panel(
        d,
        20 + PANEL_H,
        dur,
        1.0,
        (
            f"mouth ({m['mouth']}, orange) vs speech ({m['speech']}, green): r={ls['correlation']} "
            f"(best {ls['best_correlation']} at lag {ls['best_lag_frames']})"
        ),
        font,
    )
    mouth = series.get("mouth", [])
    top = max(mouth, default=0) or 1.0
    p.line([(i / fps, v) for i, v in enumerate(series.get("speech", []))], SPEECH)
    p.line([(i / fps, v / top) for i, v in enumerate(mouth)], MOUTH)
    col = report["colour"]
    per_s = col["delta_e_per_second"]
    p = _Panel(
        d,
        20 + 2 * PANEL_H,
        dur,
        max(per_s, default=1.0) * 1.1,
        f"colour delta E to the reference per second (mean {col['mean']}; per minute {col['delta_e_per_minute']})",
        font,
    )
    p.line([(i + 0.5, v) for i, v in enumerate(per_s)], COLOUR, 2)
    jumps = series.get("jumps", [])
    seams = report["seams"]
    p = _Panel(
        d,
        20 + 3 * PANEL_H,
        dur,
        max(jumps, default=1.0) * 1.1 or 1.0,
        f"frame-to-frame luma jump; clip boundaries in red with their seam ratio (source: {seams['source']})",
        font,
    )
    p.line([((i + 1) / fps, v) for i, v in enumerate(jumps)], JUMP)
    for b in seams["boundaries"]:
        p.vline(b["time_s"], SEAM, f"{b['ratio']:.1f}")
    return img


def eval_fps(text: str):
    from fractions import Fraction

    return Fraction(text)

"""Run every benchmark in ``benchmarks/`` and summarise.

    python -m benchmarks.run_all [--only cascade,audio_aligner]

Each ``bench_<name>.py`` writes ``results/<name>.json`` and ``.md``; this script runs them one after
another (each case in its own process), then writes ``results/summary.md`` (all tables) and
``results/duration.png`` (wall time and peak RSS versus video duration for every case that has a
``video_s`` or ``param_minutes`` figure). GPU cases are recorded as skipped without a GPU.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def run_all(only: set[str] | None) -> list[Path]:
    done = []
    for bench in sorted(HERE.glob("bench_*.py")):
        name = bench.stem.removeprefix("bench_")
        if only and name not in only:
            continue
        print(f"== {name}", file=sys.stderr)
        r = subprocess.run([sys.executable, "-m", f"benchmarks.{bench.stem}"], cwd=HERE.parent)
        if r.returncode != 0:
            print(f"benchmark {name} failed with exit code {r.returncode}", file=sys.stderr)
        if (RESULTS / f"{name}.json").is_file():
            done.append(RESULTS / f"{name}.json")
    return done


def duration_of(row: dict) -> float | None:
    for key in ("video_s", "param_seconds"):
        if isinstance(row.get(key), (int, float)):
            return float(row[key])
    if isinstance(row.get("param_minutes"), (int, float)):
        return 60.0 * row["param_minutes"]
    return None


def plot(results: list[Path], out: Path) -> Path | None:
    """Two log-log panels (wall s, peak RSS MB vs video duration), one line per benchmark series."""
    from PIL import Image, ImageDraw

    series: dict[str, list[tuple[float, float, float]]] = {}
    for path in results:
        data = json.loads(path.read_text())
        for row in data["rows"]:
            d = duration_of(row)
            if d is None or not row.get("ok"):
                continue
            series_name = re.sub(r"[-_]?\d+(min|s)\b", "", row["case"]).strip("-_")
            key = f"{data['benchmark']}:{series_name}"
            series.setdefault(key, []).append((d, row["wall_s"], row["peak_rss_mb"]))
    if not series:
        return None
    import math

    w, h, pad = 1100, 460, 60
    img = Image.new("RGB", (w, h), "white")
    draw = ImageDraw.Draw(img)
    colours = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75)]
    xs = [p[0] for s in series.values() for p in s]
    for panel, (idx, label) in enumerate(((1, "wall time (s)"), (2, "peak RSS (MB)"))):
        x0 = pad + panel * (w // 2)
        x1, y0, y1 = x0 + w // 2 - 2 * pad, pad, h - pad
        ys = [p[idx] for s in series.values() for p in s]
        lx = (math.log10(min(xs)), math.log10(max(xs)) + 1e-9)
        ly = (math.log10(max(min(ys), 1e-3)), math.log10(max(ys)) + 1e-9)

        def px(x, y, lx=lx, ly=ly, x0=x0, x1=x1, y0=y0, y1=y1):
            fx = (math.log10(x) - lx[0]) / max(lx[1] - lx[0], 1e-9)
            fy = (math.log10(max(y, 1e-3)) - ly[0]) / max(ly[1] - ly[0], 1e-9)
            return x0 + fx * (x1 - x0), y1 - fy * (y1 - y0)

        draw.rectangle([x0, y0, x1, y1], outline="black")
        draw.text((x0, y0 - 20), f"{label} vs video duration (s), log-log", fill="black")
        draw.text((x0, y1 + 8), f"{min(xs):.0f} s", fill="black")
        draw.text((x1 - 40, y1 + 8), f"{max(xs):.0f} s", fill="black")
        draw.text((x0 - 55, y1 - 10), f"{min(ys):.3g}", fill="black")
        draw.text((x0 - 55, y0), f"{max(ys):.3g}", fill="black")
        for i, (name, pts) in enumerate(sorted(series.items())):
            c = colours[i % len(colours)]
            pts = sorted(pts)
            coords = [px(p[0], p[idx]) for p in pts]
            if len(coords) > 1:
                draw.line(coords, fill=c, width=2)
            for cx, cy in coords:
                draw.ellipse([cx - 3, cy - 3, cx + 3, cy + 3], fill=c)
            if panel == 0:
                draw.text((x0 + 8, y0 + 8 + 14 * i), name, fill=c)
    img.save(out)
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", help="comma-separated benchmark names (e.g. cascade,audio_aligner)")
    ap.add_argument("--no-run", action="store_true", help="only summarise existing results")
    args = ap.parse_args()
    only = set(args.only.split(",")) if args.only else None
    results = sorted(RESULTS.glob("*.json")) if args.no_run else run_all(only)
    RESULTS.mkdir(exist_ok=True)
    tables = [(RESULTS / f"{p.stem}.md").read_text() for p in results if (RESULTS / f"{p.stem}.md").is_file()]
    (RESULTS / "summary.md").write_text("# Benchmarks\n\n" + "\n".join(tables))
    png = plot(results, RESULTS / "duration.png")
    print(f"wrote {RESULTS / 'summary.md'}" + (f" and {png}" if png else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())

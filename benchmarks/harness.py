"""Benchmark harness: every case runs in a fresh process so its peak RSS is its own.

A benchmark module ``benchmarks/bench_<name>.py`` defines ``CASES`` (a list of
``Case``) and calls ``main(__name__, CASES)``; each case function takes its
params as keyword arguments and may return a dict of extra figures (e.g.
``{"steps": 20, "dit_s": 1.2}``). Results go to ``benchmarks/results/<name>.json``
and ``.md`` (a markdown table). GPU cases set ``needs_gpu=True`` and are
skipped (recorded as skipped, with the reason) when no CUDA device exists.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import resource
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class Case:
    name: str
    fn: Callable[..., dict | None]
    params: dict = field(default_factory=dict)
    needs_gpu: bool = False


def _child(fn, params, queue) -> None:
    try:
        import torch

        torch.manual_seed(0)
        t0 = time.perf_counter()
        extra = fn(**params) or {}
        wall = time.perf_counter() - t0
        peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        gpu_peak = None
        if torch.cuda.is_available():
            gpu_peak = torch.cuda.max_memory_allocated() / 2**20
        queue.put({"ok": True, "wall_s": wall, "peak_rss_mb": peak_kb / 1024, "peak_vram_mb": gpu_peak, **extra})
    except BaseException as exc:  # report, never hang the parent
        queue.put({"ok": False, "error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()[-2000:]})


def run_case(case: Case, timeout_s: float = 3600) -> dict:
    """Run one case in a spawned process; returns its figures (or the skip/error reason)."""
    row = {"case": case.name, **{f"param_{k}": v for k, v in case.params.items()}}
    if case.needs_gpu:
        import torch

        if not torch.cuda.is_available():
            return {**row, "ok": False, "skipped": "no CUDA GPU on this machine"}
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_child, args=(case.fn, case.params, q))
    p.start()
    p.join(timeout_s)
    if p.is_alive():
        p.kill()
        return {**row, "ok": False, "error": f"timed out after {timeout_s} s"}
    return {**row, **(q.get() if not q.empty() else {"ok": False, "error": f"exit code {p.exitcode}"})}


def machine() -> dict:
    import torch

    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": platform.processor() or "?",
        "cores": __import__("os").cpu_count(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def markdown_table(rows: list[dict]) -> str:
    cols: list[str] = []
    for r in rows:
        for k in r:
            if k not in cols and k != "trace":
                cols.append(k)

    def fmt(v) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return "" if v is None else str(v)

    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def write_results(name: str, rows: list[dict], out_dir: Path = RESULTS) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    data = {"benchmark": name, "machine": machine(), "time": time.strftime("%Y-%m-%d %H:%M:%S"), "rows": rows}
    (out_dir / f"{name}.json").write_text(json.dumps(data, indent=1, default=str))
    (out_dir / f"{name}.md").write_text(f"## {name}\n\n{markdown_table(rows)}\n")
    return out_dir / f"{name}.json"


def main(module_name: str, cases: list[Case]) -> None:
    """CLI of one benchmark module: ``python -m benchmarks.bench_x [--only NAME] [--quick]``."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", help="run only cases whose name contains this")
    args = ap.parse_args()
    if module_name == "__main__":  # run with -m: the real name is on the module spec
        spec = getattr(sys.modules["__main__"], "__spec__", None)
        module_name = spec.name if spec is not None else Path(sys.argv[0]).stem
    name = module_name.rsplit(".", 1)[-1].removeprefix("bench_")
    rows = []
    for case in cases:
        if args.only and args.only not in case.name:
            continue
        row = run_case(case)
        print(json.dumps({k: v for k, v in row.items() if k != "trace"}, default=str), file=sys.stderr)
        rows.append(row)
    path = write_results(name, rows)
    print(markdown_table(rows))
    print(f"wrote {path}", file=sys.stderr)

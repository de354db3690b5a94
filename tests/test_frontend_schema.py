"""Every shipped UI workflow and the subgraph blueprint pass ComfyUI's current frontend validator.

The frontend (comfyui-frontend-package 1.58) checks each workflow it loads against its zod schema
(``validateComfyWorkflow``); a workflow that fails is refused with "Invalid workflow against zod
schema" (a models entry without a URL is enough). The test runs that validator itself, from the
pinned frontend package, in Node: ``bash scripts/comfyui_frontend.sh PYTHON`` prepares it and
``.ci/run`` sets ``AVATAR_CASCADE_FRONTEND``; skipped without it.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FRONTEND = os.environ.get("AVATAR_CASCADE_FRONTEND")
pytestmark = pytest.mark.skipif(
    not FRONTEND or not shutil.which("node"),
    reason="set AVATAR_CASCADE_FRONTEND (bash scripts/comfyui_frontend.sh) and install node to run these",
)
UI_FILES = sorted(p for p in (ROOT / "workflows").glob("*.json") if not p.name.endswith("_api.json"))
BLUEPRINTS = sorted((ROOT / "subgraphs").glob("*.json"))


def _validate(paths: list[Path]) -> dict[str, dict]:
    run = subprocess.run(
        ["node", str(ROOT / "tests" / "frontend_validate.mjs"), FRONTEND, *map(str, paths)],
        capture_output=True, text=True, timeout=300,
    )
    lines = [json.loads(line) for line in run.stdout.splitlines() if line.startswith('{"file"')]
    assert len(lines) == len(paths), (run.returncode, run.stderr[-3000:])
    return {Path(r["file"]).name: r for r in lines}


def test_the_shipped_workflows_and_the_blueprint_pass_the_frontends_schema():
    results = _validate(UI_FILES + BLUEPRINTS)
    bad = {name: r["errors"] for name, r in results.items() if not r["ok"]}
    assert not bad, bad


def test_the_validator_refuses_what_the_frontend_refuses(tmp_path):
    """Not vacuous: a models entry without its URL, and a subgraph without its input node's bounds, fail."""
    ui = json.loads(UI_FILES[0].read_text())
    ui["models"] = [{"name": "x.safetensors", "directory": "vae"}]
    (tmp_path / "no_url.json").write_text(json.dumps(ui))
    blueprint = json.loads(BLUEPRINTS[0].read_text())
    broken = copy.deepcopy(blueprint)
    del broken["definitions"]["subgraphs"][0]["inputNode"]["bounding"]
    (tmp_path / "no_bounds.json").write_text(json.dumps(broken))
    results = _validate([tmp_path / "no_url.json", tmp_path / "no_bounds.json"])
    assert not results["no_url.json"]["ok"] and "url" in " ".join(results["no_url.json"]["errors"])
    assert not results["no_bounds.json"]["ok"] and "bounding" in " ".join(results["no_bounds.json"]["errors"])

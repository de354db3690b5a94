"""Packaging: `comfy node pack` builds the registry zip with the runtime files and without dev files.

The pack runs in a temporary git repository holding a copy of the files git would commit from this
tree (tracked plus untracked-not-ignored), so the user's checkout is never touched and files not yet
committed are packed as they will be. Skipped when ``comfy`` (comfy-cli) or ``git`` is unavailable.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COMFY = shutil.which("comfy") or shutil.which("comfy", path=str(Path(sys.executable).parent))
GIT = shutil.which("git")
RUNTIME = ("__init__.py", "README.md", "LICENSE", "pyproject.toml", "requirements.txt")
RUNTIME_DIRS = ("nodes/", "avatar_cascade/", "workflows/", "subgraphs/")
DEV_DIRS = ("tests/", "benchmarks/", "scripts/", "docs/", ".ci/", ".github/")


def _tree_files() -> list[str]:
    r = subprocess.run(
        [GIT, "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=False,
    )
    if r.returncode != 0:
        pytest.skip(f"this tree is not a git checkout: {r.stderr.decode(errors='replace')[:200]}")
    return [f for f in r.stdout.decode().split("\0") if f and (ROOT / f).is_file()]


@pytest.fixture(scope="module")
def packed(tmp_path_factory) -> list[str]:
    if not COMFY or not GIT:
        pytest.skip("needs comfy-cli (`comfy`) and git on PATH")
    work = tmp_path_factory.mktemp("pack") / "avatar-cascade"
    for rel in _tree_files():
        (work / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, work / rel)
    env = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "HOME": str(work.parent)}
    subprocess.run([GIT, "init", "-q"], cwd=work, check=True, env=env)
    subprocess.run([GIT, "add", "-A"], cwd=work, check=True, env=env)
    r = subprocess.run(
        [COMFY, "--skip-prompt", "--no-json", "node", "pack"],
        cwd=work,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    with zipfile.ZipFile(work / "node.zip") as z:
        return z.namelist()


def test_zip_holds_the_runtime_files(packed):
    names = set(packed)
    for f in RUNTIME:
        assert f in names, f
    for d in RUNTIME_DIRS:
        assert any(n.startswith(d) for n in names), d
    # Engine data files the nodes read at run time.
    assert any(n.startswith("avatar_cascade/configs/") and n.endswith("config.json") for n in names)
    assert any(n.startswith("avatar_cascade/stages/director/prompts/") for n in names)
    assert any(n.startswith("avatar_cascade/assets/") and n.endswith(".png") for n in names)
    assert any(n.startswith("workflows/") and n.endswith("_api.json") for n in names)


def test_zip_holds_no_tests_benchmarks_or_dev_tools(packed):
    leaked = [n for n in packed if n.startswith(DEV_DIRS) or "__pycache__" in n or n.endswith(".pyc")]
    assert not leaked, leaked[:20]


def test_every_shipped_workflow_is_packed(packed):
    shipped = {f"{d}/{p.name}" for d in ("workflows", "subgraphs") for p in (ROOT / d).glob("*.json")}
    assert shipped and shipped <= set(packed)


def test_pyproject_has_the_registry_fields():
    tomllib = pytest.importorskip("tomllib", reason="Python 3.11+ reads pyproject.toml with tomllib")
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    comfy = meta["tool"]["comfy"]
    assert comfy["PublisherId"] and comfy["DisplayName"]
    assert "Icon" in comfy
    # The registry wants a URL; empty is allowed (no icon shown) but a value must be a https URL.
    assert comfy["Icon"] == "" or comfy["Icon"].startswith("https://"), comfy["Icon"]
    assert meta["project"]["name"] and meta["project"]["version"]

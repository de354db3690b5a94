"""Shared helpers of the adversarial suite (``tests/test_hostile_*.py``).

``models_tree`` mirrors the session's demo-model tree with symlinked files (cheap, and the tests can
add hostile folders to their own copy); ``run_cli`` runs ``python -m avatar_cascade`` in a subprocess
(the real entry point: exit status, stderr, stdin) with this tree first on ``PYTHONPATH``;
``plant_code_folder`` writes a Qwen folder whose processor config maps to a marker-writing ``.py``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from avatar_cascade.demo.models import DIT_FILE, MLLM_FOLDER

ROOT = Path(__file__).resolve().parents[1]


def models_tree(demo_models_dir: Path, dest: Path, skip: tuple[str, ...] = ("LLM",)) -> Path:
    """A models/ tree at ``dest`` whose files are symlinks into ``demo_models_dir`` (folders in
    ``skip`` left out, so a test can put its own there)."""
    for src in demo_models_dir.rglob("*"):
        rel = src.relative_to(demo_models_dir)
        if rel.parts[0] in skip or not src.is_file():
            continue
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        (dest / rel).symlink_to(src)
    return dest


def copy_mllm(demo_models_dir: Path, models: Path, name: str = MLLM_FOLDER) -> Path:
    """A real copy of the demo Qwen2.5-VL folder as ``models/LLM/<name>``."""
    dest = models / "LLM" / name
    shutil.copytree(demo_models_dir / "LLM" / MLLM_FOLDER, dest)
    return dest


MARKER_CODE = """import os, pathlib
pathlib.Path(os.environ["AVATAR_TEST_MARKER"]).write_text("the model folder's code ran")
from transformers import Qwen2_5_VLProcessor
class EvilProcessor(Qwen2_5_VLProcessor):
    pass
"""


def plant_code_folder(demo_models_dir: Path, models: Path, config: str = "processor_config.json") -> Path:
    """``models/LLM/evil``: the demo Qwen folder plus ``evil_processor.py`` (writes the file named by
    ``$AVATAR_TEST_MARKER`` on import) and an ``auto_map`` to it in ``config``."""
    folder = copy_mllm(demo_models_dir, models, "evil")
    (folder / "evil_processor.py").write_text(MARKER_CODE)
    path = folder / config
    doc = json.loads(path.read_text())
    doc["auto_map"] = {"AutoProcessor": "evil_processor.EvilProcessor"}
    doc["processor_class"] = "EvilProcessor"
    path.write_text(json.dumps(doc))
    return folder


def run_cli(*args: str, cwd: Path, stdin: str = "", env: dict | None = None, timeout: float = 600):
    """``python -m avatar_cascade ARGS`` in a subprocess: ``CompletedProcess`` (text stdout / stderr)."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "avatar_cascade", *args],
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
    )


def run_args(models: Path, out: Path, image: Path | None = None, audio: Path | None = None, **over: str) -> list[str]:
    """Arguments of a small ``run`` on the demo models (about 10 s on one core); ``over`` replaces
    options (``mllm="x"`` -> ``--mllm x``; ``None`` drops one)."""
    from avatar_cascade.media import sample_audio_path, sample_image_path

    opts = {
        "--image": str(image or sample_image_path()),
        "--audio": str(audio or sample_audio_path()),
        "--prompt": "a person talks",
        "--models": str(models),
        "--out": str(out),
        "--dit": DIT_FILE,
        "--width": "32",
        "--height": "32",
        "--steps": "1",
        "--clip-frames": "17",
        "--fps": "16",
        "--blueprint-width": "32",
        "--blueprint-height": "32",
        "--blueprint-window-frames": "17",
    }
    for k, v in over.items():
        opts["--" + k.replace("_", "-")] = v
    return ["run", *(x for k, v in opts.items() if v is not None for x in (k, v))]


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def one_line_error(stderr: str) -> str:
    """The ``error: ...`` line of a CLI failure; asserts there is no traceback."""
    assert "Traceback" not in stderr, stderr
    lines = [ln for ln in stderr.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1, stderr
    return lines[0]

"""Adversarial suite: several CLI runs on one work folder at the same time, and a double Ctrl-C.

Expected outcomes: of three runs with different inputs started together on one ``--workdir``, each
either finishes with the right video (byte-identical to the same run alone in a fresh work folder) or
is refused at once as busy (exit 2, one line, nothing touched) and finishes when run again; no run ever
fails on a store another run pruned. A second Ctrl-C while the first unwinds stops at once with one
line (exit 130, the interrupt status), never a traceback.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time

import pytest

from tests.hostile_helpers import ROOT, models_tree, one_line_error, run_args, run_cli, sha256

PROMPTS = ("a person talks calmly", "a person sings loudly", "a person laughs, nod at 0:02")


@pytest.mark.slow
def test_three_runs_on_one_work_folder_all_end_with_correct_videos(demo_models_dir, tmp_path):
    tree = models_tree(demo_models_dir, tmp_path / "models")
    work = tmp_path / "shared_work"

    def cmd(i: int, workdir) -> list[str]:
        args = run_args(tree, tmp_path / f"out{i}.mp4", prompt=PROMPTS[i], seed=str(i))
        return [sys.executable, "-m", "avatar_cascade", *args, "--workdir", str(workdir)]

    env = {"PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    procs = [subprocess.Popen(cmd(i, work), cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True) for i in range(3)]
    results = [(p.wait(timeout=600), p.stderr.read()) for p in procs]
    finished = [i for i, (rc, _) in enumerate(results) if rc == 0]
    assert finished, results
    for i, (rc, err) in enumerate(results):
        if rc != 0:
            assert rc == 2, err
            line = one_line_error(err)
            assert "--workdir" in line and "another run is using this work folder" in line
            assert not (tmp_path / f"out{i}.mp4").exists()
    for i, (rc, _) in enumerate(results):  # the refused ones, now one after the other
        if rc != 0:
            again = subprocess.run(cmd(i, work), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
            assert again.returncode == 0, again.stderr
    for i in range(3):  # each video as the same run alone would make it
        alone = subprocess.run(
            cmd(i, tmp_path / f"alone{i}"), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
        )
        assert alone.returncode == 0, alone.stderr
        produced = sha256(tmp_path / f"out{i}.mp4")
        (tmp_path / f"out{i}.mp4").unlink()
        rerun = subprocess.run(cmd(i, tmp_path / f"alone{i}"), cwd=tmp_path, env=env, capture_output=True, timeout=600)
        assert rerun.returncode == 0
        assert sha256(tmp_path / f"out{i}.mp4") == produced


def test_a_second_run_on_a_busy_work_folder_is_refused_in_one_line(demo_models_dir, tmp_path):
    """Deterministic busy case: the folder's lock is held (as a live run holds it): exit 2, one line."""
    from avatar_cascade.core.locks import FolderLock

    tree = models_tree(demo_models_dir, tmp_path / "models")
    work = tmp_path / "w"
    work.mkdir()
    with FolderLock(work):
        res = run_cli(*run_args(tree, tmp_path / "o.mp4"), "--workdir", str(work), cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    assert "another run is using this work folder" in one_line_error(res.stderr)
    assert sorted(p.name for p in work.iterdir()) == [".avatar_cascade.lock"]
    assert not (tmp_path / "o.mp4").exists()


def test_double_ctrl_c_is_one_line_and_no_traceback(demo_models_dir, tmp_path):
    """Two SIGINTs in a row once the run is under way: exit 130, an 'interrupted' line, no traceback."""
    tree = models_tree(demo_models_dir, tmp_path / "models")
    args = run_args(tree, tmp_path / "o.mp4", steps="4")
    env = {"PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "avatar_cascade", *args], cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True
    )
    lines: list[str] = []
    started = threading.Event()

    def read() -> None:
        for line in proc.stderr:
            lines.append(line)
            if "stage audio_aligner" in line:
                started.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert started.wait(300), "".join(lines)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.02)
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    rc = proc.wait(timeout=120)
    reader.join(timeout=10)
    err = "".join(lines)
    assert rc == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert [ln for ln in err.splitlines() if ln.startswith("interrupted")], err
    assert not (tmp_path / "o.mp4").exists()

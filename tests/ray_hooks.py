"""Ray ``worker_process_setup_hook`` for the Ray tests: counts DiT forwards in every worker process.

Set ``runtime_env={"worker_process_setup_hook": "tests.ray_hooks.count_dit_forwards", "env_vars":
{FORWARD_DIR: folder}}``: every worker process then appends one line to ``folder/<pid>.log`` after
each forward of a ``WanTransformer3DModel`` (the files outlive a killed worker). When
``folder/KILL_ARMED`` holds a number K, the first worker to start its forward K+1 writes its pid to
``folder/victim`` and waits there (to be killed from outside, mid-clip).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

FORWARD_DIR = "AVATAR_CASCADE_TEST_FORWARD_DIR"
KILL_ARMED = "kill_armed"
VICTIM = "victim"


def count_dit_forwards() -> None:
    folder = os.environ.get(FORWARD_DIR)
    if not folder:
        return
    from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook

    folder_path = Path(folder)
    done = {"n": 0}

    def is_dit(module) -> bool:
        return type(module).__name__ == "WanTransformer3DModel"

    def after(module, args, output):
        if is_dit(module):
            done["n"] += 1
            with (folder_path / f"{os.getpid()}.log").open("a") as f:
                f.write("forward\n")

    def before(module, args):
        if not is_dit(module):
            return
        armed = folder_path / KILL_ARMED
        if armed.exists() and done["n"] == int(armed.read_text()) and _claim(folder_path / VICTIM):
            time.sleep(300)  # killed here by the test

    register_module_forward_hook(after)
    register_module_forward_pre_hook(before)


def _claim(path: Path) -> bool:
    """True for the one process that creates ``path`` (holding its pid)."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        f.write(str(os.getpid()))
    return True

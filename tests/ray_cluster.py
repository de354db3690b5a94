"""A real Ray cluster on this machine, for tests and benchmarks: a head node plus joined nodes.

``LocalRayCluster(nodes=2)`` runs ``ray start --head --block`` and ``ray start --address
127.0.0.1:PORT --block`` (one CPU each, small object stores, no dashboard, a temp dir of its own),
the way a real cluster is started, and :meth:`stop` ends them with SIGTERM (``--block`` stops the
node's processes on it), then reports any process of the cluster still alive (and kills it by pid).
Every ``ray start`` process gets this repository on ``PYTHONPATH`` (the workers import the pack,
and ``tests.ray_hooks``), ``RAY_AUTH_MODE=disabled`` (loopback only) and ``extra_env``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
OBJECT_STORE_BYTES = 100 * 1024 * 1024
START_TIMEOUT_S = 120.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ray_env(extra: dict | None = None) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env.update(RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env.update(extra or {})
    return env


class LocalRayCluster:
    """``nodes`` Ray nodes on loopback, ``cpus`` CPUs each; ``address`` for ``ray.init``."""

    def __init__(self, nodes: int = 2, cpus: int = 1, extra_env: dict | None = None) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="acray", dir="/tmp"))  # short: Ray's socket paths must stay < 108
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.env = ray_env(extra_env)
        self.procs: list[subprocess.Popen] = []
        self.pids: set[int] = set()
        ray_cli = Path(sys.executable).with_name("ray")
        common = ["--block", "--node-ip-address", "127.0.0.1", f"--num-cpus={cpus}", "--num-gpus=0"]
        common += [f"--object-store-memory={OBJECT_STORE_BYTES}", "--disable-usage-stats"]
        try:
            head = [str(ray_cli), "start", "--head", f"--port={self.port}", "--include-dashboard=false"]
            self._start(head + common + [f"--temp-dir={self.dir}"], "head")
            for i in range(1, nodes):
                self._start([str(ray_cli), "start", f"--address={self.address}", *common], f"node{i}")
        except BaseException:
            self.stop()
            raise

    def _start(self, cmd: list[str], name: str) -> None:
        log = (self.dir / f"{name}.log").open("w")
        self.procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env))
        deadline = time.monotonic() + START_TIMEOUT_S
        while "Ray runtime started" not in (self.dir / f"{name}.log").read_text():
            if self.procs[-1].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"ray start ({name}) failed:\n{(self.dir / f'{name}.log').read_text()[-3000:]}")
            time.sleep(0.2)

    def processes(self) -> set[int]:
        """Pids of every process of the cluster now (the ``ray start`` processes and their descendants)."""
        out = set()
        for p in self.procs:
            try:
                proc = psutil.Process(p.pid)
                out |= {proc.pid, *(c.pid for c in proc.children(recursive=True))}
            except psutil.NoSuchProcess:
                continue
        self.pids |= out
        return out

    def stop(self) -> list[str]:
        """End the cluster; returns the processes that were still alive afterwards (killed by pid)."""
        self.processes()
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        deadline = time.monotonic() + 15
        left = self._alive()
        while left and time.monotonic() < deadline:
            time.sleep(0.3)
            left = self._alive()
        described = []
        for proc in left:
            try:
                described.append(f"{proc.pid} {' '.join(proc.cmdline())[:120]}")
                proc.kill()
            except psutil.NoSuchProcess:
                continue
        shutil.rmtree(self.dir, ignore_errors=True)
        return described

    def _alive(self) -> list[psutil.Process]:
        alive = []
        for pid in self.pids:
            try:
                proc = psutil.Process(pid)
                if proc.status() != psutil.STATUS_ZOMBIE:
                    alive.append(proc)
            except psutil.NoSuchProcess:
                continue
        return alive

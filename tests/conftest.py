"""Test setup: the repository root on sys.path (so ``nodes`` imports), offline hubs, few threads."""

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# Tiny models are latency-bound: one intra-op thread is faster and deterministic, and avoids
# oversubscribing small (2-core) CI machines.
import torch  # noqa: E402

torch.set_num_threads(1)
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def demo_models_dir(tmp_path_factory):
    """A ComfyUI-style models/ tree filled by the real demo-model factory (written once per session)."""
    from avatar_cascade.demo.models import write_demo_models

    root = tmp_path_factory.mktemp("models")
    write_demo_models(root)
    return root

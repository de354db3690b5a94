"""Test setup: the repository root on sys.path (so ``nodes`` and ``tests.helpers`` import), offline hubs,
one torch thread, and the fixtures shared by several test modules.

Fixtures here: ``demo_models_dir`` (the demo-model tree, once per session), ``models`` (the tiny
DiT, VAE and text encoder loaded from it, per module), ``wan_models`` (the same three as the
``WanModels`` bundle the DiT-sampling stages take), ``counter`` (a :class:`ForwardCounter` on
that DiT, per test), ``audio_encoder`` / ``audio_adapter_file`` (the demo tree's wav2vec2 and
InfiniteTalk adapter), ``timeline`` (31 frames at 25 fps in 4 clips of 9, for the stitcher),
``tiny_dit_diffusers`` / ``tiny_vae_file`` / ``tiny_te`` (tiny model files, for ``test_models_*``)
and ``sandbox`` (cwd and temp folder checked for stray files, for ``test_bad_inputs_*``).
Plain helpers (CPU runtime, tone generators, tiny-model loading, refiner inputs, and the shared
helpers of the stitcher, director, media and bad-input tests) are in ``tests/helpers.py``.
Slow tests carry ``@pytest.mark.slow`` (``-m "not slow"`` skips them).
"""

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


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Every test starts on one intra-op thread (set above), even if an earlier test changed it."""
    if torch.get_num_threads() != 1:
        torch.set_num_threads(1)


@pytest.fixture(scope="module")
def models(demo_models_dir):
    """``(dit, vae, text_encoder)``: the tiny demo models through the real loaders (one load per module)."""
    from tests.helpers import load_tiny_models

    return load_tiny_models(demo_models_dir)


@pytest.fixture(scope="module")
def wan_models(models):
    """``WanModels(dit, vae, text_encoder)`` of ``models`` (no image encoder): what the stages take."""
    from avatar_cascade.models.handle import WanModels

    return WanModels(*models)


@pytest.fixture()
def counter(models):
    """Counts forwards of the tiny DiT (``models[0]``) during one test: ``counter.take()``, ``counter.calls``."""
    from tests.helpers import ForwardCounter

    c = ForwardCounter(models[0].transformer)
    yield c
    c.close()


@pytest.fixture(scope="module")
def audio_encoder(demo_models_dir):
    """The demo tree's tiny wav2vec2 (hidden 32, 2 layers, the real 320x CNN), through the real loader."""
    from avatar_cascade.demo.models import AUDIO_ENCODER_FILE
    from avatar_cascade.models.audio_encoder import load_audio_encoder

    return load_audio_encoder(demo_models_dir / "audio_encoders" / AUDIO_ENCODER_FILE)


@pytest.fixture(scope="session")
def audio_adapter_file(demo_models_dir):
    """The demo tree's tiny InfiniteTalk-layout audio adapter (fits the tiny DiT)."""
    from avatar_cascade.demo.models import AUDIO_ADAPTER_FILE

    return demo_models_dir / "model_patches" / AUDIO_ADAPTER_FILE


@pytest.fixture()
def timeline():
    """1.23 s at 25 fps -> 31 frames; clips of 9 frames: 0-8, 8-16, 16-24, 24-32 (2 frames past the audio end).

    (``test_bad_inputs_nodes`` has its own ``timeline``: an Aligner output from a file.)"""
    from avatar_cascade.artefacts.timeline import plan_timeline

    tl = plan_timeline(19680, 16000, 25, clip_frames=9)
    assert tl.num_frames == 31 and tl.padded_frames == 33 and len(tl.clips) == 4
    return tl


# ----------------------------------------------------------------------------- model files (test_models_*)


@pytest.fixture(scope="module")
def tiny_dit_diffusers():
    """The tiny demo DiT's state dict (seed 0) in the diffusers layout (once per module)."""
    from avatar_cascade.demo.models import tiny_dit_state_dict
    from avatar_cascade.models import wan_dit as W

    return W.to_diffusers_layout(tiny_dit_state_dict(0))


@pytest.fixture(scope="module")
def tiny_vae_file(tmp_path_factory):
    """``(path, state_dict)``: the tiny demo VAE (seed 0) written in the original Wan layout (once per module)."""
    from avatar_cascade.demo.models import tiny_vae_state_dict
    from tests.helpers import save_safetensors as _save

    original = tiny_vae_state_dict(0)
    return _save(tmp_path_factory.mktemp("vae") / "vae.safetensors", original), original


@pytest.fixture(scope="module")
def tiny_te(tmp_path_factory):
    """``(text_encoder, state_dict)``: the tiny demo UMT5 (seed 0) written and loaded back (once per module)."""
    from avatar_cascade.demo.models import tiny_umt5_state_dict
    from avatar_cascade.models import text_encoder as T
    from tests.helpers import save_safetensors as _save

    sd = tiny_umt5_state_dict(0)
    path = _save(tmp_path_factory.mktemp("te") / "umt5.safetensors", sd)
    return T.load_text_encoder(path), sd


# ----------------------------------------------------------------------------- bad inputs (test_bad_inputs_*)


@pytest.fixture()
def sandbox(tmp_path, monkeypatch):
    """``tmp_path`` as cwd and temp folder; inputs written before the snapshot, out/ and work/ allowed."""
    import tempfile

    from tests.helpers import snapshot_files as _snapshot
    from tests.helpers import write_png, write_wav

    box = tmp_path / "box"
    for sub in ("inputs", "out", "work", "systmp"):
        (box / sub).mkdir(parents=True)
    monkeypatch.chdir(box)
    monkeypatch.setattr(tempfile, "tempdir", str(box / "systmp"))
    monkeypatch.setenv("AVATAR_CASCADE_OUTPUT", str(box / "out"))
    monkeypatch.setenv("AVATAR_CASCADE_MODELS", str(box / "models"))
    write_png(box / "inputs" / "face.png", 64, 64)
    write_wav(box / "inputs" / "speech.wav", 1.0)
    yield box
    # checked after the test has written its own inputs: compare with what the test made itself
    stray = {f for f in _snapshot(box) if not f.startswith(("inputs/", "out/", "work/", "models/"))}
    assert stray == set(), f"files written outside the output / work folders: {sorted(stray)}"

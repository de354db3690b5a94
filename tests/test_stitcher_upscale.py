"""Upscaling in the stitcher's stream: spandrel models from models/upscale_models (safetensors only), tiled
without seams, run on every frame (engine, node, CLI), then the resize to the output height."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from avatar_cascade.core.errors import InputError, ModelFileError
from avatar_cascade.media import probe_media
from avatar_cascade.models.upscale import load_upscale_model, resolve_upscale_model
from avatar_cascade.stages.stitcher.upscale import FrameScaler, output_size, upscale_tiled
from tests.helpers import STITCH_SIZE, clip_frames, demo_cli_args, marked_frame, models_folder_with
from tests.helpers import cpu_runtime as quiet_runtime
from tests.helpers import tone_track as speech


def write_tiny_upscaler(path: Path, arch: str = "esrgan", seed: int = 0) -> Path:
    """A random-weight spandrel architecture saved as safetensors: ESRGAN (RRDBNet, 8 filters, 1 block, x4)
    or Real-ESRGAN Compact (SRVGGNet, 8 features, 2 convs, x2)."""
    from safetensors.torch import save_file
    from spandrel.architectures.Compact import Compact
    from spandrel.architectures.ESRGAN import ESRGAN

    torch.manual_seed(seed)
    if arch == "esrgan":
        net = ESRGAN(num_filters=8, num_blocks=1, scale=4)
    else:
        net = Compact(num_feat=8, num_conv=2, upscale=2)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().clone().contiguous() for k, v in net.state_dict().items()}, str(path))
    return path


def stitch_up(clips, timeline, out, upscale_model, collect_frames: int = 0, **settings):
    """``stitch_clips`` of ``clips`` with the timeline's tone track, ``upscale_model`` and ``StitcherSettings``."""
    from avatar_cascade.stages.stitcher.settings import StitcherSettings
    from avatar_cascade.stages.stitcher.stitcher import stitch_clips

    return stitch_clips(
        clips, timeline, speech(timeline.num_samples), out, StitcherSettings(colour_match=0.0, **settings),
        quiet_runtime(), collect_frames=collect_frames, upscale_model=upscale_model,
    )  # fmt: skip


def textured(h: int, w: int, seed: int = 0) -> np.ndarray:
    g = torch.Generator().manual_seed(seed)
    small = torch.rand(1, 3, h // 4 + 1, w // 4 + 1, generator=g)
    img = torch.nn.functional.interpolate(small, size=(h, w), mode="bicubic", align_corners=False)[0]
    return (img.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


@pytest.fixture(scope="module")
def upscale_dir(tmp_path_factory) -> Path:
    models = tmp_path_factory.mktemp("models")
    write_tiny_upscaler(models / "upscale_models" / "tiny_esrgan_x4.safetensors", "esrgan")
    write_tiny_upscaler(models / "upscale_models" / "tiny_compact_x2.safetensors", "compact")
    return models


def _load(models: Path, name: str):
    return load_upscale_model(resolve_upscale_model(models, name))


def test_tiles_with_context_match_the_whole_frame(upscale_dir):
    """Compact with 2 convs sees 4 px around each pixel: 8 px of tile context makes tiles invisible."""
    model = _load(upscale_dir, "tiny_compact_x2.safetensors")
    frame = textured(40, 56)
    whole = upscale_tiled(model, frame, tile=1024)
    assert whole.shape == (80, 112, 3) and whole.std() > 5  # a real, non-constant model output
    assert np.abs(upscale_tiled(model, frame, tile=16, overlap=8).astype(int) - whole).max() <= 1
    seams = np.abs(upscale_tiled(model, frame, tile=16, overlap=0).astype(int) - whole).max()
    assert seams > 8  # the check can fail: tiles without context differ at their edges


def test_output_size_follows_the_aspect_ratio():
    assert output_size(480, 854, 1080) == (1080, 1920)
    assert output_size(480, 832, 1080) == (1080, 1872)
    assert output_size(720, 1280, 1080) == (1080, 1920)
    assert output_size(480, 832, None, scale=4) == (1920, 3328)
    assert FrameScaler((64, 64), None).identity


def test_stitcher_runs_the_model_on_every_frame_then_resizes(tmp_path, timeline, upscale_dir):
    model = _load(upscale_dir, "tiny_compact_x2.safetensors")  # 64 -> 128, then Lanczos to 160
    clips = (clip_frames(timeline, k) for k in range(len(timeline.clips)))
    out = tmp_path / "up.mp4"
    result = stitch_up(clips, timeline, out, model, collect_frames=100, output_height=160, upscale_tile=64)
    assert (result.height, result.width) == (160, 160) and result.frames.shape == (timeline.num_frames, 160, 160, 3)
    info = probe_media(out)
    assert (info["width"], info["height"], info["video_frames"]) == (160, 160, timeline.num_frames)
    scaler = FrameScaler((STITCH_SIZE, STITCH_SIZE), 160, model, tile=1024)
    for i in (0, 9, timeline.num_frames - 1):
        want = scaler(marked_frame(i))  # timeline frame i
        assert np.abs(result.frames[i].numpy().astype(int) - want).max() <= 1, i
    clips = (clip_frames(timeline, k) for k in range(len(timeline.clips)))
    plain = stitch_up(clips, timeline, tmp_path / "plain.mp4", None, collect_frames=100, output_height=160)
    diff = np.abs(plain.frames.numpy().astype(int) - result.frames.numpy()).mean()
    assert diff > 3  # the model ran, not only a resize (measured 7.3)


def test_upscale_model_files_are_checked(tmp_path, upscale_dir):
    from safetensors.torch import save_file

    with pytest.raises(ModelFileError, match="--upscale-model.*not found.*tiny_esrgan_x4"):
        resolve_upscale_model(upscale_dir, "missing.safetensors")
    with pytest.raises(ModelFileError, match="'..' is not allowed"):
        resolve_upscale_model(upscale_dir, "../upscale_models/tiny_esrgan_x4.safetensors")
    pth = tmp_path / "upscale_models" / "x4.pth"
    pth.parent.mkdir()
    pth.write_bytes(b"pickle")
    with pytest.raises(ModelFileError, match="only .safetensors"):
        load_upscale_model(resolve_upscale_model(tmp_path, "x4.pth"))
    save_file({"encoder.weight": torch.zeros(4, 4)}, str(tmp_path / "upscale_models" / "other.safetensors"))
    with pytest.raises(ModelFileError, match="no upscale-model architecture"):
        load_upscale_model(tmp_path / "upscale_models" / "other.safetensors", "upscale_model")


def test_something_that_is_not_an_upscale_model_is_refused(tmp_path, timeline):
    clips = (clip_frames(timeline, k) for k in range(len(timeline.clips)))
    with pytest.raises(InputError, match="upscale_model.*not an upscale model"):
        stitch_up(clips, timeline, tmp_path / "v.mp4", "x")
    assert not (tmp_path / "v.mp4").exists()


def test_stitcher_node_takes_an_upscale_model(tmp_path, timeline, upscale_dir, monkeypatch):
    """The node's UPSCALE_MODEL input: the spandrel descriptor ComfyUI's Load Upscale Model gives, here
    loaded by name from models/upscale_models with the pack's loader (same file, same class)."""
    from avatar_cascade.artefacts.aligned_audio import AlignedAudio
    from avatar_cascade.artefacts.clips import ClipRecord, Clips
    from avatar_cascade.core.cache import atomic_save_tensors
    from nodes import NODE_CLASS_MAPPINGS

    monkeypatch.setenv("AVATAR_CASCADE_OUTPUT", str(tmp_path / "output"))
    records = []
    for k, c in enumerate(timeline.clips):
        path = tmp_path / "clips" / f"clip_{k}.safetensors"
        atomic_save_tensors(path, {"frames": torch.from_numpy(clip_frames(timeline, k))})
        records.append(ClipRecord(k, path, c.num_frames, f"key{k}"))
    clips = Clips(records, STITCH_SIZE, STITCH_SIZE, keyframes=None)
    aligned = AlignedAudio(timeline, speech(timeline.num_samples))
    node = NODE_CLASS_MAPPINGS["AvatarCascadeClipStitcher"]
    assert node.INPUT_TYPES()["optional"]["upscale_model"][0] == "UPSCALE_MODEL"
    model = _load(upscale_dir, "tiny_compact_x2.safetensors")
    out = node().stitch(
        clips, aligned, "avatar_cascade/up", 20, max_image_frames=100, upscale_model=model, interpolate=2
    )
    _, path, images = out["result"]
    info = probe_media(path)
    assert (info["width"], info["height"]) == (2 * STITCH_SIZE, 2 * STITCH_SIZE)
    assert info["video_frames"] == 62 and info["fps"] == 50  # 31 frames at 25 fps, doubled
    assert images.shape == (62, 2 * STITCH_SIZE, 2 * STITCH_SIZE, 3)
    direct = FrameScaler((STITCH_SIZE, STITCH_SIZE), None, model)(clip_frames(timeline, 0)[0])
    assert np.abs(images[0].mul(255).round().numpy().astype(int) - direct).max() <= 1


# ----------------------------------------------------------------------------- the CLI


@pytest.fixture()
def cli_models(demo_models_dir, upscale_dir, tmp_path) -> Path:
    """The demo models plus this test's model folder (links), as an artist's ComfyUI models/ folder."""
    return models_folder_with(tmp_path, demo_models_dir, upscale_dir / "upscale_models")




def test_cli_flags_set_the_output_stage_and_resolve_the_model_by_name(cli_models, tmp_path, capsys):
    from avatar_cascade.cascade_models import extra_model_paths as _extra_model_paths
    from avatar_cascade.cli import main, run_config

    base = demo_cli_args(cli_models, tmp_path / "o.mp4")
    name = "tiny_esrgan_x4.safetensors"
    cfg = run_config([*base, "--interpolate", "2", "--output-height", "1080", "--upscale-model", name])
    assert (cfg.stitcher.interpolate, cfg.stitcher.output_height, cfg.upscale_model) == (2, 1080, name)
    assert _extra_model_paths(cfg)["upscale_model"] == (cli_models / "upscale_models" / name).resolve()
    assert run_config(base).stitcher.output_height is None and run_config(base).upscale_model is None
    assert main(["run", *base, "--upscale-model", "../vae/x.safetensors"]) == 2
    assert "--upscale-model" in capsys.readouterr().err
    assert main(["run", *base, "--interpolate", "7"]) == 2
    assert "--interpolate" in capsys.readouterr().err
    assert not (tmp_path / "o.mp4").exists()


# The tiny demo settings (cascade.demo_config) as flags, for a whole run through `python -m avatar_cascade run`.
TINY_RUN = [
    "--fps", "16", "--clip-frames", "17", "--width", "64", "--height", "64", "--blueprint-width", "32",
    "--blueprint-height", "32", "--blueprint-fps", "8", "--blueprint-window-frames", "17", "--steps", "4",
    "--refiner-batch-size", "2", "--stitcher-preset", "ultrafast",
]  # fmt: skip


@pytest.mark.slow  # the whole cascade on the tiny demo models, then a x4 model on every frame
def test_cli_run_upscales_and_doubles_the_frame_rate(cli_models, tmp_path):
    from fractions import Fraction

    from avatar_cascade.cli import main
    from avatar_cascade.media import load_audio, sample_audio_path

    out = tmp_path / "o.mp4"
    args = demo_cli_args(cli_models, out)
    flags = ["--upscale-model", "tiny_esrgan_x4.safetensors", "--interpolate", "2", "--output-height", "192"]
    assert main(["run", *args, *TINY_RUN, *flags]) == 0
    info = probe_media(out)
    assert (info["width"], info["height"], info["fps"]) == (192, 192, Fraction(32))
    src = load_audio(sample_audio_path())
    assert abs(Fraction(info["video_frames"], 32) - Fraction(src.num_samples, src.sample_rate)) < Fraction(1, 32)

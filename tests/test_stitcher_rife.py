"""The learned frame interpolator: RIFE 4.x IFNet from models/frame_interpolation (safetensors only), its key
layout against the released checkpoints, the reference inference semantics (timestep channel, padding,
scale list, ensemble), and RIFE in the stitcher's stream (engine, node, CLI)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from avatar_cascade.core.errors import InputError, ModelFileError
from avatar_cascade.media import probe_media
from avatar_cascade.models.files import strict_load
from avatar_cascade.models.rife import (
    IFNet,
    RifeConfig,
    config_from_keys,
    interpolate,
    load_rife,
    resolve_rife_model,
)
from tests.helpers import STITCH_SIZE, clip_frames, demo_cli_args, marked_frame, models_folder_with
from tests.helpers import cpu_runtime as quiet_runtime
from tests.helpers import tone_track as speech

TINY = RifeConfig(widths=(8, 8, 8, 8))


def reference_table(version: str) -> dict[str, tuple[int, ...]]:
    """Key -> shape of a released flownet, written out from the reference IFNet_HDv3 (Practical-RIFE 4.7 /
    4.17 as ComfyUI-Frame-Interpolation's ``vfi_models/rife/rife_arch.py`` builds it), not from this pack's
    module: ``block0 = IFBlock(7 + 8, c=192)``, ``block1..3 = IFBlock(8 + 4 + 8, c=128 / 96 / 64)`` for 4.7
    (``+ 16`` for 4.17); ``IFBlock.conv0 = Sequential(conv(in, c//2, 3, 2, 1), conv(c//2, c, 3, 2, 1))`` with
    ``conv = Sequential(Conv2d, LeakyReLU)``, ``convblock`` = 8 x ``ResConv(c)`` (``conv`` + ``beta [1, c, 1,
    1]``), ``lastconv = Sequential(ConvTranspose2d(c, 4 * 6, 4, 2, 1), PixelShuffle(2))``."""
    t: dict[str, tuple[int, ...]] = {}
    if version == "4.7":  # encode = Sequential(Conv2d(3, 16, 3, 2, 1), ConvTranspose2d(16, 4, 4, 2, 1))
        t |= {"encode.0.weight": (16, 3, 3, 3), "encode.0.bias": (16,)}
        t |= {"encode.1.weight": (16, 4, 4, 4), "encode.1.bias": (4,)}  # ConvTranspose2d: [in, out, k, k]
        feats = 8
    else:  # Head: cnn0 Conv2d(3, 32, 3, 2, 1), cnn1 / cnn2 Conv2d(32, 32, 3, 1, 1), cnn3 ConvTranspose2d(32, 8, ...)
        t |= {"encode.cnn0.weight": (32, 3, 3, 3), "encode.cnn0.bias": (32,)}
        t |= {"encode.cnn1.weight": (32, 32, 3, 3), "encode.cnn1.bias": (32,)}
        t |= {"encode.cnn2.weight": (32, 32, 3, 3), "encode.cnn2.bias": (32,)}
        t |= {"encode.cnn3.weight": (32, 8, 4, 4), "encode.cnn3.bias": (8,)}
        feats = 16
    ins = (7 + feats, 8 + 4 + feats, 8 + 4 + feats, 8 + 4 + feats)
    for i, (cin, c) in enumerate(zip(ins, (192, 128, 96, 64))):
        b = f"block{i}."
        t |= {b + "conv0.0.0.weight": (c // 2, cin, 3, 3), b + "conv0.0.0.bias": (c // 2,)}
        t |= {b + "conv0.1.0.weight": (c, c // 2, 3, 3), b + "conv0.1.0.bias": (c,)}
        for j in range(8):
            r = f"{b}convblock.{j}."
            t |= {r + "conv.weight": (c, c, 3, 3), r + "conv.bias": (c,), r + "beta": (1, c, 1, 1)}
        t |= {b + "lastconv.0.weight": (c, 24, 4, 4), b + "lastconv.0.bias": (24,)}
    return t


def write_rife(path: Path, config: RifeConfig = TINY, seed: int = 0, prefix: str = "") -> Path:
    """A random-weight IFNet of ``config`` saved as safetensors (keys as the released flownets)."""
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    net = IFNet(config)
    for name, p in net.named_parameters():  # random, but small enough that flows stay within the frame
        if name.endswith("beta"):
            continue
        p.data.normal_(0, 0.05)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({prefix + k: v.detach().clone().contiguous() for k, v in net.state_dict().items()}, str(path))
    return path


@pytest.fixture(scope="module")
def rife_dir(tmp_path_factory) -> Path:
    models = tmp_path_factory.mktemp("models")
    write_rife(models / "frame_interpolation" / "tiny_rife.safetensors")
    return models


def _frames(n: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    small = torch.rand(n, 3, h // 8 + 1, w // 8 + 1, generator=g)
    return torch.nn.functional.interpolate(small, size=(h, w), mode="bicubic", align_corners=False).clamp(0, 1)


# ----------------------------------------------------------------------------- the layout of the releases


@pytest.mark.parametrize("version", ["4.7", "4.17"])
def test_the_full_size_ifnet_has_the_released_key_layout_and_loads_strictly_on_meta(version):
    expected = reference_table(version)
    with torch.device("meta"):
        net = IFNet(RifeConfig(version=version))
    assert {k: tuple(v.shape) for k, v in net.state_dict().items()} == expected
    state = {k: torch.empty(s, device="meta") for k, s in expected.items()}
    assert config_from_keys(expected, "m", Path("rife.safetensors")) == RifeConfig(version=version)
    strict_load(net, state, "m", Path("rife.safetensors"), "RIFE")  # raises on any missing / extra / wrong key


def test_a_released_layout_file_with_the_module_prefix_loads(tmp_path):
    """Full-size 4.7 (rife47 / rife49: 5.3 M parameters, 21 MB) as the training code saves it (``module.``)."""
    path = write_rife(tmp_path / "rife49.safetensors", RifeConfig(), prefix="module.")
    net = load_rife(path)
    assert net.config == RifeConfig(version="4.7", widths=(192, 128, 96, 64)) and not net.training
    assert sum(p.numel() for p in net.parameters()) == sum(int(np.prod(s)) for s in reference_table("4.7").values())
    assert next(net.parameters()).device.type == "cpu"


def test_wrong_layouts_are_refused_naming_the_file_and_the_fix(tmp_path):
    from safetensors.torch import save_file

    table = reference_table("4.7")
    old = {k: torch.zeros(s) for k, s in table.items() if not k.startswith("encode.")}  # RIFE 4.6: no encoder
    save_file(old, str(tmp_path / "rife46.safetensors"))
    with pytest.raises(
        ModelFileError, match=r"model_name = 'rife46.safetensors'.*older RIFE.*Fix: .*frame_interpolation"
    ):
        load_rife(tmp_path / "rife46.safetensors", "model_name")
    new = {k: torch.zeros(s) for k, s in reference_table("4.17").items()}  # 4.26: the 4.17 head + a fifth block
    new |= {"block4.conv0.0.0.weight": torch.zeros(16, 28, 3, 3)}
    save_file(new, str(tmp_path / "rife426.safetensors"))
    with pytest.raises(ModelFileError, match="RIFE 4.26"):
        load_rife(tmp_path / "rife426.safetensors")
    cut = {k: torch.zeros(s) for k, s in table.items() if k != "block3.lastconv.0.bias"}
    save_file(cut, str(tmp_path / "cut.safetensors"))
    with pytest.raises(ModelFileError, match="1 missing weights.*block3.lastconv.0.bias"):
        load_rife(tmp_path / "cut.safetensors")
    save_file({"encoder.weight": torch.zeros(4, 4)}, str(tmp_path / "vae.safetensors"))
    with pytest.raises(ModelFileError, match="not a RIFE"):
        load_rife(tmp_path / "vae.safetensors")


def test_interpolator_files_resolve_inside_the_folder_only(tmp_path, rife_dir):
    assert (
        resolve_rife_model(rife_dir, "tiny_rife.safetensors")
        == (rife_dir / "frame_interpolation" / "tiny_rife.safetensors").resolve()
    )
    with pytest.raises(ModelFileError, match="--interpolator-model.*not found.*tiny_rife"):
        resolve_rife_model(rife_dir, "rife49.safetensors")
    with pytest.raises(ModelFileError, match="'..' is not allowed"):
        resolve_rife_model(rife_dir, "../frame_interpolation/tiny_rife.safetensors")
    pth = tmp_path / "frame_interpolation" / "rife49.pth"
    pth.parent.mkdir()
    pth.write_bytes(b"pickle")
    with pytest.raises(ModelFileError, match="only .safetensors"):
        load_rife(resolve_rife_model(tmp_path, "rife49.pth"))


# ----------------------------------------------------------------------------- inference semantics


def _translation_net(flow0: tuple[float, float], flow1: tuple[float, float], scale: float) -> IFNet:
    """An IFNet whose only non-zero weights are block 0's output bias: a constant flow (``flow0`` to frame 0,
    ``flow1`` to frame 1, pixels) and mask logit 0 (equal weights), whatever the frames. Block 0 runs at
    ``scale_list[0] = 8 / scale`` and multiplies its flow by it, so the bias is the flow divided by that."""
    net = IFNet(TINY).eval()
    for p in net.parameters():
        p.data.zero_()
    s0 = 8 / scale
    bias = net.block0.lastconv[0].bias.data  # PixelShuffle(2): output channel c = input channels 4c..4c+3
    for c, v in enumerate((*flow0, *flow1)):
        bias[4 * c : 4 * c + 4] = v / s0
    return net


@pytest.mark.parametrize("scale", [1.0, 0.5])
def test_flows_are_pixels_to_each_frame_and_the_warps_are_backward(scale):
    """A pattern moving (8, 4) px a frame; flows (-4, -2) to frame 0 and (4, 2) to frame 1 give the middle
    frame exactly (the reference's flow units, warp direction and block scaling)."""
    base = _frames(1, 96, 160, seed=3)
    img0 = base[..., 8:88, 16:144]
    img1 = base[..., 4:84, 8:136]  # img1(x) = img0(x - (8, 4))
    truth = base[..., 6:86, 12:140]  # the pattern half-way
    net = _translation_net((-4.0, -2.0), (4.0, 2.0), scale)
    mid = interpolate(net, img0, img1, 0.5, scale=scale)
    inner = (slice(None), slice(None), slice(8, -8), slice(8, -8))  # off the replicated borders
    assert (mid - truth)[inner].abs().max() < 1e-4
    blend = (img0 + img1) / 2
    assert (blend - truth)[inner].abs().mean() > 0.01  # the check can fail: the blend is not the truth


def test_zero_flow_fuses_the_frames_by_the_sigmoid_of_the_mask():
    """Mask logit 0: an equal blend; a large positive logit: frame 0 (``sigmoid(mask)`` weighs warped frame 0)."""
    img0, img1 = _frames(1, 64, 64, 1), _frames(1, 64, 64, 2)
    net = _translation_net((0.0, 0.0), (0.0, 0.0), 1.0)
    assert (interpolate(net, img0, img1, 0.3) - (img0 + img1) / 2).abs().max() < 1e-5
    net.block3.lastconv[0].bias.data[16:20] = 30.0  # channel 4 after PixelShuffle: the last block's mask logit
    assert (interpolate(net, img0, img1, 0.3) - img0).abs().max() < 1e-5


def test_the_timestep_is_an_input_and_batched_timesteps_equal_single_runs():
    torch.manual_seed(0)
    net = IFNet(TINY).eval()
    for p in net.parameters():
        p.data.normal_(0, 0.1)
    a, b = _frames(1, 64, 96, 4), _frames(1, 64, 96, 5)
    one = [interpolate(net, a, b, t) for t in (0.25, 0.5, 0.75)]
    assert (one[0] - one[1]).abs().mean() > 1e-3 and (one[1] - one[2]).abs().mean() > 1e-3
    ts = torch.tensor([0.25, 0.5, 0.75]).view(3, 1, 1, 1)
    batch = interpolate(net, a.expand(3, -1, -1, -1), b.expand(3, -1, -1, -1), ts)
    assert (batch - torch.cat(one)).abs().max() < 1e-5


def test_frames_are_padded_to_a_multiple_of_64_at_the_bottom_right_and_cropped_back():
    torch.manual_seed(1)
    net = IFNet(TINY).eval()
    for p in net.parameters():
        p.data.normal_(0, 0.1)
    a, b = _frames(1, 70, 90, 6), _frames(1, 70, 90, 7)
    out = interpolate(net, a, b, 0.5)
    assert out.shape == (1, 3, 70, 90)
    ph, pw = ((70 - 1) // 64 + 1) * 64, ((90 - 1) // 64 + 1) * 64  # the reference's rule: 128 x 128
    pad = (0, pw - 90, 0, ph - 70)
    with torch.inference_mode():
        ref = net(torch.nn.functional.pad(a, pad), torch.nn.functional.pad(b, pad), 0.5, (8, 4, 2, 1))
    assert (out - ref[..., :70, :90]).abs().max() < 1e-6


def test_the_ensemble_is_symmetric_in_the_two_frames():
    """With ``ensemble`` every block also runs on the swapped pair at 1 - t and averages (flows swapped, mask
    negated), so swapping the frames and t -> 1 - t gives the same frame; without it, it does not."""
    torch.manual_seed(2)
    net = IFNet(TINY).eval()
    for p in net.parameters():
        p.data.normal_(0, 0.1)
    a, b = _frames(1, 64, 64, 8), _frames(1, 64, 64, 9)
    e1, e2 = interpolate(net, a, b, 0.3, ensemble=True), interpolate(net, b, a, 0.7, ensemble=True)
    assert (e1 - e2).abs().max() < 1e-5
    p1, p2 = interpolate(net, a, b, 0.3), interpolate(net, b, a, 0.7)
    assert (p1 - p2).abs().max() > 1e-3
    assert (e1 - p1).abs().mean() > 1e-4  # the ensemble changed the result


# ----------------------------------------------------------------------------- in the stitcher's stream


def _stitch(clips, timeline, out, model, collect_frames: int = 0, **settings):
    from avatar_cascade.stages.stitcher.settings import StitcherSettings
    from avatar_cascade.stages.stitcher.stitcher import stitch_clips

    return stitch_clips(
        clips, timeline, speech(timeline.num_samples), out, StitcherSettings(colour_match=0.0, **settings),
        quiet_runtime(), collect_frames=collect_frames, interpolator_model=model,
    )  # fmt: skip


@pytest.mark.parametrize("factor", [2, 3])
def test_rife_makes_the_in_between_frames_of_the_stream(tmp_path, timeline, rife_dir, factor):
    model = load_rife(resolve_rife_model(rife_dir, "tiny_rife.safetensors"))
    clips = (clip_frames(timeline, k) for k in range(len(timeline.clips)))
    out = tmp_path / "rife.mp4"
    result = _stitch(clips, timeline, out, model, collect_frames=200, interpolate=factor, interpolation="rife")
    info = probe_media(out)
    n = factor * (timeline.num_frames - 1) + 1  # 31 frames at 25 fps, every gap filled
    assert info["fps"] == 25 * factor and info["video_frames"] == result.frames.shape[0] >= n
    frames = result.frames.numpy()
    for i in (0, 7, 30):
        assert np.array_equal(frames[factor * i], marked_frame(i))  # rendered frames pass untouched
    gaps = []
    for i in (0, 8, 15, 29):
        a, b = (torch.from_numpy(marked_frame(j)).permute(2, 0, 1)[None].float() / 255 for j in (i, i + 1))
        for s in range(1, factor):
            want = (interpolate(model, a, b, s / factor)[0].permute(1, 2, 0) * 255).round().numpy()
            assert np.abs(frames[factor * i + s].astype(int) - want).max() <= 1, (i, s)
            blend = marked_frame(i).astype(int) * (1 - s / factor) + marked_frame(i + 1) * (s / factor)
            gaps.append(np.abs(frames[factor * i + s] - blend).mean())
    assert max(gaps) > 2  # RIFE ran (random weights: not the blend)
    assert np.array_equal(frames[-1], frames[n - 1])  # the last frame held for the audio


def test_rife_without_weights_is_a_clear_error(tmp_path, timeline):
    clips = (clip_frames(timeline, k) for k in range(len(timeline.clips)))
    with pytest.raises(InputError, match="interpolator_model.*needs RIFE weights.*frame_interpolation.*'flow'"):
        _stitch(clips, timeline, tmp_path / "v.mp4", None, interpolate=2, interpolation="rife")
    with pytest.raises(InputError, match="interpolator_model.*not a RIFE"):
        _stitch(iter([]), timeline, tmp_path / "v.mp4", "x", interpolate=2, interpolation="rife")
    assert not (tmp_path / "v.mp4").exists()


def test_loader_and_stitcher_nodes_run_rife(tmp_path, timeline, rife_dir, monkeypatch):
    from avatar_cascade.artefacts.aligned_audio import AlignedAudio
    from avatar_cascade.artefacts.clips import ClipRecord, Clips
    from avatar_cascade.core.cache import atomic_save_tensors
    from nodes import NODE_CLASS_MAPPINGS

    monkeypatch.setenv("AVATAR_CASCADE_MODELS", str(rife_dir))
    monkeypatch.setenv("AVATAR_CASCADE_OUTPUT", str(tmp_path / "output"))
    loader = NODE_CLASS_MAPPINGS["AvatarCascadeFrameInterpolatorLoader"]
    assert loader.INPUT_TYPES()["required"]["model_name"][0] == ["tiny_rife.safetensors"]
    (model,) = loader().load("tiny_rife.safetensors")
    with pytest.raises(ModelFileError, match="model_name.*'..' is not allowed"):
        loader().load("../frame_interpolation/tiny_rife.safetensors")
    records = []
    for k, c in enumerate(timeline.clips):
        path = tmp_path / "clips" / f"clip_{k}.safetensors"
        atomic_save_tensors(path, {"frames": torch.from_numpy(clip_frames(timeline, k))})
        records.append(ClipRecord(k, path, c.num_frames, f"key{k}"))
    clips = Clips(records, STITCH_SIZE, STITCH_SIZE, keyframes=None)
    aligned = AlignedAudio(timeline, speech(timeline.num_samples))
    node = NODE_CLASS_MAPPINGS["AvatarCascadeClipStitcher"]
    assert node.INPUT_TYPES()["optional"]["interpolator_model"][0] == loader.RETURN_TYPES[0]
    out = node().stitch(
        clips, aligned, "avatar_cascade/rife", 20, max_image_frames=100, interpolator_model=model,
        interpolate=2, interpolation="rife",
    )  # fmt: skip
    _, path, images = out["result"]
    assert probe_media(path)["video_frames"] == 62 and images.shape[0] == 62
    a, b = (torch.from_numpy(marked_frame(j)).permute(2, 0, 1)[None].float() / 255 for j in (3, 4))
    want = interpolate(model, a, b, 0.5)[0].permute(1, 2, 0)
    assert (images[7] - want).abs().max() <= 1.5 / 255


# ----------------------------------------------------------------------------- the CLI


@pytest.fixture()
def cli_models(demo_models_dir, rife_dir, tmp_path) -> Path:
    """The demo models plus this test's model folder (links), as an artist's ComfyUI models/ folder."""
    return models_folder_with(tmp_path, demo_models_dir, rife_dir / "frame_interpolation")




def test_cli_flags_choose_rife_and_resolve_its_weights_by_name(cli_models, tmp_path, capsys):
    from avatar_cascade.cascade_models import extra_model_paths as _extra_model_paths
    from avatar_cascade.cli import main, run_config

    base = demo_cli_args(cli_models, tmp_path / "o.mp4")
    flags = ["--interpolate", "2", "--interpolation", "rife", "--interpolator-model", "tiny_rife.safetensors"]
    cfg = run_config([*base, *flags, "--stitcher-interpolator-scale", "0.5", "--stitcher-interpolator-ensemble"])
    st = cfg.stitcher
    assert (st.interpolation, st.interpolator_scale, st.interpolator_ensemble) == ("rife", 0.5, True)
    paths = _extra_model_paths(cfg)
    assert paths["interpolator_model"] == (cli_models / "frame_interpolation" / "tiny_rife.safetensors").resolve()
    assert main(["run", *base, "--interpolate", "2", "--interpolation", "rife"]) == 2
    assert "--interpolator-model" in capsys.readouterr().err
    assert main(["run", *base, *flags[:4], "--interpolator-model", "../vae/x.safetensors"]) == 2
    assert "--interpolator-model" in capsys.readouterr().err
    assert not (tmp_path / "o.mp4").exists()


@pytest.mark.slow  # the whole tiny cascade, then RIFE between every pair of frames
def test_cli_run_doubles_the_frame_rate_with_rife(cli_models, tmp_path):
    from avatar_cascade.cli import main
    from avatar_cascade.media import load_audio, sample_audio_path
    from tests.test_stitcher_upscale import TINY_RUN

    out = tmp_path / "o.mp4"
    flags = ["--interpolate", "2", "--interpolation", "rife", "--interpolator-model", "tiny_rife.safetensors"]
    assert main(["run", *demo_cli_args(cli_models, out), *TINY_RUN, *flags]) == 0
    info = probe_media(out)
    assert info["fps"] == Fraction(32)
    src = load_audio(sample_audio_path())
    assert abs(Fraction(info["video_frames"], 32) - Fraction(src.num_samples, src.sample_rate)) < Fraction(1, 32)

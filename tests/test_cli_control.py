"""Guided refinement from the command line: ``run --refiner-dit VACE --control VIDEO --pose-json JSON`` renders
the sub-clips with the tiny Wan VACE under the control (a real video file at its own rate plus skeletons from
keypoint JSON), keys exact; sketch keys; bad control flags name the flag."""

from __future__ import annotations

import json
import shutil
from fractions import Fraction

import numpy as np
import pytest
import torch

from avatar_cascade.cli import main
from avatar_cascade.demo.models import AUDIO_ADAPTER_FILE, AUDIO_ENCODER_FILE, DIT_FILE, VACE_DIT_FILE
from avatar_cascade.demo.tiny_vace import tiny_vace_state_dict
from avatar_cascade.media import probe_media, sample_audio_path, sample_image_path
from tests.helpers import save_safetensors

RUN = [
    "--fps", "16", "--clip-frames", "17", "--width", "64", "--height", "64", "--blueprint-width", "32",
    "--blueprint-height", "32", "--blueprint-fps", "8", "--blueprint-window-frames", "17", "--steps", "2",
    "--refiner-batch-size", "2", "--stitcher-preset", "ultrafast",
]  # fmt: skip


@pytest.fixture(scope="module")
def vace_models(demo_models_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("vace_models")
    shutil.copytree(demo_models_dir, root, dirs_exist_ok=True)
    save_safetensors(root / "diffusion_models" / VACE_DIT_FILE, tiny_vace_state_dict(0))
    return root


def _args(models, out, *extra):
    return [
        "run", "--image", str(sample_image_path()), "--audio", str(sample_audio_path()), "--prompt", "a person talks",
        "--models", str(models), "--out", str(out), "--dit", DIT_FILE, "--audio-encoder", AUDIO_ENCODER_FILE,
        "--audio-adapter", AUDIO_ADAPTER_FILE, *RUN, *extra,
    ]  # fmt: skip


def _pose_json(path, frames=6):
    out = []
    for i in range(frames):
        body = [(32 + 6 * np.cos(k + i), 10 + 3 * k) for k in range(18)]
        flat = [v for x, y in body for v in (float(x), float(y), 0.9)]
        out.append({"people": [{"pose_keypoints_2d": flat}], "canvas_width": 64, "canvas_height": 64})
    path.write_text(json.dumps(out))
    return path


def _control_video(path, frames=20):
    from avatar_cascade.media import VideoWriter

    g = torch.Generator().manual_seed(4)
    with VideoWriter(path, Fraction(8), 64, 64) as w:  # 8 fps: resampled to the 16 fps output
        w.write(torch.randint(0, 256, (frames, 64, 64, 3), generator=g, dtype=torch.uint8))
    return path


@pytest.mark.slow  # the whole cascade on the tiny demo models with the tiny VACE refiner
def test_cli_run_refines_with_the_tiny_vace_under_a_control_video(vace_models, tmp_path):
    from PIL import Image

    from avatar_cascade.core.cache import load_tensors

    out = tmp_path / "guided.mp4"
    video, pose = _control_video(tmp_path / "depth.mp4"), _pose_json(tmp_path / "pose.json", frames=20)
    flags = ["--refiner-dit", VACE_DIT_FILE, "--control", str(video), "--pose-json", str(pose)]
    flags += ["--control-strength", "5", "--exact-keys"]
    assert main(_args(vace_models, out, *flags)) == 0
    info = probe_media(out)
    assert info["video_frames"] > 0 and info["audio_samples"] > 0
    wd = tmp_path / "guided_work"
    manifest = json.loads((wd / "clips" / "refiner_manifest.json").read_text())
    for row in manifest["clips"]:  # keys exact: the keyframes' pixels at each clip's ends
        frames = load_tensors(wd / "clips" / row["file"])["frames"]
        a = np.asarray(Image.open(wd / "keyframes" / f"keyframe_{row['index']:05d}.png"))
        z = np.asarray(Image.open(wd / "keyframes" / f"keyframe_{row['index'] + 1:05d}.png"))
        assert np.array_equal(frames[0].numpy(), a) and np.array_equal(frames[-1].numpy(), z)
    # the same run without the control renders other clips (the control reaches the VACE DiT)
    plain = tmp_path / "plain.mp4"
    assert main(_args(vace_models, plain, "--refiner-dit", VACE_DIT_FILE, "--exact-keys")) == 0
    plain_rows = json.loads((tmp_path / "plain_work" / "clips" / "refiner_manifest.json").read_text())["clips"]
    diffs = []
    for a, b in zip(manifest["clips"], plain_rows):
        fa = load_tensors(wd / "clips" / a["file"])["frames"].float()
        fb = load_tensors(tmp_path / "plain_work" / "clips" / b["file"])["frames"].float()
        diffs.append(float((fa - fb).abs().mean()))
    # 20 control frames at 8 fps cover output frames 0-39: the clips rendering any of them are guided, the
    # later clips render exactly as without the control (same cache keys, same frames)
    clips = json.loads((wd / "timeline.json").read_text())["clips"]
    covered = [c["frame_start"] - c.get("overlap_before", 0) <= 39 for c in clips]
    assert covered[0] and not covered[-1]
    assert [a["key"] != b["key"] for a, b in zip(manifest["clips"], plain_rows)] == covered
    # (a clip's frames do not depend on its batch neighbours beyond float rounding of the batched forward)
    msg = f"diffs {[round(d, 4) for d in diffs]}, covered {covered}"
    # guided clips change by far more than the float noise of unguided ones (how much depends on how many of
    # its frames the control reaches, which depends on where the aligner put the seams)
    assert diffs[0] > 1.0 and all(d > 0.2 for d, cov in zip(diffs, covered) if cov), msg
    assert all(d < 0.05 for d, cov in zip(diffs, covered) if not cov), msg


@pytest.mark.parametrize(
    "extra, flag",
    [
        (["--control", "missing.mp4"], "--control"),
        (["--pose-json", "nope.json"], "--pose-json"),
        (["--sketch", "drawing.png"], "--sketch"),
        (["--refiner-dit", "../vae/x.safetensors"], "--refiner-dit"),
    ],
)
def test_bad_control_flags_name_the_flag(vace_models, tmp_path, capsys, extra, flag):
    extra = [str(tmp_path / x) if x.endswith((".mp4", ".json")) else x for x in extra]
    code = main(_args(vace_models, tmp_path / "o.mp4", "--refiner-dit", VACE_DIT_FILE, *extra))
    assert code == 2
    assert flag in capsys.readouterr().err
    assert not (tmp_path / "o.mp4").exists()


def test_control_without_a_vace_refiner_is_refused_before_rendering(vace_models, tmp_path, capsys):
    code = main(_args(vace_models, tmp_path / "o.mp4", "--control", str(_control_video(tmp_path / "c.mp4", 3))))
    assert code == 2
    assert "needs a Wan VACE DiT" in capsys.readouterr().err


@pytest.mark.slow  # two cascades on the tiny demo models with the tiny VACE as the only DiT
def test_cli_control_guides_the_blueprint_and_runs_with_a_vace_reference(vace_models, tmp_path):
    from avatar_cascade.core.cache import load_tensors

    video = _control_video(tmp_path / "depth.mp4", frames=40)
    flags = ["--dit", VACE_DIT_FILE, "--control", str(video), "--control-strength", "5"]
    runs = {}
    for name, extra in (("plain", []), ("guided", ["--control-blueprint", "--vace-reference"])):
        assert main(_args(vace_models, tmp_path / f"{name}.mp4", *flags, *extra)) == 0
        wd = tmp_path / f"{name}_work"
        runs[name] = (wd, json.loads((wd / "clips" / "refiner_manifest.json").read_text())["clips"])
    (wa, ra), (wb, rb) = runs["plain"], runs["guided"]
    from avatar_cascade.media.guidance.video_in import read_control_video

    stores = [{p.name for p in (w / "blueprint").iterdir() if p.is_dir()} for w in (wa, wb)]
    assert stores[0] and stores[1] and not stores[0] & stores[1]  # the blueprint's key changed with its control
    pa, pb = (read_control_video(w / "blueprint.mp4", "blueprint")[0].float() for w in (wa, wb))
    assert pa.shape == pb.shape and (pa - pb).abs().mean() > 1.0  # and so did its frames
    for x, y in zip(ra, rb):  # new keyframes and the reference frame: new keys, same frame counts
        assert x["key"] != y["key"]
        assert load_tensors(wa / "clips" / x["file"])["frames"].shape == load_tensors(wb / "clips" / y["file"])[
            "frames"].shape  # fmt: skip


@pytest.mark.parametrize(
    "extra, flag",
    [
        (["--control-blueprint"], "--control-blueprint"),  # no control input
        (["--control", "c.mp4", "--control-blueprint", "--refiner-dit", VACE_DIT_FILE], "--control-blueprint"),
        (["--vace-reference"], "--vace-reference"),  # the refiner's DiT is not VACE
    ],
)
def test_blueprint_control_and_vace_reference_flags_are_refused_before_rendering(
    vace_models, tmp_path, capsys, extra, flag
):
    extra = [str(_control_video(tmp_path / x, 3)) if x.endswith(".mp4") else x for x in extra]
    code = main(_args(vace_models, tmp_path / "o.mp4", *extra))
    assert code == 2
    err = capsys.readouterr().err
    assert flag in err and (flag != "--vace-reference" or "needs a Wan VACE DiT" in err)
    assert not (tmp_path / "o.mp4").exists()

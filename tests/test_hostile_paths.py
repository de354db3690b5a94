"""Adversarial suite: careless output and work paths.

Expected outcome of every case: the CLI refuses before any work with one clear line (the input, the
value, the fix), exit status 2, no traceback, and every input file keeps its exact bytes (sha256).
Documented handling: ``.webm`` is written as VP9 + Opus (WebM cannot hold H.264).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from tests.hostile_helpers import models_tree, one_line_error, run_args, sha256


@pytest.fixture()
def tree(demo_models_dir, tmp_path):
    return models_tree(demo_models_dir, tmp_path / "models")


def talking_video(path):
    """An mp4 with a video and an audio track (what --audio accepts)."""
    from avatar_cascade.media import AudioTrack, VideoWriter

    t = torch.arange(16000) / 16000
    track = AudioTrack((0.3 * torch.sin(2 * torch.pi * 220 * t))[None].float(), 16000)
    with VideoWriter(path, 16, 32, 32, audio=track) as vw:
        vw.write(np.zeros((16, 32, 32, 3), np.uint8))
    return path


def cli(capsys, args: list[str]) -> tuple[int, str]:
    from avatar_cascade.cli import main

    rc = main(args)
    return rc, capsys.readouterr().err


def refused(capsys, args, *names) -> str:
    """Run the CLI in-process; assert exit 2, one line naming ``names``; return the line."""
    rc, err = cli(capsys, args)
    assert rc == 2, err
    line = one_line_error(err)
    for n in names:
        assert n in line, line
    assert "Fix:" in line
    return line


def _inputs(tmp_path):
    from avatar_cascade.media import sample_image_path
    from tests.helpers import write_png

    inp = tmp_path / "inputs"
    inp.mkdir()
    image = write_png(inp / "face.png", 64, 64)
    assert sample_image_path().is_file()
    return image, talking_video(inp / "talk.mp4")


@pytest.mark.parametrize("how", ["same-path", "symlink", "dotdot", "hard-link"])
def test_out_that_is_the_audio_input_is_refused_and_the_audio_is_untouched(how, tree, tmp_path, capsys):
    """--out = --audio (a video with sound): refused before any work, the recording byte-identical."""
    image, audio = _inputs(tmp_path)
    before = sha256(audio)
    out = {
        "same-path": audio,
        "symlink": tmp_path / "link.mp4",
        "dotdot": tmp_path / "inputs" / ".." / "inputs" / "talk.mp4",
        "hard-link": tmp_path / "hard.mp4",
    }[how]
    if how == "symlink":
        out.symlink_to(audio)
    if how == "hard-link":
        os.link(audio, out)
    work = tmp_path / "work"
    refused(capsys, [*run_args(tree, out, image, audio), "--workdir", str(work)], "--out", "--audio")
    assert sha256(audio) == before
    assert not work.exists()  # nothing was written: checked before any work


def test_an_image_input_named_mp4_is_not_overwritten(tree, tmp_path, capsys):
    """A PNG saved as 'face.mp4' given as --image and as --out: refused, bytes unchanged."""
    from tests.helpers import write_png

    image = write_png(tmp_path / "face.png", 64, 64).rename(tmp_path / "face.mp4")
    before = sha256(image)
    refused(capsys, run_args(tree, image, image), "--out", "--image")
    assert sha256(image) == before


def test_out_onto_a_model_file_or_into_a_model_folder_is_refused(tree, tmp_path, capsys):
    from avatar_cascade.demo.models import DIT_FILE

    dit = tree / "diffusion_models" / DIT_FILE
    before = sha256(dit)
    fake = tree / "diffusion_models" / "x.mp4"
    os.link(dit.resolve(), fake)  # a hard link to the DiT's bytes
    refused(capsys, run_args(tree, fake), "--out", "--dit")
    assert sha256(dit) == before


@pytest.mark.parametrize("where", ["input-folder", "models-folder", "an-input-file"])
def test_a_work_folder_overlapping_inputs_is_refused(where, tree, tmp_path, capsys):
    """Work folders are written and pruned: one holding (or being) an input or model is refused."""
    image, audio = _inputs(tmp_path)
    work = {"input-folder": tmp_path / "inputs", "models-folder": tree, "an-input-file": image}[where]
    line = refused(capsys, [*run_args(tree, tmp_path / "o.mp4", image, audio), "--workdir", str(work)], "--workdir")
    assert ("is a file" in line) if where == "an-input-file" else ("overlaps" in line)
    assert not (tmp_path / "o.mp4").exists()


@pytest.mark.parametrize(
    "kind, problem",
    [("dir", "existing folder"), ("ext", "unknown extension"), ("parent-file", "is a file"), ("no-ext", "none")],
)
def test_out_problems_are_caught_before_the_render(kind, problem, tree, tmp_path, capsys):
    """--out an existing folder (even named x.mp4), an unknown extension, below a file: refused up front."""
    out = {
        "dir": tmp_path / "x.mp4",
        "ext": tmp_path / "x.avi",
        "parent-file": tmp_path / "afile" / "x.mp4",
        "no-ext": tmp_path / "video",
    }[kind]
    if kind == "dir":
        out.mkdir()
    if kind == "parent-file":
        (tmp_path / "afile").write_text("x")
    line = refused(capsys, [*run_args(tree, out), "--workdir", str(tmp_path / "w")], "--out")
    assert problem in line
    assert not (tmp_path / "w").exists()  # no stage ran


def test_a_work_folder_that_is_a_file_is_refused(tree, tmp_path, capsys):
    (tmp_path / "work").write_text("not a folder")
    line = refused(capsys, [*run_args(tree, tmp_path / "o.mp4"), "--workdir", str(tmp_path / "work")], "--workdir")
    assert "is a file" in line


def test_a_read_only_output_folder_is_refused_up_front(tree, tmp_path, capsys, monkeypatch):
    """Read-only folders (simulated through os.access: root ignores chmod): one line before any work."""
    ro = tmp_path / "ro"
    ro.mkdir()
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if str(p) == str(ro) else real(p, mode, **kw))
    line = refused(capsys, [*run_args(tree, ro / "o.mp4"), "--workdir", str(tmp_path / "w")], "--out")
    assert "read-only" in line
    line = refused(capsys, [*run_args(tree, tmp_path / "o.mp4"), "--workdir", str(ro / "w")], "--workdir")
    assert "read-only" in line


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into chmod 555 folders")
def test_a_really_read_only_output_folder_is_refused(tree, tmp_path, capsys):  # pragma: no cover - non-root CI
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        refused(capsys, run_args(tree, ro / "o.mp4"), "--out", "read-only")
    finally:
        ro.chmod(0o755)


def test_an_unknown_codec_for_the_container_is_refused_before_the_render(tree, tmp_path, capsys):
    line = refused(
        capsys,
        [*run_args(tree, tmp_path / "o.mp4"), "--stitcher-codec", "libvpx", "--workdir", str(tmp_path / "w")],
        "--stitcher-codec",
        "libvpx",
    )
    assert "mp4" in line
    assert not (tmp_path / "w").exists()


def test_webm_output_is_written_as_vp9_and_opus(tmp_path, timeline):
    """Documented handling: every offered extension works; .webm with the default h264 becomes VP9 + Opus."""
    from avatar_cascade.media import probe_media
    from avatar_cascade.media.output import VIDEO_SUFFIXES
    from avatar_cascade.stages.stitcher.settings import StitcherSettings
    from tests.helpers import clip_frames, cpu_runtime, stitch, tone_track

    assert ".webm" in VIDEO_SUFFIXES
    clips = [clip_frames(timeline, k) for k in range(len(timeline.clips))]
    out = tmp_path / "o.webm"
    stitch(clips, timeline, tone_track(timeline.num_samples), out, cpu_runtime(), colour_match=0.0)
    codecs = {s["type"]: s["codec"] for s in probe_media(out)["streams"]}
    assert codecs == {"video": "vp9", "audio": "opus"}
    assert StitcherSettings().codec == "h264"  # the default: nothing to set for .webm


@pytest.mark.parametrize("suffix", [".mp4", ".m4v", ".mov", ".mkv"])
def test_every_other_offered_extension_passes_the_check(suffix, tmp_path):
    from avatar_cascade.media.output import check_video_output

    assert check_video_output(tmp_path / f"o{suffix}", "h264") == ("libx264", "aac")


def test_a_work_folder_named_like_the_output_is_refused_before_the_render(tree, tmp_path, capsys):
    """--workdir = --out (neither exists yet): refused up front, not after the render when the mp4 meets a folder."""
    out = tmp_path / "o.mp4"
    line = refused(capsys, [*run_args(tree, out), "--workdir", str(out)], "--workdir", "same path as --out")
    assert "o.mp4" in line and not out.exists()


@pytest.mark.parametrize("kind", ["missing", "a-file"])
def test_a_models_argument_that_is_no_folder_says_so(kind, tmp_path, capsys):
    models = tmp_path / "models"
    if kind == "a-file":
        models.write_text("x")
    line = refused(capsys, run_args(models, tmp_path / "o.mp4"), "--models")
    assert ("does not exist" if kind == "missing" else "is a file") in line

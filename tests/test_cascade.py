"""The whole cascade through the CLI on tiny demo models: output, intermediates, resume, clear errors."""

import json
from fractions import Fraction
from pathlib import Path

import pytest

from avatar_cascade.cli import main


def _clip_rows(demo_run) -> list[dict]:
    """The refiner's manifest of the demo's clip cache: one row per clip (``reused`` is ``ClipRecord.cached``)."""
    wd = demo_run.with_name(demo_run.stem + "_work")
    return json.loads((wd / "clips" / "refiner_manifest.json").read_text())["clips"]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "demo.mp4"
    assert main(["demo", "--out", str(out)]) == 0
    return out


@pytest.mark.slow  # the demo run (module fixture)
def test_demo_writes_one_video_and_one_audio_stream_of_equal_duration(demo_run):
    from avatar_cascade.media import load_audio, probe_media, sample_audio_path

    info = probe_media(demo_run)
    kinds = [s["type"] for s in info["streams"]]
    assert kinds.count("video") == 1 and kinds.count("audio") == 1
    src = load_audio(sample_audio_path())
    video_s = Fraction(info["video_frames"]) / Fraction(info["fps"])
    assert abs(video_s - Fraction(src.num_samples, src.sample_rate)) < Fraction(1, 16)  # within one frame at 16 fps
    assert abs(info["audio_samples"] / info["sample_rate"] - src.duration_s) < 1 / 16


@pytest.mark.slow  # the demo run (module fixture)
def test_demo_writes_its_intermediates(demo_run):
    wd = demo_run.with_name(demo_run.stem + "_work")
    for name in ("timeline.json", "storyline.json", "blueprint.mp4", "keyframes.json", "audio_features.safetensors"):
        assert (wd / name).is_file(), name
    assert len(list((wd / "keyframes").glob("*.png"))) >= 2
    assert list((wd / "clips").glob("clip_*.safetensors"))


@pytest.mark.slow  # the demo run, then the whole cascade again
def test_rerun_reuses_every_finished_clip(demo_run):
    first = _clip_rows(demo_run)
    assert first and not any(c["reused"] for c in first)  # the first run rendered every clip
    assert main(["demo", "--out", str(demo_run)]) == 0
    again = _clip_rows(demo_run)
    assert [c["key"] for c in again] == [c["key"] for c in first]
    assert all(c["reused"] for c in again)  # 0 clips rendered: every clip came from the cache


def _run(tmp_path, **over):
    from avatar_cascade.demo.models import DIT_FILE
    from avatar_cascade.media import sample_audio_path, sample_image_path

    args = {
        "--dit": DIT_FILE,
        "--image": str(sample_image_path()),
        "--audio": str(sample_audio_path()),
        "--prompt": "hello",
        "--models": str(tmp_path / "models"),
        "--out": str(tmp_path / "o.mp4"),
    }
    args.update(over)
    return main(["run", *[x for kv in args.items() for x in kv]])


def test_missing_model_file_names_the_input(demo_models_dir, tmp_path, capsys):
    assert _run(tmp_path, **{"--models": str(demo_models_dir), "--dit": "nope.safetensors"}) == 2
    err = capsys.readouterr().err
    assert "--dit" in err and "nope.safetensors" in err


def test_zero_length_audio_names_the_input(demo_models_dir, tmp_path, capsys):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    assert _run(tmp_path, **{"--models": str(demo_models_dir), "--audio": str(empty)}) == 2
    assert "--audio" in capsys.readouterr().err


def test_a_file_that_is_not_an_image_names_the_input(demo_models_dir, tmp_path, capsys):
    bad = tmp_path / "face.png"
    bad.write_text("this is not a picture")
    assert _run(tmp_path, **{"--models": str(demo_models_dir), "--image": str(bad)}) == 2
    assert "--image" in capsys.readouterr().err


def test_model_name_cannot_leave_the_models_folder(demo_models_dir, tmp_path, capsys):
    assert _run(tmp_path, **{"--models": str(demo_models_dir), "--vae": "../../etc/passwd"}) == 2
    assert "--vae" in capsys.readouterr().err
    assert not Path(tmp_path / "o.mp4").exists()

"""Adversarial suite: inputs that used to give misleading messages or wrong pictures / sound.

Expected outcomes: a folder given as --image / --audio says "is a folder"; an unreadable file says
"permission denied" (not "pick a PNG"); --fps below the blueprint's rate names both flags; --reroll
problems name --reroll before any work; ``demo-models --out`` a file or a read-only folder is one line
(exit 2). Documented handling: a 32-bit float TIFF in 0..255 is read on that scale (not clipped to
white); an int16 AUDIO tensor is scaled to -1..1; a waveform of 1e30 is scaled down with a warning.
"""

from __future__ import annotations

import errno
import logging

import numpy as np
import pytest
import torch

from avatar_cascade.core.errors import InputError
from tests.hostile_helpers import models_tree, one_line_error, run_args, run_cli


def _run(capsys, args):
    from avatar_cascade.cli import main

    rc = main(args)
    return rc, capsys.readouterr().err


@pytest.mark.parametrize("flag", ["--image", "--audio"])
def test_a_folder_as_an_input_file_says_so(flag, demo_models_dir, tmp_path, capsys):
    tree = models_tree(demo_models_dir, tmp_path / "models")
    folder = tmp_path / "a_folder"
    folder.mkdir()
    args = run_args(tree, tmp_path / "o.mp4", **{flag[2:]: str(folder)})
    rc, err = _run(capsys, args)
    line = one_line_error(err)
    assert rc == 2 and flag in line and "is a folder, not a file" in line


@pytest.mark.parametrize("flag", ["--image", "--audio"])
def test_an_unreadable_input_says_permission_denied(flag, tmp_path, monkeypatch):
    """chmod 000 (simulated: root reads anything): the message is about permission, not the format."""
    import builtins

    from avatar_cascade.media import load_audio, load_image, sample_audio_path, sample_image_path

    src = sample_image_path() if flag == "--image" else sample_audio_path()
    locked = tmp_path / src.name
    locked.write_bytes(src.read_bytes())
    real_open = builtins.open

    def deny(path, *a, **k):
        if str(path) == str(locked):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, *a, **k)

    monkeypatch.setattr(builtins, "open", deny)
    with pytest.raises(InputError, match="permission denied") as err:
        (load_image if flag == "--image" else load_audio)(locked, input_name=flag)
    assert "PNG" not in str(err.value)


def test_fps_below_the_blueprint_rate_names_both_flags(demo_models_dir, tmp_path, capsys):
    tree = models_tree(demo_models_dir, tmp_path / "models")
    rc, err = _run(capsys, [*run_args(tree, tmp_path / "o.mp4", fps="6"), "--workdir", str(tmp_path / "w")])
    line = one_line_error(err)
    assert rc == 2 and "--fps" in line and "--blueprint-fps 6" in line
    assert not (tmp_path / "w").exists()


@pytest.mark.parametrize("text, when", [("x", "before any work"), ("99", "after the aligner")])
def test_reroll_problems_name_the_flag_early(text, when, demo_models_dir, tmp_path, capsys):
    tree = models_tree(demo_models_dir, tmp_path / "models")
    work = tmp_path / "w"
    rc, err = _run(capsys, [*run_args(tree, tmp_path / "o.mp4", reroll=text), "--workdir", str(work)])
    line = one_line_error(err)
    assert rc == 2 and line.startswith("error: --reroll")
    if when == "before any work":
        assert not work.exists()
    else:
        assert not (work / "storyline.json").exists() and not (work / "blueprint").exists()


def test_demo_models_out_problems_are_one_line(tmp_path):
    afile = tmp_path / "models"
    afile.write_text("not a folder")
    res = run_cli("demo-models", "--out", str(afile), cwd=tmp_path)
    assert res.returncode == 2 and "--out" in one_line_error(res.stderr) and "is a file" in res.stderr
    res = run_cli("demo-models", "--out", str(afile / "sub"), cwd=tmp_path)
    assert res.returncode == 2 and "is a file" in one_line_error(res.stderr)


def test_a_write_error_inside_demo_models_is_one_line(tmp_path, capsys, monkeypatch):
    """A read-only / vanished folder while writing (simulated: root ignores chmod): exit 2, one line, --out named."""
    import avatar_cascade.demo.models as demo

    def denied(models_dir, *a, **k):
        raise PermissionError(errno.EACCES, "Permission denied", str(models_dir / "vae" / "x.safetensors"))

    monkeypatch.setattr(demo, "write_demo_models", denied)
    rc, err = _run(capsys, ["demo-models", "--out", str(tmp_path / "m")])
    line = one_line_error(err)
    assert rc == 2 and "--out" in line and "Permission denied" in line


def test_a_32_bit_float_tiff_in_0_255_is_not_white(tmp_path):
    from PIL import Image

    from avatar_cascade.media import load_image

    ramp = np.tile(np.linspace(0, 255, 96, dtype=np.float32), (80, 1))
    Image.fromarray(ramp, mode="F").save(tmp_path / "f.tif")
    img = load_image(tmp_path / "f.tif")
    assert img.shape == (80, 96, 3)
    assert abs(float(img[0, 48, 0]) - ramp[0, 48] / 255) < 1e-5
    assert float(img.mean()) < 0.6  # a clip to 0..1 would make it almost all white
    unit = np.tile(np.linspace(0, 1, 96, dtype=np.float32), (80, 1))
    Image.fromarray(unit, mode="F").save(tmp_path / "u.tif")
    assert torch.allclose(load_image(tmp_path / "u.tif")[..., 0], torch.from_numpy(unit))  # 0..1 stays


def test_an_int16_audio_tensor_is_scaled(caplog):
    from avatar_cascade.media import AudioTrack

    wav = (np.sin(np.arange(16000) / 5) * 16000).astype(np.int16)
    with caplog.at_level(logging.INFO):
        track = AudioTrack.from_comfy({"waveform": torch.from_numpy(wav)[None, None], "sample_rate": 16000})
    assert track.waveform.dtype == torch.float32
    assert abs(float(track.waveform.abs().max()) - 16000 / 32768) < 1e-3
    assert any("int16 samples scaled" in r.getMessage() for r in caplog.records)


def test_an_absurd_waveform_is_scaled_down_with_a_warning_and_inf_is_refused(caplog):
    from avatar_cascade.media import AudioTrack

    wav = torch.sin(torch.arange(16000) / 5.0)[None, None] * 1e30
    with caplog.at_level(logging.WARNING):
        track = AudioTrack.from_comfy({"waveform": wav, "sample_rate": 16000})
    assert float(track.waveform.abs().max()) == pytest.approx(1.0, abs=1e-6)
    assert any("above full scale" in r.getMessage() for r in caplog.records)
    with pytest.raises(InputError, match="NaN or infinite"):
        AudioTrack.from_comfy({"waveform": torch.full((1, 1, 100), 1e300, dtype=torch.float64), "sample_rate": 16000})

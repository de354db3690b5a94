"""Bad-input suite: every kind of bad input an artist can give, through the public entry points.

Each kind is answered either by a clear error (an ``InputError`` / ``ModelFileError`` whose
message names the input, the bad value and a fix — the CLI prints it and exits with code 2)
or by documented handling (RGBA over white, greyscale to RGB, 16-bit kept, ...). Never a
traceback from inside a library, and never a file written outside the output / work folders:
every test runs with the working directory and the temp folder inside its own sandbox, which
is snapshot before and after.

Entry points: ``avatar_cascade.cli.main(["run", ...])`` (the standalone CLI), the node classes
from ``nodes.NODE_CLASS_MAPPINGS`` (as ComfyUI calls them, folders from ``AVATAR_CASCADE_*``
env vars), their ``VALIDATE_INPUTS`` (widget values), and ``avatar_cascade.media.load_image``
/ ``load_audio`` (the loaders the CLI runs first) for the handled kinds.

This module: the CLI table and the documented handling; the loader nodes, widget values and
Storyline Edit JSON are in ``test_bad_inputs_nodes.py``. The ``sandbox`` fixture is in
``conftest.py``, the input writers and ``assert_clear`` in ``tests/helpers.py``.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from avatar_cascade.demo.models import DIT_FILE
from tests.helpers import assert_clear, write_png, write_wav
from tests.helpers import node_class as _node
from tests.helpers import snapshot_files as _snapshot

# ----------------------------------------------------------------------------- writers of test inputs


def write_float_wav(path: Path, samples: np.ndarray, sr: int) -> Path:
    """32-bit float mono WAV (format tag 3), written by hand so NaN samples survive."""
    data = samples.astype("<f4").tobytes()
    fmt = struct.pack("<HHIIHH", 3, 1, sr, sr * 4, 4, 32)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return path


def write_silent_video(path: Path) -> Path:
    from avatar_cascade.media import VideoWriter

    with VideoWriter(path, 16, 64, 64) as vw:
        vw.write(np.zeros((8, 64, 64, 3), np.uint8))
    return path


# ----------------------------------------------------------------------------- sandbox (the fixture: conftest.py)


def cli(box: Path, models: Path, capsys, **over: str) -> tuple[int, str]:
    """``python -m avatar_cascade run`` with good defaults, ``over`` replacing single options."""
    from avatar_cascade.cli import main

    args = {
        "--image": str(box / "inputs" / "face.png"),
        "--audio": str(box / "inputs" / "speech.wav"),
        "--prompt": "a person talks",
        "--models": str(models),
        "--out": str(box / "out" / "o.mp4"),
        "--workdir": str(box / "work"),
        "--dit": DIT_FILE,
        "--width": "64",
        "--height": "64",
        "--steps": "2",
        "--clip-frames": "17",
        "--fps": "16",
    }
    args.update(over)
    before = _snapshot(box)
    rc = main(["run", *[x for kv in args.items() for x in kv]])
    new = _snapshot(box) - before
    assert all(f.startswith(("out/", "work/")) for f in new), sorted(new)
    assert not (box / "out" / "o.mp4").exists()
    return rc, capsys.readouterr().err


# ----------------------------------------------------------------------------- CLI table


def _make(box: Path, kind: str) -> dict[str, str]:
    """Write the bad input of ``kind`` into box/inputs and return the CLI options that use it."""
    inp = box / "inputs"
    if kind == "missing-image":
        return {"--image": str(inp / "nope.png")}
    if kind == "zero-byte-image":
        (inp / "empty.png").write_bytes(b"")
        return {"--image": str(inp / "empty.png")}
    if kind == "text-as-image":
        (inp / "notes.png").write_text("not a picture")
        return {"--image": str(inp / "notes.png")}
    if kind == "tiny-image":
        return {"--image": str(write_png(inp / "tiny.png", 32, 48))}
    if kind == "huge-image":
        return {"--image": str(write_png(inp / "huge.png", 9000, 64))}
    if kind == "missing-audio":
        return {"--audio": str(inp / "nope.wav")}
    if kind == "zero-byte-audio":
        (inp / "empty.wav").write_bytes(b"")
        return {"--audio": str(inp / "empty.wav")}
    if kind == "audio-0s":
        return {"--audio": str(write_wav(inp / "zero.wav", 0.0))}
    if kind == "audio-2h":  # 2 h at 100 Hz, 8-bit: small file, over the CLI's 3600 s limit
        return {"--audio": str(write_wav(inp / "long.wav", 7200.0, sr=100, sampwidth=1))}
    if kind == "audio-nan":
        wav = np.sin(np.arange(16000) / 10).astype(np.float32)
        wav[500:600] = np.nan
        return {"--audio": str(write_float_wav(inp / "nan.wav", wav, 16000))}
    if kind == "corrupt-mp3":
        rng = np.random.default_rng(1)
        (inp / "broken.mp3").write_bytes(b"ID3\x03\x00\x00\x00\x00\x00\x0a" + rng.bytes(4000))
        return {"--audio": str(inp / "broken.mp3")}
    if kind == "video-without-audio":
        return {"--audio": str(write_silent_video(inp / "silent.mp4"))}
    if kind == "model-name-dotdot":
        return {"--vae": "../../etc/passwd"}
    if kind == "missing-model":
        return {"--dit": "nope.safetensors"}
    if kind == "width-not-16":
        return {"--width": "100"}
    if kind == "clip-frames-not-4n1":
        return {"--clip-frames": "80"}
    if kind == "fps-zero":
        return {"--fps": "0"}
    if kind == "fps-negative":
        return {"--fps": "-25"}
    if kind == "fps-absurd":
        return {"--fps": "100000"}
    if kind == "fps-not-a-number":
        return {"--fps": "fast"}
    if kind == "seed-negative":
        return {"--seed": "-1"}
    if kind == "seed-too-big":
        return {"--seed": str(2**64)}
    if kind == "lora-strength-not-a-number":
        return {"--lora": "style.safetensors:strong"}
    raise KeyError(kind)


# kind -> (input named in the message, value named in the message)
CLI_KINDS = {
    "missing-image": ("--image", "nope.png"),
    "zero-byte-image": ("--image", "empty.png"),
    "text-as-image": ("--image", "notes.png"),
    "tiny-image": ("--image", "32x48"),
    "huge-image": ("--image", "9000x64"),
    "missing-audio": ("--audio", "nope.wav"),
    "zero-byte-audio": ("--audio", "empty.wav"),
    "audio-0s": ("--audio", "zero.wav"),
    "audio-2h": ("--audio", "long.wav"),
    "audio-nan": ("--audio", "nan.wav"),
    "corrupt-mp3": ("--audio", "broken.mp3"),
    "video-without-audio": ("--audio", "silent.mp4"),
    "model-name-dotdot": ("--vae", "../../etc/passwd"),
    "missing-model": ("--dit", "nope.safetensors"),
    "width-not-16": ("--width", "100"),
    "clip-frames-not-4n1": ("--clip-frames", "80"),
    "fps-zero": ("--fps", "'0'"),
    "fps-negative": ("fps", "'-25'"),
    "fps-absurd": ("fps", "'100000'"),
    "fps-not-a-number": ("fps", "'fast'"),
    "seed-negative": ("--seed", "-1"),
    "seed-too-big": ("--seed", str(2**64)),
    "lora-strength-not-a-number": ("--lora", "style.safetensors:strong"),
}


@pytest.mark.parametrize("kind", list(CLI_KINDS))
def test_cli_refuses_bad_input_with_a_clear_message(kind, sandbox, demo_models_dir, capsys):
    over = _make(sandbox, kind)
    rc, err = cli(sandbox, demo_models_dir, capsys, **over)
    assert rc == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1, err  # one line, no traceback
    assert_clear(err, *CLI_KINDS[kind])


def test_the_2h_limit_and_nan_are_said_in_words(sandbox, demo_models_dir, capsys):
    _, err = cli(sandbox, demo_models_dir, capsys, **_make(sandbox, "audio-2h"))
    assert "3600 s" in err
    _, err = cli(sandbox, demo_models_dir, capsys, **_make(sandbox, "audio-nan"))
    assert "NaN" in err
    _, err = cli(sandbox, demo_models_dir, capsys, **_make(sandbox, "video-without-audio"))
    assert "no audio stream" in err and "sound track" in err


# ----------------------------------------------------------------------------- documented handling


def test_rgba_image_is_composited_over_white(sandbox):
    from avatar_cascade.media import load_image

    img = load_image(write_png(sandbox / "inputs" / "rgba.png", 64, 64, "RGBA"), input_name="--image")
    assert img.shape == (64, 64, 3) and torch.all(img[:32] == 1.0)


def test_greyscale_image_becomes_rgb(sandbox):
    from avatar_cascade.media import load_image

    img = load_image(write_png(sandbox / "inputs" / "grey.png", 80, 64, "L"), input_name="--image")
    assert img.shape == (64, 80, 3) and torch.equal(img[..., 0], img[..., 1]) and torch.equal(img[..., 1], img[..., 2])


def test_16_bit_image_keeps_its_precision(sandbox):
    from avatar_cascade.media import load_image

    img = load_image(write_png(sandbox / "inputs" / "deep.png", 64, 64, "I;16"), input_name="--image")
    levels = torch.unique((img[..., 0] * 65535).round())
    assert img.shape == (64, 64, 3) and len(levels) > 256  # more than 8-bit levels survive


def test_image_not_a_multiple_of_16_is_resized_to_the_requested_size(sandbox):
    from avatar_cascade.media import load_image
    from avatar_cascade.media.frames import reference_uint8

    img = load_image(write_png(sandbox / "inputs" / "odd.png", 101, 77), input_name="--image")
    assert img.shape == (77, 101, 3)
    assert reference_uint8(img, 64, 96).shape == (64, 96, 3)


def _align(path: Path):
    from avatar_cascade.media import load_audio

    audio = load_audio(path, input_name="--audio")
    aligned, _ = _node("AvatarCascadeAudioAligner")().align(audio.to_comfy(), 16.0, 17)
    return audio, aligned


def test_a_tenth_of_a_second_of_audio_gives_one_short_clip(sandbox):
    audio, aligned = _align(write_wav(sandbox / "inputs" / "blip.wav", 0.1))
    assert audio.num_samples == 1600
    assert len(aligned.timeline.clips) == 1 and aligned.timeline.num_frames == 2  # 0.1 s at 16 fps, rounded up


def test_8khz_mono_decodes(sandbox):
    audio, aligned = _align(write_wav(sandbox / "inputs" / "phone.wav", 1.0, sr=8000))
    assert audio.sample_rate == 8000 and audio.num_channels == 1 and audio.num_samples == 8000
    assert aligned.timeline.num_frames == 16


def test_192khz_8_channels_decodes(sandbox):
    audio, aligned = _align(write_wav(sandbox / "inputs" / "studio.wav", 0.5, sr=192000, channels=8))
    assert audio.sample_rate == 192000 and audio.num_channels == 8 and audio.num_samples == 96000
    assert aligned.timeline.num_frames == 8

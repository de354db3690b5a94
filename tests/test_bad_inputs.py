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
"""

from __future__ import annotations

import json
import math
import shutil
import struct
import tempfile
import wave
from pathlib import Path

import numpy as np
import pytest
import torch

from avatar_cascade.core.errors import AvatarCascadeError
from avatar_cascade.demo.models import DIT_FILE, VAE_FILE

# ----------------------------------------------------------------------------- writers of test inputs


def write_png(path: Path, w: int, h: int, mode: str = "RGB") -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    if mode == "I;16":
        arr = rng.integers(0, 65536, (h, w), dtype=np.uint16)
        Image.fromarray(arr).save(path)  # uint16 -> I;16
    elif mode == "L":
        Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8), mode="L").save(path)
    elif mode == "RGBA":
        arr = rng.integers(0, 256, (h, w, 4), dtype=np.uint8)
        arr[: h // 2, :, 3] = 0  # top half fully transparent
        arr[h // 2 :, :, 3] = 255
        Image.fromarray(arr, mode="RGBA").save(path)
    else:
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), mode="RGB").save(path)
    return path


def write_wav(path: Path, seconds: float, sr: int = 16000, channels: int = 1, sampwidth: int = 2) -> Path:
    """PCM WAV of a 220 Hz tone (silence for 8-bit)."""
    n = round(seconds * sr)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(sampwidth)
        w.setframerate(sr)
        if sampwidth == 1:
            w.writeframes(b"\x80" * (n * channels))
        else:
            t = np.arange(n) / sr
            tone = (0.3 * 32767 * np.sin(2 * np.pi * 220 * t)).astype("<i2")
            w.writeframes(np.repeat(tone[:, None], channels, axis=1).tobytes())
    return path


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


# ----------------------------------------------------------------------------- sandbox


def _snapshot(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


@pytest.fixture()
def sandbox(tmp_path, monkeypatch):
    """``tmp_path`` as cwd and temp folder; inputs written before the snapshot, out/ and work/ allowed."""
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


def assert_clear(message: str, input_name: str, value: str) -> None:
    assert input_name in message, message
    assert value in message, message
    fix = message.split("Fix:", 1)
    assert len(fix) == 2 and len(fix[1].strip()) > 5, message
    assert "Traceback" not in message


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


# ----------------------------------------------------------------------------- model files through the loader nodes


@pytest.fixture()
def models_tree(sandbox, demo_models_dir):
    """A models/ tree in the sandbox with a VAE posing as a DiT, a truncated DiT and foreign LoRAs."""
    from safetensors.torch import save_file

    root = sandbox / "models"
    dm = root / "diffusion_models"
    dm.mkdir(parents=True)
    shutil.copyfile(demo_models_dir / "diffusion_models" / DIT_FILE, dm / DIT_FILE)
    shutil.copyfile(demo_models_dir / "vae" / VAE_FILE, dm / "my_vae.safetensors")
    data = (demo_models_dir / "diffusion_models" / DIT_FILE).read_bytes()
    (dm / "half.safetensors").write_bytes(data[: len(data) // 2])
    (root / "loras").mkdir()
    sdxl = {
        "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 320),
        "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": torch.zeros(320, 4),
    }
    save_file(sdxl, str(root / "loras" / "sdxl_style.safetensors"))
    flux = {
        "diffusion_model.double_blocks.0.img_attn.qkv.lora_A.weight": torch.zeros(4, 3072),
        "diffusion_model.double_blocks.0.img_attn.qkv.lora_B.weight": torch.zeros(9216, 4),
    }
    save_file(flux, str(root / "loras" / "flux_style.safetensors"))
    return root


def _node(name: str):
    from nodes import NODE_CLASS_MAPPINGS

    return NODE_CLASS_MAPPINGS[name]


def _raises_clear(fn, input_name: str, value: str) -> str:
    with pytest.raises(AvatarCascadeError) as info:
        fn()
    assert_clear(str(info.value), input_name, value)
    return str(info.value)


def test_vae_file_chosen_as_dit(models_tree):
    msg = _raises_clear(lambda: _node("AvatarCascadeDiTLoader")().load("my_vae.safetensors"), "dit_name", "my_vae")
    assert "VAE" in msg or "not recognised" in msg


def test_truncated_safetensors(models_tree):
    msg = _raises_clear(lambda: _node("AvatarCascadeDiTLoader")().load("half.safetensors"), "dit_name", "half")
    assert "truncated" in msg


def test_model_name_with_dotdot_in_a_node(models_tree):
    _raises_clear(lambda: _node("AvatarCascadeDiTLoader")().load("../loras/x.safetensors"), "dit_name", "../")
    stack = _node("AvatarCascadeLoRAStack")()
    _raises_clear(lambda: stack.stack("../../secret.safetensors", 1.0, "all"), "lora_name", "../")


@pytest.mark.parametrize(("file", "family"), [("sdxl_style", "Stable Diffusion"), ("flux_style", "FLUX")])
def test_lora_for_another_model(models_tree, file, family):
    (dit,) = _node("AvatarCascadeDiTLoader")().load(DIT_FILE)
    (stack,) = _node("AvatarCascadeLoRAStack")().stack(f"{file}.safetensors", 1.0, "all")
    msg = _raises_clear(lambda: _node("AvatarCascadeApplyLoRA")().apply(dit, stack), "lora", file)
    assert family in msg


# ----------------------------------------------------------------------------- widget values (VALIDATE_INPUTS)

WIDGET_KINDS = [
    ("AvatarCascadeFLFRefiner", {"scheduler": "euler_ancestral_magic"}, "scheduler", "euler_ancestral_magic"),
    ("AvatarCascadeFLFRefiner", {"seed": -5}, "seed", "-5"),
    ("AvatarCascadeFLFRefiner", {"seed": 2**64}, "seed", str(2**64)),
    ("AvatarCascadeAudioAligner", {"fps": 0.0}, "fps", "0.0"),
    ("AvatarCascadeAudioAligner", {"fps": -30.0}, "fps", "-30.0"),
    ("AvatarCascadeAudioAligner", {"fps": 1e9}, "fps", "1000000000.0"),
    ("AvatarCascadeAudioAligner", {"fps": math.nan}, "fps", "nan"),
    ("AvatarCascadeAudioAligner", {"fps": math.inf}, "fps", "inf"),
    ("AvatarCascadeAudioAligner", {"fps": 25.0, "clip_frames": 80}, "clip_frames", "80"),
    ("AvatarCascadeBlueprintSampler", {"width": 100, "height": 64}, "width", "100"),
]


@pytest.mark.parametrize(
    ("node", "widgets", "input_name", "value"), WIDGET_KINDS, ids=[f"{n[13:]}-{k}" for n, k, *_ in WIDGET_KINDS]
)
def test_widget_values_are_refused_before_the_run(sandbox, node, widgets, input_name, value):
    msg = _node(node).VALIDATE_INPUTS(**widgets)
    assert isinstance(msg, str), msg
    assert_clear(msg, input_name, value)


# ----------------------------------------------------------------------------- storyline JSON (Storyline Edit node)


@pytest.fixture()
def timeline(sandbox):
    from avatar_cascade.media import load_audio

    audio = load_audio(write_wav(sandbox / "inputs" / "two_seconds.wav", 2.0))
    aligned, _ = _node("AvatarCascadeAudioAligner")().align(audio.to_comfy(), 16.0, 17)
    assert len(aligned.timeline.clips) >= 2
    return aligned


def _story(aligned) -> dict:
    _, text = _node("AvatarCascadeStorylineEdit")().edit(aligned, _rule_story(aligned))["result"]
    return json.loads(text)


def _rule_story(aligned) -> str:
    from avatar_cascade.stages.inbetween.inbetween import inbetween_storyline

    return inbetween_storyline(aligned.timeline, "a person talks").to_json()


def test_storyline_json_that_is_not_json(timeline):
    edit = _node("AvatarCascadeStorylineEdit")()
    _raises_clear(lambda: edit.edit(timeline, '{"global": "talk", "shots": [ '), "storyline", "")


def test_storyline_json_missing_fields(timeline):
    data = _story(timeline)
    del data["shots"]
    edit = _node("AvatarCascadeStorylineEdit")()
    _raises_clear(lambda: edit.edit(timeline, json.dumps(data)), "storyline", "shots")
    data = _story(timeline)
    del data["shots"][0]["prompt"]
    _raises_clear(lambda: edit.edit(timeline, json.dumps(data)), "storyline", "prompt")


def test_storyline_json_with_overlapping_shots(timeline):
    data = _story(timeline)
    first = data["shots"][0]
    data["shots"][1]["frame_start"] = first["frame_start"]  # shot 1 claims shot 0's frames too
    edit = _node("AvatarCascadeStorylineEdit")()
    msg = _raises_clear(lambda: edit.edit(timeline, json.dumps(data)), "storyline", str(first["frame_start"]))
    assert "shots[1].frame_start" in msg and "overlaps the previous shot" in msg
    data = _story(timeline)
    data["shots"].append(dict(data["shots"][-1]))  # one shot too many
    _raises_clear(lambda: edit.edit(timeline, json.dumps(data)), "storyline", "shots")


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

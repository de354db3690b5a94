"""Media IO, images: real files in many modes written with PIL and read back by ``load_image``
(alpha over white, greyscale, 16-bit, palettes), size limits, bad files, ComfyUI IMAGE tensors and
the bundled samples. (Audio: ``test_media_audio.py``; the video writer: ``test_media_video.py``.)"""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from avatar_cascade.core.errors import InputError
from avatar_cascade.media import check_image_tensor, load_audio, load_image, sample_audio_path, sample_image_path

# -- images ------------------------------------------------------------------


def test_load_image_modes(tmp_path):
    rgba = np.zeros((64, 80, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:, :40, 3] = 255  # left half opaque red-ish, right half fully transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    img = load_image(tmp_path / "rgba.png")
    assert img.shape == (64, 80, 3) and img.dtype == torch.float32
    assert torch.allclose(img[0, 0], torch.tensor([200 / 255, 0.0, 0.0]))
    assert torch.allclose(img[0, 79], torch.ones(3))  # transparent -> white

    grey = np.tile(np.arange(64, dtype=np.uint8)[None] * 4, (64, 1))
    Image.fromarray(grey, "L").save(tmp_path / "grey.png")
    g = load_image(tmp_path / "grey.png")
    assert g.shape == (64, 64, 3) and torch.equal(g[..., 0], g[..., 2])
    assert g[0, 10, 0] == pytest.approx(40 / 255)

    deep = np.full((64, 64), 257, np.uint16)
    deep[0, 0], deep[0, 1] = 65535, 32768
    Image.fromarray(deep).save(tmp_path / "deep.png")
    d = load_image(tmp_path / "deep.png")
    assert d[0, 0, 0] == pytest.approx(1.0) and d[0, 1, 1] == pytest.approx(32768 / 65535)
    assert d[5, 5, 2] == pytest.approx(257 / 65535)  # 16-bit precision kept, not clipped to 255

    pal = Image.fromarray(grey, "L").convert("P")
    pal.info["transparency"] = int(np.asarray(pal)[0, 0])
    pal.save(tmp_path / "pal.png", transparency=int(np.asarray(pal)[0, 0]))
    p = load_image(tmp_path / "pal.png")
    assert torch.allclose(p[0, 0], torch.ones(3)) and p.shape == (64, 64, 3)


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    return b"\x89PNG\r\n\x1a\n" + ihdr + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def test_load_image_size_limits(tmp_path):
    Image.new("RGB", (32, 100)).save(tmp_path / "tiny.png")
    with pytest.raises(InputError, match=r"32x100.*between 64 and 8192"):
        load_image(tmp_path / "tiny.png")
    Image.new("1", (9000, 64)).save(tmp_path / "wide.png")  # 1-bit: a few KB on disk and in memory
    with pytest.raises(InputError, match=r"9000x64.*between 64 and 8192"):
        load_image(tmp_path / "wide.png")
    (tmp_path / "bomb.png").write_bytes(_png_header_only(30000, 30000))  # header only, never allocated
    with pytest.raises(InputError, match="8192"):
        load_image(tmp_path / "bomb.png")


def test_load_image_bad_files(tmp_path):
    with pytest.raises(InputError, match="file not found") as info:
        load_image(tmp_path / "missing.png", input_name="reference")
    assert info.value.input_name == "reference"
    (tmp_path / "zero.png").write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        load_image(tmp_path / "zero.png")
    (tmp_path / "text.png").write_text("this is not an image")
    with pytest.raises(InputError, match="could not be read as an image"):
        load_image(tmp_path / "text.png")
    Image.new("RGB", (128, 128), (10, 200, 30)).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="damaged|could not be read"):
        load_image(tmp_path / "cut.png")


def test_check_image_tensor():
    batch = torch.rand(2, 8, 9, 4)
    out = check_image_tensor(batch)
    assert out.shape == (8, 9, 3) and torch.equal(out, batch[0, ..., :3])
    grey = check_image_tensor(torch.rand(8, 9, 1))
    assert grey.shape == (8, 9, 3) and torch.equal(grey[..., 0], grey[..., 1])
    u8 = check_image_tensor(torch.full((1, 4, 4, 3), 255, dtype=torch.uint8))
    assert torch.all(u8 == 1.0)
    with pytest.raises(InputError, match="NaN"):
        check_image_tensor(torch.full((1, 4, 4, 3), float("nan")), "ref")
    with pytest.raises(InputError, match="C = 1, 3 or 4"):
        check_image_tensor(torch.rand(1, 4, 4, 2))


def test_bundled_samples():
    img = load_image(sample_image_path())
    assert img.shape == (256, 256, 3) and float(img.std()) > 0.1
    speech = load_audio(sample_audio_path())
    assert speech.sample_rate == 16000 and speech.num_channels == 1
    assert 3.0 < speech.duration_s < 6.0
    assert float(speech.waveform.abs().max()) > 0.5

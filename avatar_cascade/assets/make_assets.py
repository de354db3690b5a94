"""Regenerate the bundled sample inputs (run from anywhere: ``python make_assets.py``).

* ``sample_portrait.png``: a stylised face drawn with PIL (256x256, deterministic).
* ``sample_speech.flac``: an English sentence spoken by espeak-ng
  (``apt-get install espeak-ng``), resampled to 16 kHz mono and encoded as FLAC
  with PyAV. Skipped with a message if espeak-ng is not installed.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SENTENCE = "Hello! I am your avatar. Give me a voice, and I will speak for you."
SAMPLE_RATE = 16000


def make_portrait(path: Path) -> None:
    """Draw a simple cartoon head and shoulders on a teal background."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (256, 256), (46, 139, 150))
    d = ImageDraw.Draw(img)
    d.ellipse((28, 200, 228, 330), fill=(200, 60, 70))  # shoulders
    d.rectangle((110, 168, 146, 214), fill=(236, 190, 160))  # neck
    d.ellipse((52, 28, 204, 122), fill=(70, 45, 30))  # hair
    d.ellipse((66, 46, 190, 196), fill=(241, 200, 170))  # face
    d.ellipse((58, 104, 74, 136), fill=(236, 190, 160))  # ears
    d.ellipse((182, 104, 198, 136), fill=(236, 190, 160))
    d.chord((60, 30, 196, 110), 180, 360, fill=(70, 45, 30))  # fringe
    for cx in (102, 154):  # eyes
        d.ellipse((cx - 13, 104, cx + 13, 124), fill=(255, 255, 255))
        d.ellipse((cx - 7, 107, cx + 7, 121), fill=(60, 90, 140))
        d.ellipse((cx - 3, 111, cx + 3, 117), fill=(10, 10, 10))
        d.line((cx - 14, 96, cx + 12, 92), fill=(70, 45, 30), width=4)  # brows
    d.line((128, 118, 122, 146), fill=(205, 150, 125), width=3)  # nose
    d.line((122, 146, 132, 148), fill=(205, 150, 125), width=3)
    d.chord((104, 154, 152, 182), 0, 180, fill=(150, 40, 50))  # mouth
    d.ellipse((78, 138, 98, 152), fill=(245, 175, 165))  # cheeks
    d.ellipse((158, 138, 178, 152), fill=(245, 175, 165))
    img.save(path, optimize=True)


def make_speech(path: Path) -> bool:
    """Synthesise SENTENCE with espeak-ng and write it as 16 kHz mono FLAC."""
    import av
    import numpy as np
    import torch
    import torchaudio.functional as AF

    with tempfile.TemporaryDirectory() as tmp:
        wav_path = Path(tmp) / "speech.wav"
        try:
            subprocess.run(["espeak-ng", "-v", "en-us", "-s", "170", "-w", str(wav_path), SENTENCE], check=True)
        except (OSError, subprocess.CalledProcessError) as exc:
            print(f"espeak-ng unavailable ({exc}); sample_speech.flac left unchanged", file=sys.stderr)
            return False
        with av.open(str(wav_path)) as c:
            frames = [f.to_ndarray().reshape(-1, f.layout.nb_channels).T for f in c.decode(audio=0)]
            sr = c.streams.audio[0].sample_rate
    wav = torch.from_numpy(np.concatenate(frames, axis=1).astype(np.float32) / 32768.0).mean(0, keepdim=True)
    wav = AF.resample(wav, sr, SAMPLE_RATE)
    wav = wav / wav.abs().max() * 0.9
    pcm = (wav.clamp(-1, 1) * 32767).round().to(torch.int16).numpy()
    with av.open(str(path), "w", format="flac") as out:
        stream = out.add_stream("flac", rate=SAMPLE_RATE)
        stream.layout, stream.format = "mono", "s16"
        frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        frame.sample_rate, frame.pts = SAMPLE_RATE, 0
        out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return True


if __name__ == "__main__":
    make_portrait(HERE / "sample_portrait.png")
    make_speech(HERE / "sample_speech.flac")

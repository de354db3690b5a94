"""Plain helpers shared by the tests (the fixtures built on them are in ``conftest.py``).

Import them as ``from tests.helpers import ...``: ``conftest.py`` puts the repository root on
``sys.path`` (``python -m pytest`` and ``bash scripts/test.sh`` run from it as well), and the
subprocess tests (SIGKILL, 720p RSS) put it there themselves.
"""

from __future__ import annotations

import math
import wave
from pathlib import Path

import numpy as np
import torch

from avatar_cascade.core.runtime import Runtime
from avatar_cascade.media import AudioTrack

SR = 16000

# ----------------------------------------------------------------------------- runtime


def cpu_runtime(**kw) -> Runtime:
    """A CPU :class:`Runtime` without progress bars; ``kw`` go to it (``preview=``, ``interrupt_check=``...)."""
    return Runtime(device=torch.device("cpu"), show_progress=False, **kw)


# ----------------------------------------------------------------------------- waveforms


def tone_samples(
    num_samples: int, sr: int = SR, hz: float = 220.0, channels: int = 1, amp: float = 0.3, gate_hz: float | None = None
) -> torch.Tensor:
    """``[channels, num_samples]`` float32 sine of ``hz``; ``gate_hz`` switches it on and off like syllables
    (on while ``sin(2 pi gate_hz t) > 0``)."""
    t = torch.arange(num_samples) / sr
    x = amp * torch.sin(2 * math.pi * hz * t)
    if gate_hz is not None:
        x = x * (torch.sin(2 * math.pi * gate_hz * t) > 0)
    return x.repeat(channels, 1)


def tone(
    seconds: float, sr: int = SR, hz: float = 220.0, channels: int = 1, amp: float = 0.3, gate_hz: float | None = None
) -> torch.Tensor:
    """``seconds`` of :func:`tone_samples`."""
    return tone_samples(int(seconds * sr), sr, hz, channels, amp, gate_hz)


def tone_track(num_samples: int, sr: int = SR, **kw) -> AudioTrack:
    """:func:`tone_samples` as an :class:`AudioTrack` (mono unless ``channels=`` says otherwise)."""
    return AudioTrack(tone_samples(num_samples, sr, **kw), sr)


def speechlike(seconds: float, sr: int = SR, seed: int = 0) -> torch.Tensor:
    """``[1, N]``: tone bursts with noise, amplitude-modulated like syllables (deterministic)."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * sr)) / sr
    env = 0.5 + 0.5 * torch.sin(2 * math.pi * 3.3 * t)
    x = env * (torch.sin(2 * math.pi * 180 * t) + 0.3 * torch.randn(t.numel(), generator=g))
    return 0.3 * x[None]


def aligned_tone(
    seconds: float, fps=16, clip_frames: int = 17, wave: torch.Tensor | None = None, gate_hz: float | None = None, **kw
):
    """The real Audio Aligner on ``wave`` (default: ``seconds`` of :func:`tone`) at 16 kHz on the fixed
    grid (``snap_seams_frames=0`` unless given); ``kw`` are ``AlignerSettings`` fields and ``audio_encoder=``."""
    from avatar_cascade.stages.aligner.aligner import align_audio
    from avatar_cascade.stages.aligner.settings import AlignerSettings

    if wave is None:
        wave = tone(seconds, gate_hz=gate_hz)
    encoder = kw.pop("audio_encoder", None)
    settings = AlignerSettings(fps=fps, clip_frames=clip_frames, **{"snap_seams_frames": 0, **kw})
    return align_audio(AudioTrack(wave, SR), settings, cpu_runtime(), audio_encoder=encoder)


def sines(channels: int, sr: int, seconds: float, base: float = 440.0) -> np.ndarray:
    """[C, T] float32; channel c is a sine at base * (1 + c/2) Hz, amplitude 0.5."""
    t = np.arange(int(round(sr * seconds))) / sr
    return np.stack([0.5 * np.sin(2 * np.pi * base * (1 + c / 2) * t) for c in range(channels)]).astype(np.float32)


def dominant_hz(x: np.ndarray | torch.Tensor, sr: int) -> float:
    """The frequency (Hz) of the strongest bin of the Hann-windowed spectrum of ``x`` (1-D) at ``sr``."""
    x = np.asarray(x, dtype=np.float64)
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spec) * sr / len(x))


# ----------------------------------------------------------------------------- model files


def save_safetensors(path: Path, sd: dict[str, torch.Tensor]) -> Path:
    """Write ``sd`` to ``path`` (parents created, tensors made contiguous); returns ``path``."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    return path


def load_tiny_models(models_dir: str | Path):
    """``(dit, vae, text_encoder)``: the tiny demo models of a ``write_demo_models`` tree, through the real loaders."""
    from avatar_cascade.demo.models import DIT_FILE, TEXT_ENCODER_FILE, VAE_FILE
    from avatar_cascade.models.text_encoder import load_text_encoder
    from avatar_cascade.models.wan_dit import load_wan_dit
    from avatar_cascade.models.wan_vae import load_wan_vae

    models_dir = Path(models_dir)
    return (
        load_wan_dit(models_dir / "diffusion_models" / DIT_FILE),
        load_wan_vae(models_dir / "vae" / VAE_FILE),
        load_text_encoder(models_dir / "text_encoders" / TEXT_ENCODER_FILE),
    )


def meta_shapes(cls, config) -> dict[str, tuple[int, ...]]:
    """``{key: shape}`` of ``cls(**config)`` (or ``cls.from_config(config)``) built on the meta device:
    a full-size model's layout without its weights."""
    from accelerate import init_empty_weights

    with init_empty_weights():
        model = cls(**config) if not hasattr(cls, "from_config") else cls.from_config(config)
    assert all(p.device.type == "meta" for p in model.parameters())
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


class ForwardCounter:
    """Counts forward calls of ``modules`` (a DiT's transformer, a VAE...) until :meth:`close`.

    ``calls`` holds the ``id`` of the module of each call, so replicas on other refiner workers are
    told apart. The hook is a closure, not a bound method: ``copy.deepcopy`` (how the refiner
    replicates a DiT) shares a function, so a replica's forwards are counted here too.
    """

    def __init__(self, *modules: torch.nn.Module) -> None:
        self.calls: list[int] = []
        calls = self.calls
        self._handles = [m.register_forward_hook(lambda mod, *_: calls.append(id(mod))) for m in modules]

    @property
    def count(self) -> int:
        return len(self.calls)

    def take(self) -> int:
        """The number of forwards since the last ``take`` (and start counting again)."""
        n = len(self.calls)
        self.calls.clear()
        return n

    def close(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def __enter__(self) -> ForwardCounter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ----------------------------------------------------------------------------- refiner inputs


def refiner_inputs(clips: int = 3, size: int = 16, fps: int = 16, prompt: str = "a person talks"):
    """``(keyframes, aligned, storyline)``: ``clips`` clips of 5 frames, random keyframes, one prompt, silent audio."""
    from avatar_cascade.artefacts.aligned_audio import AlignedAudio
    from avatar_cascade.artefacts.keyframes import Keyframes
    from avatar_cascade.artefacts.timeline import plan_timeline
    from avatar_cascade.stages.inbetween.inbetween import inbetween_storyline

    frames = 4 * clips + 1
    tl = plan_timeline(frames * SR // fps, SR, fps, clip_frames=5)
    assert len(tl.clips) == clips
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (clips + 1, size, size, 3), generator=g, dtype=torch.uint8)
    aligned = AlignedAudio(tl, AudioTrack(torch.zeros(1, tl.num_samples), SR))
    return Keyframes(images, tl.seams, [None] * (clips + 1)), aligned, inbetween_storyline(tl, prompt)


# ----------------------------------------------------------------------------- stitcher (test_stitcher_*)

STITCH_SIZE = 64
STITCH_BITS = 8  # frame index encoded as 8 vertical black/white stripes (survives H.264)


def stitch(clips, timeline, audio, out, rt, *, metadata=None, keyframes=None, collect_frames=0, **kw):
    """``stitch_clips`` with ``StitcherSettings(**kw)``, colour matching off unless ``colour_match`` is given."""
    from avatar_cascade.stages.stitcher.settings import StitcherSettings
    from avatar_cascade.stages.stitcher.stitcher import stitch_clips

    settings = StitcherSettings(**{"colour_match": 0.0, **kw})
    return stitch_clips(
        clips, timeline, audio, out, settings, rt, metadata=metadata, keyframes=keyframes, collect_frames=collect_frames
    )


def marked_frame(index: int) -> np.ndarray:
    """A ``STITCH_SIZE`` square uint8 frame with ``index`` in binary as ``STITCH_BITS`` vertical stripes."""
    frame = np.zeros((STITCH_SIZE, STITCH_SIZE, 3), np.uint8)
    width = STITCH_SIZE // STITCH_BITS
    for b in range(STITCH_BITS):
        if index >> b & 1:
            frame[:, b * width : (b + 1) * width] = 255
    return frame


def read_marks(path) -> list[int]:
    """The :func:`marked_frame` index of every frame of the video at ``path``, in order."""
    import av

    width = STITCH_SIZE // STITCH_BITS
    marks = []
    with av.open(str(path)) as c:
        for f in c.decode(video=0):
            img = f.to_ndarray(format="rgb24").astype(np.float32)
            bits = [img[8:-8, b * width + 2 : (b + 1) * width - 2].mean() > 127 for b in range(STITCH_BITS)]
            marks.append(sum(1 << b for b, on in enumerate(bits) if on))
    return marks


def clip_frames(timeline, k: int) -> np.ndarray:
    """Clip ``k`` of ``timeline`` as :func:`marked_frame` frames (its first to its last frame, seams included)."""
    sub = timeline.clips[k]
    return np.stack([marked_frame(i) for i in range(sub.frame_start, sub.frame_end + 1)])


# ----------------------------------------------------------------------------- director (test_director_*)


def run_director(mllm, seconds=9.0, instruction="talk warmly", sr=SR, **kw):
    """``(storyline, timeline)``: the Director on ``mllm`` (or ``None``: rules only) for ``seconds`` of a quiet
    sine at ``sr`` and a random 32x24 image, 25 fps, clips of 81 frames; ``kw`` are ``DirectorSettings``."""
    from avatar_cascade.artefacts.timeline import plan_timeline
    from avatar_cascade.stages.director.director import direct
    from avatar_cascade.stages.director.settings import DirectorSettings

    tl = plan_timeline(int(seconds * sr), sr, 25, 81)
    wav = 0.1 * torch.sin(torch.arange(tl.num_samples) * (0.05 * SR / sr))[None]
    rt = cpu_runtime()
    story = direct(mllm, torch.rand(32, 24, 3), AudioTrack(wav, sr), instruction, tl, DirectorSettings(**kw), rt)
    return story, tl


def assert_covers(story, tl) -> None:
    """``story`` is a valid storyline for ``tl`` with one shot per clip, on the clips' frames."""
    import json

    from avatar_cascade.artefacts.storyline import Storyline

    Storyline.validate(json.loads(story.to_json()), tl)  # a valid storyline for this timeline
    assert [(s.frame_start, s.frame_end) for s in story.shots] == [(c.frame_start, c.frame_end) for c in tl.clips]


# ----------------------------------------------------------------------------- bad inputs (test_bad_inputs_*)


def write_png(path: Path, w: int, h: int, mode: str = "RGB") -> Path:
    """A ``w`` x ``h`` PNG of seeded noise in ``mode`` (``RGB``, ``L``, ``I;16``, or ``RGBA`` with the top half
    fully transparent); returns ``path``."""
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


def snapshot_files(root: Path) -> set[str]:
    """The files under ``root``, as paths relative to it."""
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def assert_clear(message: str, input_name: str, value: str) -> None:
    """``message`` is a clear error: it names ``input_name`` and ``value``, says a fix, and holds no traceback."""
    assert input_name in message, message
    assert value in message, message
    fix = message.split("Fix:", 1)
    assert len(fix) == 2 and len(fix[1].strip()) > 5, message
    assert "Traceback" not in message


def node_class(name: str):
    """The node class registered as ``name`` in ``nodes.NODE_CLASS_MAPPINGS`` (as ComfyUI looks it up)."""
    from nodes import NODE_CLASS_MAPPINGS

    return NODE_CLASS_MAPPINGS[name]


# ----------------------------------------------------------------------------- CLI runs on the demo models


def models_folder_with(tmp_path: Path, demo_models_dir: Path, *extra: Path) -> Path:
    """The demo models plus ``extra`` model folders (links), as an artist's ComfyUI ``models/`` folder."""
    models = tmp_path / "models"
    models.mkdir()
    for sub in [*demo_models_dir.iterdir(), *extra]:
        (models / sub.name).symlink_to(sub)
    return models


def demo_cli_args(models: Path, out: Path) -> list[str]:
    """``avatar_cascade run`` arguments for the sample portrait and speech on the demo DiT in ``models``."""
    from avatar_cascade.demo.models import DIT_FILE
    from avatar_cascade.media import sample_audio_path, sample_image_path

    return ["--image", str(sample_image_path()), "--audio", str(sample_audio_path()), "--prompt", "hi", "--dit",
            DIT_FILE, "--models", str(models), "--out", str(out)]  # fmt: skip

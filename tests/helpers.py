"""Plain helpers shared by the tests (the fixtures built on them are in ``conftest.py``).

Import them as ``from tests.helpers import ...``: ``conftest.py`` puts the repository root on
``sys.path`` (``python -m pytest`` and ``bash scripts/test.sh`` run from it as well), and the
subprocess tests (SIGKILL, 720p RSS) put it there themselves.
"""

from __future__ import annotations

import math
from pathlib import Path

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

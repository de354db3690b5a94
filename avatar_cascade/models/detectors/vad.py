"""Speech activity: Silero VAD (package ``silero-vad``, MIT) or a loudness fallback.

The ``silero-vad`` wheel ships its network as TorchScript, ONNX and **safetensors**
(``silero_vad/data/silero_vad_16k.safetensors``). The package's own loader runs the
TorchScript file (and sets ``torch.set_num_threads(1)`` on import), so this module never
imports it: :class:`SileroVAD` is the same network in plain torch (an STFT as a 258-filter
convolution, four 1-D convolutions, an LSTM cell, a 1x1 convolution) and loads the
safetensors file strictly. Its input is 16 kHz mono in chunks of 512 samples (32 ms), each
seen with the 64 samples before it; the LSTM state runs through the whole track. Given the TorchScript
file's weights, this port reproduces its probabilities to ~2e-6 (tests); the safetensors file the pack loads
is an earlier training of the same network, whose speech / pause decisions agree with it on ~95 % of chunks.

:func:`speech_activity` returns a :class:`SpeechActivity`: a probability every ``hop_s``
seconds plus the speech regions (hysteresis thresholds 0.5 / 0.35, as the package's
``get_speech_timestamps``), labelled with the method that produced it (``silero_vad`` or
``energy``: frame loudness within 30 dB of the track's loud level).
"""

from __future__ import annotations

import functools
import importlib.util
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
CHUNK = 512
CONTEXT = 64
THRESHOLD = 0.5
NEG_THRESHOLD = 0.35
ENERGY_RANGE_DB = 30.0
METHODS = ("auto", "silero_vad", "energy")
ENCODE_BLOCK = 4096  # chunks per convolution batch (~130 s of audio, ~20 MB of activations)
RESAMPLE_BLOCK_S = 60.0


class SileroVAD(nn.Module):
    """Silero VAD v5/v6 16 kHz network (the layer names of the package's safetensors file)."""

    def __init__(self) -> None:
        super().__init__()
        self.stft_conv = nn.Conv1d(1, 258, kernel_size=256, stride=128, bias=False)
        self.conv1 = nn.Conv1d(129, 128, 3, padding=1)
        self.conv2 = nn.Conv1d(128, 64, 3, stride=2, padding=1)
        self.conv3 = nn.Conv1d(64, 64, 3, stride=2, padding=1)
        self.conv4 = nn.Conv1d(64, 128, 3, padding=1)
        self.lstm_cell = nn.LSTMCell(128, 128)
        self.final_conv = nn.Conv1d(128, 1, 1)

    def encode(self, windows: torch.Tensor) -> torch.Tensor:
        """``[N, 576]`` windows (64 context + 512 samples) -> ``[N, 128]`` features (independent per chunk)."""
        x = F.pad(windows, (0, 64), mode="reflect")[:, None]
        x = self.stft_conv(x)
        x = (x[:, :129].square() + x[:, 129:].square()).sqrt()
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4):
            x = conv(x).relu()
        return x[..., 0]

    @torch.inference_mode()
    def forward(self, mono16k: torch.Tensor) -> torch.Tensor:
        """Speech probability of every 512-sample chunk of a 16 kHz mono track ``[T]``: ``[ceil(T/512)]``."""
        x = mono16k.float().flatten()
        n = max(1, -(-x.numel() // CHUNK))
        x = F.pad(x, (CONTEXT, n * CHUNK - x.numel()))
        windows = x.unfold(0, CHUNK + CONTEXT, CHUNK)[:n]  # a view: no copy of the track
        feats = torch.cat([self.encode(windows[i : i + ENCODE_BLOCK]) for i in range(0, n, ENCODE_BLOCK)])
        h = c = feats.new_zeros(1, 128)
        hs = []
        for t in range(n):  # the recurrent part is sequential; the convolutions above ran in one batch
            h, c = self.lstm_cell(feats[t : t + 1], (h, c))
            hs.append(h)
        out = self.final_conv(torch.cat(hs).relu()[..., None]).sigmoid()
        return out[:, 0, 0]


def silero_weights() -> Path | None:
    """The safetensors file inside the installed ``silero-vad`` package (found without importing it), or None."""
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "data" / "silero_vad_16k.safetensors"
    return path if path.is_file() else None


@functools.lru_cache(maxsize=1)
def load_silero_vad() -> SileroVAD | None:
    """The Silero network with the package's weights (strict load), or None when the package is missing."""
    path = silero_weights()
    if path is None:
        return None
    from safetensors.torch import load_file

    model = SileroVAD()
    model.load_state_dict(load_file(str(path)), strict=True)
    return model.eval()


@dataclass
class SpeechActivity:
    """Speech probability every ``hop_s`` seconds (from 0), the speech regions (seconds) and the method."""

    probs: torch.Tensor
    hop_s: float
    method: str
    regions: list[tuple[float, float]] = field(default_factory=list)

    def at(self, times_s: torch.Tensor | list[float]) -> torch.Tensor:
        """Probability at each time (nearest hop; 0 past the end)."""
        t = torch.as_tensor(times_s, dtype=torch.float64)
        idx = (t / self.hop_s).floor().long()
        ok = (idx >= 0) & (idx < self.probs.numel())
        return torch.where(ok, self.probs[idx.clamp(0, max(0, self.probs.numel() - 1))].double(), 0.0).float()

    def mean_over(self, start_s: float, end_s: float) -> float:
        """Mean probability over ``[start_s, end_s]`` (at least one hop)."""
        a = max(0, int(start_s / self.hop_s))
        b = max(a + 1, int(-(-end_s // self.hop_s)))
        seg = self.probs[a:b]
        return float(seg.mean()) if seg.numel() else 0.0

    def to_dict(self) -> dict:
        return {
            "method": self.method,
            "hop_s": self.hop_s,
            "regions": [[round(a, 3), round(b, 3)] for a, b in self.regions],
        }


def speech_regions(
    probs: torch.Tensor, hop_s: float, min_speech_s: float = 0.1, min_silence_s: float = 0.1
) -> list[tuple[float, float]]:
    """Speech spans (seconds) by hysteresis: start above 0.5, end after ``min_silence_s`` below 0.35."""
    regions: list[tuple[float, float]] = []
    start, below = None, 0
    need_quiet = max(1, int(round(min_silence_s / hop_s)))
    for i, p in enumerate(probs.tolist()):
        if start is None:
            if p >= THRESHOLD:
                start, below = i, 0
        elif p < NEG_THRESHOLD:
            below += 1
            if below >= need_quiet:
                regions.append((start, i - below + 1))
                start = None
        else:
            below = 0
    if start is not None:
        regions.append((start, len(probs)))
    return [(a * hop_s, b * hop_s) for a, b in regions if (b - a) * hop_s >= min_speech_s]


def energy_activity(mono: torch.Tensor, sample_rate: int, hop_s: float = CHUNK / SAMPLE_RATE) -> torch.Tensor:
    """Loudness fallback: per hop, 0 at 30 dB below the track's loud level (95th percentile) rising to 1 at it."""
    hop = max(1, int(round(hop_s * sample_rate)))
    n = max(1, -(-mono.numel() // hop))
    x = F.pad(mono.float().flatten(), (0, n * hop - mono.numel()))
    db = 10 * torch.log10(x.view(n, hop).square().mean(1).clamp_min(1e-12))
    loud = float(torch.quantile(db, 0.95)) if n > 1 else float(db[0])
    return ((db - (loud - ENERGY_RANGE_DB)) / ENERGY_RANGE_DB).clamp(0, 1)


def _to_16k(mono: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """``mono`` at 16 kHz, resampled in 60 s blocks (bounded memory; block edges do not matter to a VAD)."""
    from avatar_cascade.media.audio import resample

    if sample_rate == SAMPLE_RATE:
        return mono.float()
    block = int(RESAMPLE_BLOCK_S * sample_rate)
    return torch.cat(
        [resample(mono[i : i + block].float(), sample_rate, SAMPLE_RATE) for i in range(0, mono.numel(), block)]
    )


def speech_activity(mono: torch.Tensor, sample_rate: int, method: str = "auto") -> SpeechActivity:
    """Speech activity of a mono track ``[T]`` at ``sample_rate`` Hz.

    ``method``: ``"silero_vad"`` (needs the ``silero-vad`` package; raises otherwise), ``"energy"``, or
    ``"auto"`` (Silero when installed, else energy).
    """
    from avatar_cascade.core.errors import InputError

    if method not in METHODS:
        raise InputError("vad", method, "is not a speech-activity method", f"use one of {', '.join(METHODS)}")
    model = load_silero_vad() if method != "energy" else None
    if method == "silero_vad" and model is None:
        raise InputError(
            "vad",
            method,
            "the silero-vad package is not installed",
            "pip install 'avatar-cascade[detectors]' or use 'auto'",
        )
    hop_s = CHUNK / SAMPLE_RATE
    if model is None:
        probs, used = energy_activity(mono, sample_rate, hop_s), "energy"
    else:
        probs, used = model(_to_16k(mono, sample_rate)), "silero_vad"
    return SpeechActivity(probs=probs, hop_s=hop_s, method=used, regions=speech_regions(probs, hop_s))

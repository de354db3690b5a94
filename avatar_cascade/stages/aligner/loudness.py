"""Integrated loudness (ITU-R BS.1770-4) of long tracks in bounded memory, and normalisation to a target.

Same computation as ``torchaudio.functional.loudness`` (its K-weighting biquads,
400 ms gating blocks with 75 % overlap, absolute gate -70 LKFS, relative gate
-10 LU, channel weights 1, 1, 1, 1.41, 1.41) but run over 30-second pieces:
each piece is K-weighted after a one-second warm-up on the audio before it (the
filters' memory is far shorter), and block energies come from running sums, so
a 30-minute stereo track needs a few MB instead of several GB.
Units: loudness in LUFS (= LKFS), gains in dB.
"""

from __future__ import annotations

import logging
import math

import torch

from avatar_cascade.core.errors import InputError
from avatar_cascade.media import AudioTrack, to_mono

log = logging.getLogger(__name__)

GATE_S = 0.4
OVERLAP = 0.75
ABS_GATE = -70.0
BIAS = -0.691
WEIGHTS = (1.0, 1.0, 1.0, 1.41, 1.41)
_PIECE_S = 30.0
_WARMUP_S = 1.0


def _k_weight(x: torch.Tensor, sample_rate: int) -> torch.Tensor:
    import torchaudio.functional as AF

    x = AF.treble_biquad(x, sample_rate, 4.0, 1500.0, 1 / math.sqrt(2))
    return AF.highpass_biquad(x, sample_rate, 38.0, 0.5)


def block_energies(waveform: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """Mean K-weighted power of every 400 ms gating block, per channel: ``[C, blocks]`` float64."""
    c, n = waveform.shape
    gate = int(round(GATE_S * sample_rate))
    step = int(round(gate * (1 - OVERLAP)))
    blocks = (n - gate) // step + 1
    starts = torch.arange(blocks, dtype=torch.int64) * step
    need = torch.unique(torch.cat([starts, starts + gate]))  # prefix-sum positions, sorted
    prefix = torch.zeros(c, need.numel(), dtype=torch.float64)
    total = torch.zeros(c, dtype=torch.float64)
    piece, warm = int(_PIECE_S * sample_rate), int(_WARMUP_S * sample_rate)
    for p0 in range(0, n, piece):
        p1 = min(n, p0 + piece)
        w0 = max(0, p0 - warm)
        kw = _k_weight(waveform[:, w0:p1].float(), sample_rate)[:, p0 - w0 :]
        cs = torch.cumsum(kw.to(torch.float64).square(), dim=1)
        sel = (need > p0) & (need <= p1)
        prefix[:, sel] = total[:, None] + cs[:, need[sel] - p0 - 1]
        total = total + cs[:, -1]
    pos = {int(v): i for i, v in enumerate(need.tolist())}
    a = torch.tensor([pos[int(s)] for s in starts])
    b = torch.tensor([pos[int(s) + gate] for s in starts])
    return (prefix[:, b] - prefix[:, a]) / gate


def integrated_loudness(waveform: torch.Tensor, sample_rate: int) -> float:
    """BS.1770-4 integrated loudness of ``[C, T]`` audio (C <= 5) in LUFS; -inf when every block is gated out."""
    energy = block_energies(waveform, sample_rate)
    g = torch.tensor(WEIGHTS[: energy.shape[0]], dtype=torch.float64)[:, None]
    block_lufs = BIAS + 10 * torch.log10((g * energy).sum(dim=0))
    gated = block_lufs > ABS_GATE
    if not gated.any():
        return -math.inf
    rel = BIAS + 10 * math.log10(float((g[:, 0] * energy[:, gated].mean(dim=1)).sum())) - 10
    gated &= block_lufs > rel
    return BIAS + 10 * math.log10(float((g[:, 0] * energy[:, gated].mean(dim=1)).sum()))


def normalise_loudness(track: AudioTrack, target_lufs: float) -> tuple[AudioTrack, dict]:
    """Scale ``track`` to ``target_lufs`` integrated loudness.

    The gain is limited so the peak stays at or below full scale. Tracks too short to
    measure (< 0.4 s) or silent are returned unchanged. More than 5 channels are measured
    on their mono downmix. Returns the track and a report (measured LUFS, gain dB).
    """
    if not -70.0 <= target_lufs <= 0.0:
        raise InputError("loudness_lufs", target_lufs, "must be between -70 and 0 LUFS", "use -23 (broadcast)")
    wf = track.waveform
    if track.num_samples < int(round(GATE_S * track.sample_rate)):
        return track, {"skipped": "shorter than 0.4 s"}
    measured = integrated_loudness(wf if wf.shape[0] <= 5 else to_mono(wf)[None], track.sample_rate)
    if not math.isfinite(measured) or measured < ABS_GATE:
        return track, {"skipped": "silent"}
    gain_db = target_lufs - measured
    lo, hi = torch.aminmax(wf)
    peak = max(-float(lo), float(hi))
    limit_db = -20.0 * math.log10(peak) if peak > 0 else 0.0
    report = {
        "measured_lufs": round(measured, 2),
        "target_lufs": target_lufs,
        "gain_db": round(min(gain_db, limit_db), 2),
    }
    if gain_db > limit_db:
        log.warning("loudness: %.1f dB of gain needed, limited to %.1f dB by the peak", gain_db, limit_db)
        report["peak_limited"] = True
    return AudioTrack(wf * 10 ** (min(gain_db, limit_db) / 20), track.sample_rate), report

"""wav2vec2 features at the video frame rate, extracted once for the whole track.

Units: audio at ``FEATURE_RATE`` (16 kHz) samples; times in seconds; one
feature row per output video frame, taken at the frame's start time
``f / fps``. CNN frame ``k`` (reading samples ``[320k, 320k + 400)``) is placed
at time ``320k / 16000`` s, its first sample. This reproduces InfiniteTalk /
MultiTalk exactly: they stretch the CNN frames over ``seconds * 25`` rows with
``F.interpolate(..., align_corners=True)``, which puts their row ``j`` on CNN
frame ``2j`` — our row at time ``j / 25``. At other rates the same rule holds.

Result layout: ``[frames, layers, dim]`` float16, every hidden state kept
(``num_hidden_layers + 1`` rows per frame; row 0 is the feature projection
output, rows 1.. the transformer layers; InfiniteTalk reads rows 1..).

Two ways to reach the video rate (``mode``):

* ``"video"`` (default, what InfiniteTalk/MultiTalk were trained with): the
  CNN features (50 Hz) are linearly interpolated to the frame times *before* the
  transformer, which then runs at the video rate.
* ``"native"``: the whole model runs at 50 Hz and its hidden states are
  linearly interpolated to the frame times (what ComfyUI's own audio encoder
  output gives, see :func:`features_from_comfy_output`).

Long audio is processed in pieces. The CNN runs once over the whole track in
30-second blocks that are exact (blocks start on the CNN's 320-sample grid and
the first layer's GroupNorm uses statistics of the whole track, computed in a
streaming pass), and its features (50 rows/s x 512 values, ~180 MB for 30 min)
are kept. The transformer then runs in chunks of ``chunk_s`` seconds of output
rows, seeing ``context_s`` seconds more on both sides whose rows are dropped;
chunked and one-shot results differ only through attention beyond the context.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from avatar_cascade.core.errors import InputError
from avatar_cascade.core.runtime import Runtime
from avatar_cascade.media import resample
from avatar_cascade.models.offload import largest_weight

FEATURE_RATE = 16000
MODES = ("video", "native")
_STATS_BLOCK = 96_000  # first-conv-layer frames per block of the GroupNorm statistics pass (30 s at 16 kHz)
_CNN_BLOCK = 1500  # CNN output frames per block of the CNN pass (30 s)


@dataclass(frozen=True)
class ConvGeometry:
    """Where the CNN's output frames sit: frame ``k`` reads samples ``[k*stride, k*stride + receptive)``."""

    stride: int = 320
    receptive: int = 400

    def num_frames(self, num_samples: int) -> int:
        return 0 if num_samples < self.receptive else (num_samples - self.receptive) // self.stride + 1

    def position(self, times_s: torch.Tensor) -> torch.Tensor:
        """Fractional CNN frame index at ``times_s`` (float64; frame ``k`` sits at its first sample)."""
        return times_s * FEATURE_RATE / self.stride


def conv_geometry(config: Any) -> ConvGeometry:
    """Total stride and receptive field (samples) of a wav2vec2 CNN from its config."""
    stride, receptive = 1, 1
    for k, s in zip(config.conv_kernel, config.conv_stride):
        receptive += (k - 1) * stride
        stride *= s
    return ConvGeometry(stride=stride, receptive=receptive)


def interpolate_rows(rows: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Linear interpolation of ``rows`` ``[T, ...]`` at fractional indices (clamped to the ends)."""
    pos = positions.clamp(0, rows.shape[0] - 1)
    i0 = pos.floor().long()
    i1 = (i0 + 1).clamp(max=rows.shape[0] - 1)
    w = (pos - i0).to(torch.float32).view(-1, *([1] * (rows.ndim - 1)))
    a, b = rows[i0].float(), rows[i1].float()
    return a + (b - a) * w


# -- the model, piece by piece ----------------------------------------------


def _first_layer_stats(model: Any, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Whole-track mean/var per channel of the first conv layer (GroupNorm CNNs), streaming."""
    layer0 = model.feature_extractor.conv_layers[0]
    if not isinstance(getattr(layer0, "layer_norm", None), torch.nn.GroupNorm):
        return None
    k, s = layer0.conv.kernel_size[0], layer0.conv.stride[0]
    total = (x.numel() - k) // s + 1
    block = _STATS_BLOCK
    count, mean, m2 = 0, None, None
    for f0 in range(0, total, block):
        n = min(block, total - f0)
        h = layer0.conv(x[f0 * s : (f0 + n - 1) * s + k][None, None])[0].float()
        var_b, mean_b = torch.var_mean(h, dim=1, unbiased=False)
        if mean is None:
            count, mean, m2 = n, mean_b.double(), var_b.double() * n
            continue
        delta = mean_b.double() - mean
        new = count + n
        mean = mean + delta * (n / new)
        m2 = m2 + var_b.double() * n + delta.square() * (count * n / new)
        count = new
    return mean.float(), (m2 / count).float()


def _cnn(model: Any, x: torch.Tensor, stats: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
    """CNN features ``[frames, conv_dim]`` of ``x`` ``[T]``; GroupNorm with whole-track ``stats``."""
    fe = model.feature_extractor
    if stats is None:
        return fe(x[None])[0].transpose(0, 1)
    layer0 = fe.conv_layers[0]
    gn = layer0.layer_norm
    h = layer0.conv(x[None, None])
    mean, var = (t.to(h.dtype)[None, :, None] for t in stats)
    h = (h - mean) * torch.rsqrt(var + gn.eps)
    h = h * gn.weight[None, :, None] + gn.bias[None, :, None]
    h = layer0.activation(h)
    for layer in fe.conv_layers[1:]:
        h = layer(h)
    return h[0].transpose(0, 1)


def _transformer(model: Any, feats: torch.Tensor) -> torch.Tensor:
    """Feature projection + encoder on ``[T, conv_dim]``: every hidden state ``[T, layers + 1, hidden]``."""
    layers = model.encoder.layers
    states: list[torch.Tensor] = []

    def keep_input(_m, args, kwargs=None):
        states.append((args[0] if args else kwargs["hidden_states"])[0])

    def keep_output(_m, _args, out):
        states.append((out[0] if isinstance(out, tuple) else out)[0])

    hooks = [layers[0].register_forward_pre_hook(keep_input, with_kwargs=True)]
    hooks += [layer.register_forward_hook(keep_output) for layer in layers]
    try:
        hidden, _ = model.feature_projection(feats[None])
        model.encoder(hidden)
    finally:
        for h in hooks:
            h.remove()
    return torch.stack(states, dim=1)


# -- chunked extraction -----------------------------------------------------


def resample_long(x: torch.Tensor, sample_rate: int, target_rate: int, block_s: float = 30.0) -> torch.Tensor:
    """torchaudio's sinc resampling of a long mono ``[T]`` track in blocks (bounded memory, same result).

    Blocks start on the rate ratio's grid and read enough neighbouring samples for the
    filter, so every output sample sees exactly the input it sees in one pass.
    """
    if sample_rate == target_rate:
        return x
    g = math.gcd(sample_rate, target_rate)
    orig, new = sample_rate // g, target_rate // g
    n = x.numel()
    margin = orig * (math.ceil(4096 / orig) + 1)
    block = orig * max(1, int(block_s * sample_rate) // orig)
    if n <= block + 2 * margin:
        return resample(x, sample_rate, target_rate)
    out = x.new_empty(math.ceil(n * new / orig))
    for s in range(0, n, block):
        e = min(n, s + block)
        a, b = max(0, s - margin), min(n, e + margin)
        y = resample(x[a:b], sample_rate, target_rate)
        o_s = s * new // orig
        o_e = out.numel() if e == n else e * new // orig
        skip = (s - a) * new // orig
        out[o_s:o_e] = y[skip : skip + o_e - o_s]
    return out


def prepare_waveform(mono16: torch.Tensor, normalize: bool, receptive: int) -> torch.Tensor:
    """Zero-mean / unit-variance over the whole track (as ``Wav2Vec2FeatureExtractor``), padded to one CNN frame."""
    x = mono16.float()
    if normalize:
        var, mean = torch.var_mean(x, unbiased=False)
        x = (x - mean) / torch.sqrt(var + 1e-7)
    if x.numel() < receptive:
        x = torch.cat([x, x.new_zeros(receptive - x.numel())])
    return x


def cnn_features(model: Any, x: torch.Tensor, geo: ConvGeometry, runtime: Runtime) -> torch.Tensor:
    """CNN features of the whole prepared track ``[n_cnn, conv_dim]``, computed in exact blocks.

    Blocks start on the CNN's stride grid and read the receptive-field tail of the next
    block, and the first layer's GroupNorm uses whole-track statistics, so the result
    equals one pass over the whole track while memory stays at one block's activations.
    """
    stats = _first_layer_stats(model, x)
    n_cnn = geo.num_frames(x.numel())
    out = None
    for k0 in range(0, n_cnn, _CNN_BLOCK):
        runtime.check_interrupt()
        k1 = min(n_cnn, k0 + _CNN_BLOCK)
        part = _cnn(model, x[k0 * geo.stride : (k1 - 1) * geo.stride + geo.receptive], stats)
        if out is None:
            out = part.new_empty(n_cnn, part.shape[1])
        out[k0:k1] = part
    return out


def extract_frame_features(
    encoder: Any,
    mono16: torch.Tensor,
    frame_times_s: torch.Tensor,
    runtime: Runtime,
    mode: str = "video",
    chunk_s: float | None = 30.0,
    context_s: float = 4.0,
) -> torch.Tensor:
    """wav2vec2 hidden states at ``frame_times_s``: ``[N, layers + 1, hidden]`` float16.

    Args:
        encoder: an ``AudioEncoder`` (``models/audio_encoder.py``): its ``model`` and ``normalize``.
        mono16: mono waveform ``[T]`` at 16 kHz.
        frame_times_s: float64 ``[N]`` output times in seconds (increasing).
        runtime: device / progress / interrupt hooks.
        mode: ``"video"`` or ``"native"`` (see the module docstring).
        chunk_s: seconds of output per transformer pass; ``None`` = the whole track at once.
        context_s: seconds of extra features the transformer sees on each side of a chunk.
    """
    if mode not in MODES:
        raise InputError("feature_mode", mode, f"is not one of {', '.join(MODES)}", "use 'video' (InfiniteTalk)")
    if chunk_s is not None and not chunk_s > 0:
        raise InputError("chunk_s", chunk_s, "must be positive seconds (or None for one pass)", "use 30")
    if not context_s >= 0:
        raise InputError("context_s", context_s, "must be >= 0 seconds", "use 4")
    model = encoder.model
    geo = conv_geometry(model.config)
    n_out = frame_times_s.numel()
    pos = geo.position(frame_times_s.double())
    with runtime.use_models(*encoder.modules()), torch.no_grad():
        p = largest_weight(model)
        x = prepare_waveform(mono16, encoder.normalize, geo.receptive).to(p.device, p.dtype)
        cnn = cnn_features(model, x, geo, runtime)
        n_cnn = cnn.shape[0]
        if mode == "video":  # the transformer runs on rows at the frame times
            span_t = float(frame_times_s[-1] - frame_times_s[0])
            rate = (n_out - 1) / span_t if n_out > 1 and span_t > 0 else 1.0
            span = n_out if chunk_s is None else max(1, int(chunk_s * rate))
            ctx = n_out if chunk_s is None else int(math.ceil(context_s * rate))
            bounds = [*range(0, n_out, span), n_out]
        else:  # the transformer runs at the CNN rate; rows are grouped by the CNN frames they read
            span = n_cnn if chunk_s is None else max(1, int(chunk_s * FEATURE_RATE / geo.stride))
            ctx = n_cnn if chunk_s is None else int(math.ceil(context_s * FEATURE_RATE / geo.stride))
            bounds = _native_row_bounds(pos, n_cnn, span)
        out: torch.Tensor | None = None
        bar = runtime.progress(len(bounds) - 1, "audio features")
        try:
            for a, b in zip(bounds[:-1], bounds[1:]):
                runtime.check_interrupt()
                if mode == "video":
                    a2, b2 = max(0, a - ctx), min(n_out, b + ctx)
                    feats = interpolate_rows(cnn, pos[a2:b2]).to(cnn.dtype)
                    rows = _transformer(model, feats)[a - a2 : b - a2]
                else:
                    lo = max(0, min(n_cnn - 1, int(math.floor(float(pos[a])))))
                    hi = max(lo + 1, min(n_cnn, int(math.floor(float(pos[b - 1]))) + 2))
                    k0, k1 = max(0, lo - ctx), min(n_cnn, hi + ctx)
                    rows = interpolate_rows(_transformer(model, cnn[k0:k1]), pos[a:b] - k0)
                if out is None:
                    out = torch.empty(n_out, *rows.shape[1:], dtype=torch.float16)
                out[a:b] = rows.to("cpu", torch.float16)
                bar.update(1)
        finally:
            bar.close()
    return out


def _native_row_bounds(pos: torch.Tensor, n_cnn: int, span: int) -> list[int]:
    """Output-row boundaries so that chunk ``i`` holds the rows whose CNN position is in ``[i*span, (i+1)*span)``."""
    if span >= n_cnn:
        return [0, pos.numel()]
    edges = torch.arange(span, n_cnn, span, dtype=torch.float64)
    cuts = torch.searchsorted(pos.contiguous(), edges).tolist()
    return sorted({0, *cuts, pos.numel()})


# -- ComfyUI's AUDIO_ENCODER_OUTPUT -------------------------------------------


def features_from_comfy_output(
    output: Any, frame_times_s: torch.Tensor, duration_s: float, input_name: str = "audio_encoder_output"
) -> torch.Tensor:
    """ComfyUI ``AUDIO_ENCODER_OUTPUT`` (50 Hz wav2vec2 states) -> ``[N, layers, dim]`` float16 at ``frame_times_s``.

    Accepts ``{"encoded_audio": [1,T,C], "encoded_audio_all_layers": [[1,T,C], ...], "audio_samples": int}``;
    refuses a batch of more than one, a Whisper output (no all-layers list) and an
    output made from audio of a different length than ``duration_s`` (more than 0.1 s apart).
    """
    fix = "connect an Audio Encoder Encode output made from the same AUDIO, with a wav2vec2 audio encoder"
    if not isinstance(output, dict) or not output.get("encoded_audio_all_layers"):
        raise InputError(input_name, type(output).__name__, "is not a wav2vec2 AUDIO_ENCODER_OUTPUT", fix)
    layers = [torch.as_tensor(t) for t in output["encoded_audio_all_layers"]]
    if any(t.ndim != 3 for t in layers) or len({tuple(t.shape) for t in layers}) != 1:
        shapes = [tuple(t.shape) for t in layers]
        raise InputError(input_name, shapes, "expected every layer as [batch, frames, channels]", fix)
    if layers[0].shape[0] != 1:
        raise InputError(
            input_name, f"batch of {layers[0].shape[0]}", "only one audio track can drive a video", "encode one track"
        )
    samples = int(output.get("audio_samples", 0))
    if samples and abs(samples / FEATURE_RATE - duration_s) > 0.1:
        raise InputError(
            input_name,
            f"{samples / FEATURE_RATE:.2f} s of audio",
            f"was made from different audio than the timeline's ({duration_s:.2f} s)",
            fix,
        )
    stacked = torch.stack([t[0].cpu() for t in layers], dim=1)  # [T, layers, C], kept in its own dtype
    pos = ConvGeometry().position(frame_times_s.double())
    out = torch.empty(frame_times_s.numel(), *stacked.shape[1:], dtype=torch.float16)
    for a in range(0, out.shape[0], 4096):
        out[a : a + 4096] = interpolate_rows(stacked, pos[a : a + 4096]).half()
    return out

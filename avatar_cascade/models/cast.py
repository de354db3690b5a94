"""Weights stored in fp8, computed in the activations' dtype: ComfyUI's "manual cast" for the pack's own loaders.

An fp8 checkpoint (``float8_e4m3fn`` / ``float8_e5m2``, as Comfy-Org's ``*_fp8_e4m3fn.safetensors``) keeps its
Linear weights in fp8 in memory (one byte per weight, as in the file); :class:`CastLinear` casts each weight to
the input's dtype and device when the layer runs and drops the copy after, as ``comfy.ops.manual_cast`` does.
The values are exactly those of dequantizing the file (fp8 -> bfloat16 / float16 / float32 is exact), so the
output equals that of a dequantized load; only the resident bytes halve.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

FP8_DTYPES = tuple(getattr(torch, n) for n in ("float8_e4m3fn", "float8_e5m2") if hasattr(torch, n))


class CastLinear(torch.nn.Linear):
    """A Linear whose stored weight (and bias) may be fp8 or on another device: cast per call to the input's."""

    comfy_cast_weights = True  # ComfyUI's flag for layers that cast their own weights

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.to(device=x.device, dtype=x.dtype, non_blocking=True)
        b = None if self.bias is None else self.bias.to(device=x.device, dtype=x.dtype, non_blocking=True)
        return F.linear(x, w, b)


def is_fp8(t: torch.Tensor) -> bool:
    return t.dtype in FP8_DTYPES


def cast_fp8_linears(module: torch.nn.Module) -> int:
    """Turn every ``nn.Linear`` of ``module`` whose weight is fp8 into a :class:`CastLinear` (in place, the same
    parameters); returns how many."""
    n = 0
    for m in module.modules():
        if type(m) is torch.nn.Linear and is_fp8(m.weight):
            m.__class__ = CastLinear
            n += 1
    return n


def resident_bytes(module: torch.nn.Module) -> int:
    """Bytes of ``module``'s weights (parameters) as they are held in memory (computed buffers such as rotary
    tables are not weights and not counted)."""
    return sum(t.numel() * t.element_size() for t in module.parameters())


def keep_fp32(key: str, modules: list[str]) -> bool:
    """Whether ``key`` is inside one of diffusers' ``_keep_in_fp32_modules`` (norms, time embedder, ...)."""
    parts = key.split(".")
    return any(m in parts for m in modules)


def linear_weight_keys(module: torch.nn.Module, keep: list[str]) -> set[str]:
    """``<name>.weight`` of every ``nn.Linear`` of ``module`` outside the float32-only modules ``keep``."""
    return {f"{n}.weight" for n, m in module.named_modules() if type(m) is torch.nn.Linear and not keep_fp32(n, keep)}


def load_dtype(key: str, v: torch.Tensor, keep: list[str], dtype: torch.dtype, stay_fp8: bool) -> torch.Tensor:
    """The tensor as loaded: fp8 left as it is where it may stay, float32 in float32-only modules, else ``dtype``."""
    if not v.is_floating_point() or (stay_fp8 and is_fp8(v)):
        return v
    return v.to(torch.float32 if keep_fp32(key, keep) else dtype)

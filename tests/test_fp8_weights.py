"""fp8 checkpoints stay fp8 in memory with the pack's own DiT loader (cast per layer when they run).

A tiny Wan DiT saved the way Comfy-Org's ``*_fp8_e4m3fn.safetensors`` files are (every weight matrix in
``float8_e4m3fn``, biases and norms in higher precision) is loaded twice: as kept (the default) and dequantized
(``keep_fp8=False``, the old behaviour). The kept one holds about the file's bytes, not twice; both compute
exactly the same clip, because fp8 -> bfloat16 is exact.
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from avatar_cascade.core.runtime import Runtime
from avatar_cascade.models.cast import CastLinear, resident_bytes
from avatar_cascade.models.wan_dit import load_wan_dit
from avatar_cascade.sampling.conditioning import ClipRequest, encode_condition
from avatar_cascade.sampling.loop import sample_clips
from avatar_cascade.sampling.settings import SamplerSettings

FP8 = getattr(torch, "float8_e4m3fn", None)
pytestmark = pytest.mark.skipif(FP8 is None, reason="this torch has no float8_e4m3fn")


@pytest.fixture(scope="module")
def fp8_file(tmp_path_factory):
    from avatar_cascade.demo.models import tiny_comfy_dit_state_dict

    sd = tiny_comfy_dit_state_dict()
    out = {k: (v.to(FP8) if v.ndim == 2 else v.to(torch.bfloat16)) for k, v in sd.items()}
    path = tmp_path_factory.mktemp("fp8") / "wan_tiny_fp8_e4m3fn.safetensors"
    save_file({k: v.contiguous() for k, v in out.items()}, str(path))
    return path


def test_fp8_weights_stay_fp8_and_the_dit_holds_about_the_files_bytes(fp8_file):
    kept = load_wan_dit(fp8_file)
    old = load_wan_dit(fp8_file, keep_fp8=False)
    file_bytes = fp8_file.stat().st_size
    linears = [m for m in kept.transformer.modules() if isinstance(m, CastLinear)]
    assert linears and all(m.weight.dtype == FP8 for m in linears)
    assert resident_bytes(kept.transformer) < 1.25 * file_bytes  # about the file (fp32 norms / time embedder)
    assert resident_bytes(old.transformer) > 1.8 * file_bytes  # the dequantized load: twice (bf16 for fp8)


def test_an_fp8_dit_computes_exactly_what_its_dequantized_load_computes(fp8_file, tiny_te_wide, models):
    kept, old = load_wan_dit(fp8_file), load_wan_dit(fp8_file, keep_fp8=False)
    emb = tiny_te_wide.encode(["a person talks", ""])
    g = torch.Generator().manual_seed(0)
    first = torch.rand(3, 32, 32, generator=g) * 2 - 1
    reqs = [ClipRequest(5, {0: first}, emb[0], emb[1], seed=1)]
    cond = encode_condition(models[1], reqs, 32, 32)
    s = SamplerSettings(steps=2, guidance=4.0, shift=3.0)
    rt = Runtime(device=torch.device("cpu"), show_progress=False)
    a, b = sample_clips(kept, cond, reqs, s, rt), sample_clips(old, cond, reqs, s, rt)
    assert torch.equal(a, b)


@pytest.fixture(scope="module")
def tiny_te_wide(tmp_path_factory):
    from avatar_cascade.demo.models import tiny_wide_umt5_state_dict
    from avatar_cascade.models.text_encoder import load_text_encoder

    path = tmp_path_factory.mktemp("te") / "umt5_wide.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_wide_umt5_state_dict().items()}, str(path))
    return load_text_encoder(path)


def test_a_lora_on_an_fp8_dit_computes_what_it_computes_on_the_dequantized_dit(fp8_file, tmp_path):
    from avatar_cascade.demo.models import tiny_comfy_lora_state_dict
    from avatar_cascade.models.dit_runtime import prepare_dit
    from avatar_cascade.models.lora import apply_loras, lora_spec, stack_loras

    lora = tmp_path / "lora.safetensors"
    save_file(tiny_comfy_lora_state_dict(), str(lora))
    g = torch.Generator().manual_seed(0)
    x, e = torch.randn(1, 36, 2, 4, 4, generator=g), torch.randn(1, 16, 4096, generator=g)
    outs = []
    for keep in (True, False):
        dit = apply_loras(load_wan_dit(fp8_file, keep_fp8=keep), stack_loras(None, lora_spec(lora, 1.0)))
        prepare_dit(dit, torch.device("cpu"))
        lora_dtypes = {p.dtype for n, p in dit.transformer.named_parameters() if "lora_" in n}
        assert lora_dtypes == {torch.bfloat16}  # never fp8 (rounded, and unable to compute)
        args = dict(hidden_states=x.bfloat16(), timestep=torch.tensor([500.0]), encoder_hidden_states=e.bfloat16())
        with torch.no_grad():
            outs.append(dit.transformer(**args, return_dict=False)[0])
    assert torch.equal(outs[0], outs[1])

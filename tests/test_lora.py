"""Wan LoRAs as peft adapters: real tiny DiT files, LoRA files in the real key layouts."""

from __future__ import annotations

import functools
import logging

import pytest
import torch

from avatar_cascade.core.errors import ModelFileError
from avatar_cascade.models import lora as L
from avatar_cascade.models import wan_dit as W
from tests.helpers import save_safetensors as _save

RANK, ALPHA = 4, 2.0
X = torch.randn(1, 36, 5, 8, 8, generator=torch.Generator().manual_seed(5))
TEXT = torch.randn(1, 24, 32, generator=torch.Generator().manual_seed(6))


@functools.cache
def _base_state_dict(seed=0):
    """The tiny DiT's weights in the original Wan layout (built once)."""
    from avatar_cascade.demo.models import tiny_dit_state_dict

    return tiny_dit_state_dict(seed)


@pytest.fixture(scope="module")
def dit_file(tmp_path_factory):
    return _save(tmp_path_factory.mktemp("dit") / "tiny_dit.safetensors", _base_state_dict())


@pytest.fixture
def dit(dit_file):
    return W.load_wan_dit(dit_file)


def _factors(seed=1, blocks_only=True):
    """LoRA factors (down ``[r, in]``, up ``[out, r]``) for every linear layer of the tiny DiT's blocks,
    keyed by the ORIGINAL Wan module name (``blocks.0.self_attn.q``)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for key, w in _base_state_dict().items():
        if key.startswith("blocks.") and key.endswith(".weight") and w.ndim == 2:
            out[key[: -len(".weight")]] = (
                torch.randn(RANK, w.shape[1], generator=g) * 0.2,
                torch.randn(w.shape[0], RANK, generator=g) * 0.2,
            )
    return out


def _comfy(factors, prefix="diffusion_model."):
    sd = {}
    for name, (down, up) in factors.items():
        sd[f"{prefix}{name}.lora_down.weight"] = down
        sd[f"{prefix}{name}.lora_up.weight"] = up
        sd[f"{prefix}{name}.alpha"] = torch.tensor(ALPHA)
    return sd


def _kohya(factors):
    sd = {}
    for name, (down, up) in factors.items():
        base = "lora_unet_" + name.replace(".", "_")
        sd[f"{base}.lora_down.weight"] = down
        sd[f"{base}.lora_up.weight"] = up
        sd[f"{base}.alpha"] = torch.tensor(ALPHA)
    return sd


def _diffusers(factors):
    names = W.to_diffusers_layout({f"{n}.weight": None for n in factors})
    back = dict(zip(names, factors))  # same order: the converter renames key by key
    sd = {}
    for new in names:
        down, up = factors[back[new]]
        base = "transformer." + new[: -len(".weight")]
        sd[f"{base}.lora_A.weight"] = down * (ALPHA / RANK)  # diffusers files carry no alpha
        sd[f"{base}.lora_B.weight"] = up
    return sd


def _forward(module):
    with torch.no_grad():
        return module(X, torch.tensor([500]), TEXT, return_dict=False)[0]


@functools.cache
def _base_output(dit_file):
    return _forward(W.load_wan_dit(dit_file).transformer)


def _merged_output(dit_file, factors, strength):
    """Reference: the base weights with ``strength * alpha / r * up @ down`` added by hand."""
    sd = dict(_base_state_dict())
    for name, (down, up) in factors.items():
        sd[f"{name}.weight"] = sd[f"{name}.weight"] + strength * (ALPHA / RANK) * (up @ down)
    merged = W.load_wan_dit(_save(dit_file.parent / "merged.safetensors", sd))
    return _forward(merged.transformer)


@pytest.mark.parametrize("layout", ["comfyui", "comfyui model. prefix", "kohya/musubi", "diffusers"])
def test_lora_equals_a_manual_merge_in_every_layout(tmp_path, dit_file, dit, layout):
    factors = _factors()
    sd = {
        "comfyui": lambda: _comfy(factors),
        "comfyui model. prefix": lambda: _comfy(factors, "model.diffusion_model."),
        "kohya/musubi": lambda: _kohya(factors),
        "diffusers": lambda: _diffusers(factors),
    }[layout]()
    spec = L.lora_spec(_save(tmp_path / "lora.safetensors", sd), 0.8)
    with_lora = L.apply_loras(dit, [spec])
    assert with_lora.transformer is dit.transformer and with_lora.loras == (spec,)
    out = _forward(with_lora.transformer)
    expected = _merged_output(dit_file, factors, 0.8)
    assert (out - _base_output(dit_file)).abs().max() > 1e-3  # the LoRA does something
    torch.testing.assert_close(out, expected, atol=2e-5, rtol=1e-4)


def test_empty_stack_restores_the_base_exactly(tmp_path, dit):
    base = _forward(dit.transformer)
    spec = L.lora_spec(_save(tmp_path / "lora.safetensors", _comfy(_factors())), 1.0)
    L.apply_loras(dit, [spec])
    assert not torch.equal(_forward(dit.transformer), base)
    L.apply_loras(dit, [])
    assert torch.equal(_forward(dit.transformer), base)
    L.apply_loras(dit, [L.lora_spec(spec.path, 0.0)])  # strength 0 = off
    assert torch.equal(_forward(dit.transformer), base)


def test_changing_strength_reloads_nothing(tmp_path, dit_file, dit, monkeypatch):
    factors = _factors()
    spec = L.lora_spec(_save(tmp_path / "lora.safetensors", _comfy(factors)), 1.0)
    first = L.apply_loras(dit, [spec])
    t = first.transformer
    q = t.blocks[0].attn1.to_q
    base_weight, lora_a = q.base_layer.weight, q.lora_A[spec.adapter_name].weight
    snapshot = base_weight.detach().clone()

    reads = []
    monkeypatch.setattr(L, "read_wan_lora", lambda *a, **k: reads.append(a) or pytest.fail("LoRA file re-read"))
    half = L.apply_loras(dit, [L.lora_spec(spec.path, 0.5)])
    assert half.transformer is t and t.blocks[0].attn1.to_q is q
    assert q.base_layer.weight is base_weight and torch.equal(base_weight, snapshot)
    assert q.lora_A[spec.adapter_name].weight is lora_a and not reads
    torch.testing.assert_close(_forward(t), _merged_output(dit_file, factors, 0.5), atol=2e-5, rtol=1e-4)


def test_handles_with_different_stacks_share_one_model(tmp_path, dit):
    from avatar_cascade.models.lora import activate_loras

    spec = L.lora_spec(_save(tmp_path / "lora.safetensors", _comfy(_factors())), 1.0)
    plain, styled = L.apply_loras(dit, []), L.apply_loras(dit, [spec])
    activate_loras(plain)
    base = _forward(dit.transformer)
    activate_loras(styled)
    styled_out = _forward(dit.transformer)
    activate_loras(plain)
    assert torch.equal(_forward(dit.transformer), base) and not torch.equal(styled_out, base)
    assert plain.cache_identity() != styled.cache_identity()
    assert styled.cache_identity() == L.apply_loras(dit, [spec]).cache_identity()
    assert styled.cache_identity() != L.apply_loras(dit, [L.lora_spec(spec.path, 0.9)]).cache_identity()


def test_idle_adapters_are_evicted(tmp_path, dit):
    specs = [
        L.lora_spec(_save(tmp_path / f"lora{i}.safetensors", _comfy(_factors(seed=10 + i))), 1.0) for i in range(4)
    ]
    for spec in specs:
        L.apply_loras(dit, [spec])
    loaded = set(dit.transformer.peft_config)
    assert specs[-1].adapter_name in loaded and len(loaded) == 1 + L.MAX_IDLE_ADAPTERS
    assert specs[0].adapter_name not in loaded  # least recently used went first
    L.apply_loras(dit, [specs[0]])  # and comes back from its file when asked for again
    assert specs[0].adapter_name in dit.transformer.peft_config


def test_sdxl_lora_is_refused_with_a_guess(tmp_path, dit):
    sd = {
        "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 320),
        "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": torch.zeros(320, 4),
        "lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": torch.zeros(4, 768),
        "lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_up.weight": torch.zeros(3072, 4),
    }
    spec = L.lora_spec(_save(tmp_path / "sdxl_lora.safetensors", sd), 1.0)
    with pytest.raises(ModelFileError, match=r"this LoRA is for Stable Diffusion .*not a Wan DiT"):
        L.apply_loras(dit, [spec])
    assert not getattr(dit.transformer, "peft_config", None)  # nothing half-loaded


def test_flux_lora_and_wrong_size_wan_lora_are_refused(tmp_path, dit):
    flux = {"diffusion_model.double_blocks.0.img_attn.qkv.lora_A.weight": torch.zeros(4, 3072)}
    flux["diffusion_model.double_blocks.0.img_attn.qkv.lora_B.weight"] = torch.zeros(9216, 4)
    with pytest.raises(ModelFileError, match="for FLUX, not a Wan DiT"):
        L.apply_loras(dit, [L.lora_spec(_save(tmp_path / "flux.safetensors", flux), 1.0)])
    big = _comfy({"blocks.0.self_attn.q": (torch.zeros(4, 1536), torch.zeros(1536, 4))})
    with pytest.raises(ModelFileError, match="another size"):
        L.apply_loras(dit, [L.lora_spec(_save(tmp_path / "wan13b.safetensors", big), 1.0)])


def test_a_dit_file_is_not_accepted_as_a_lora(dit_file):
    with pytest.raises(ModelFileError, match="looks like a Wan DiT.*not a LoRA"):
        L.lora_spec(dit_file, 1.0)


def test_image_layers_of_an_i2v_lora_are_skipped_on_a_model_without_them(tmp_path, dit, caplog):
    factors = _factors()
    sd = _comfy(factors)
    sd["diffusion_model.blocks.0.cross_attn.k_img.lora_down.weight"] = torch.zeros(RANK, 24)
    sd["diffusion_model.blocks.0.cross_attn.k_img.lora_up.weight"] = torch.zeros(24, RANK)
    sd["diffusion_model.blocks.0.cross_attn.v_img.lora_down.weight"] = torch.zeros(RANK, 24)
    sd["diffusion_model.blocks.0.cross_attn.v_img.lora_up.weight"] = torch.zeros(24, RANK)
    path = _save(tmp_path / "i2v_lora.safetensors", sd)
    kept = L.read_wan_lora(path, dit.transformer)
    # the two factors of every block layer are kept; the four image-attention tensors are not
    assert len(kept) == 2 * len(factors)
    assert not any(k.startswith("blocks.0.attn2.add_") for k in kept)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="avatar_cascade.models.lora"):
        L.apply_loras(dit, [L.lora_spec(path, 1.0)])
    assert [r.levelno for r in caplog.records] == [logging.WARNING]  # the user is told (once)


def test_expert_loras_go_to_their_expert(tmp_path, dit_file):
    low_file = _save(tmp_path / "low.safetensors", _base_state_dict(1))
    pair = W.load_wan_experts(dit_file, low_file, boundary_ratio=0.9)
    high_base, low_base = _forward(pair.transformer), _forward(pair.transformer_2)
    spec = L.lora_spec(_save(tmp_path / "high_lora.safetensors", _comfy(_factors())), 1.0, apply_to="high_noise")
    styled = L.apply_loras(pair, [spec])
    assert not torch.equal(_forward(styled.transformer), high_base)
    assert torch.equal(_forward(styled.transformer_2), low_base)
    assert not getattr(styled.transformer_2, "peft_config", None)


def test_lora_nodes_chain_and_apply(tmp_path, dit, monkeypatch):
    from nodes import NODE_CLASS_MAPPINGS

    monkeypatch.setenv("AVATAR_CASCADE_MODELS", str(tmp_path / "models"))
    _save(tmp_path / "models" / "loras" / "a.safetensors", _comfy(_factors(seed=1)))
    _save(tmp_path / "models" / "loras" / "style" / "b.safetensors", _kohya(_factors(seed=2)))
    stack_node = NODE_CLASS_MAPPINGS["AvatarCascadeLoRAStack"]
    assert stack_node.INPUT_TYPES()["required"]["lora_name"][0] == ["a.safetensors", "style/b.safetensors"]
    (first,) = stack_node().stack("a.safetensors", 1.0, "all")
    (both,) = stack_node().stack("style/b.safetensors", 0.5, "all", prev_lora=first)
    assert [s.path.name for s in both] == ["a.safetensors", "b.safetensors"] and both[1].strength == 0.5
    (styled,) = NODE_CLASS_MAPPINGS["AvatarCascadeApplyLoRA"]().apply(dit, both)
    assert styled.loras == both and styled.transformer is dit.transformer
    with pytest.raises(ModelFileError, match="lora_name"):
        stack_node().stack("../escape.safetensors", 1.0, "all")

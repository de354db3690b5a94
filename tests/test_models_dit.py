"""Wan DiT loading: real tiny DiTs written in every key layout, read back through the real loader;
full-size variant detection, fp8 dequantisation, Wan 2.2 expert pairs, attention / offload choices
and the DiT loader node. (VAE, text and audio encoders: ``test_models_vae_encoders.py``; model-file
errors: ``test_models_files.py``.)"""

from __future__ import annotations

import time

import pytest
import torch

from avatar_cascade.core.errors import ModelFileError
from avatar_cascade.demo.layouts import dit_to_original_layout
from avatar_cascade.models import wan_dit as W
from avatar_cascade.models.files import dequantize
from tests.helpers import meta_shapes as _meta_shapes
from tests.helpers import save_safetensors as _save

# ``tiny_dit_diffusers`` (the tiny demo DiT in the diffusers layout, per module) comes from conftest.py.


# ---------------------------------------------------------------- DiT


@pytest.mark.parametrize("layout", ["original", "model.diffusion_model.", "diffusion_model.", "diffusers"])
def test_tiny_dit_round_trips_in_every_layout(tmp_path, tiny_dit_diffusers, layout):
    if layout == "diffusers":
        sd = tiny_dit_diffusers
    else:
        sd = dit_to_original_layout(tiny_dit_diffusers)
        if layout != "original":
            sd = {layout + k: v for k, v in sd.items()}
    dit = W.load_wan_dit(_save(tmp_path / "dit.safetensors", sd))
    assert dit.variant == "avatar-cascade-tiny-wan"
    assert dit.in_channels == 36 and not dit.has_image_embedder
    loaded = dit.transformer.state_dict()
    assert set(loaded) == set(tiny_dit_diffusers)
    for k, v in tiny_dit_diffusers.items():
        assert torch.equal(loaded[k], v), k


def test_original_layout_uses_wan_key_names(tiny_dit_diffusers):
    keys = set(dit_to_original_layout(tiny_dit_diffusers))
    for k in (
        "patch_embedding.weight",
        "blocks.0.self_attn.q.weight",
        "blocks.1.cross_attn.o.bias",
        "blocks.0.norm3.weight",
        "blocks.0.modulation",
        "blocks.0.ffn.0.weight",
        "text_embedding.0.weight",
        "time_embedding.2.weight",
        "time_projection.1.weight",
        "head.head.weight",
        "head.modulation",
    ):
        assert k in keys
    assert not any(k.startswith("condition_embedder") or ".attn1." in k for k in keys)


def test_tiny_dit_forward_is_fast_on_cpu(tmp_path, tiny_dit_diffusers):
    dit = W.load_wan_dit(_save(tmp_path / "dit.safetensors", dit_to_original_layout(tiny_dit_diffusers)))
    x, text = torch.randn(1, 36, 5, 8, 8), torch.randn(1, 24, 32)
    best = float("inf")
    with torch.no_grad():
        for _ in range(3):
            t0 = time.perf_counter()
            out = dit.transformer(x, torch.tensor([500]), text, return_dict=False)[0]
            best = min(best, time.perf_counter() - t0)
    assert out.shape == (1, 16, 5, 8, 8) and torch.isfinite(out).all()
    assert best < 1.0


@pytest.mark.parametrize("variant", [v for v in W.DIT_VARIANTS])
def test_full_size_variants_are_detected_without_weights(variant):
    from diffusers import WanTransformer3DModel

    shapes = _meta_shapes(WanTransformer3DModel, W.load_bundled_config(variant))
    original = dit_to_original_layout(shapes)
    assert W.detect_dit_variant(original) == variant
    assert W.detect_dit_variant({"model.diffusion_model." + k: s for k, s in original.items()}) == variant
    assert W.detect_dit_variant(shapes) == variant
    # the original layout converts back to exactly the model's keys (what strict loading needs)
    assert set(W.to_diffusers_layout(original)) == set(shapes)


def test_flf2v_position_table_is_renamed():
    converted = W.to_diffusers_layout({"img_emb.emb_pos": (1, 514, 1280), "patch_embedding.weight": (1,)})
    assert converted["condition_embedder.image_embedder.pos_embed"] == (1, 514, 1280)
    assert "img_emb.emb_pos" not in converted


def test_unknown_wan_shape_is_derived_from_128_wide_heads():
    from diffusers import WanTransformer3DModel

    cfg = W.load_bundled_config("wan2.1-t2v-1.3b") | {"num_layers": 2, "in_channels": 36}
    shapes = dit_to_original_layout(_meta_shapes(WanTransformer3DModel, cfg))
    assert W.detect_dit_variant(shapes) == W.CUSTOM_VARIANT


def test_scaled_fp8_dit_is_dequantized(tmp_path, tiny_dit_diffusers):
    sd = dit_to_original_layout(tiny_dit_diffusers)
    stored, expected = {"scaled_fp8": torch.zeros(0, dtype=torch.float8_e4m3fn)}, {}
    for k, v in sd.items():
        if k.endswith(".weight") and v.ndim == 2:
            scale = v.abs().max() / 448.0
            stored[k] = (v / scale).to(torch.float8_e4m3fn)
            stored[k[: -len("weight")] + "scale_weight"] = scale.reshape(())
            expected[k] = stored[k].float() * scale
        else:
            stored[k] = v
    dit = W.load_wan_dit(_save(tmp_path / "dit_fp8.safetensors", stored), dtype=torch.float32)
    loaded = dit_to_original_layout(dit.transformer.state_dict())
    for k, v in expected.items():
        assert torch.equal(loaded[k], v), k


def test_dequantize_leaves_plain_files_alone():
    sd = {"a.weight": torch.ones(2, 2)}
    assert dequantize(sd, torch.float32) is sd


def _tiny_dit_file(tmp_path, tiny_dit_diffusers, name="dit.safetensors", seed=None):
    if seed is None:
        return _save(tmp_path / name, dit_to_original_layout(tiny_dit_diffusers))
    from avatar_cascade.demo.models import tiny_dit_state_dict

    return _save(tmp_path / name, tiny_dit_state_dict(seed))


def test_wan22_expert_pair_loads_as_one_handle(tmp_path, tiny_dit_diffusers):
    high = _tiny_dit_file(tmp_path, tiny_dit_diffusers, "high_noise.safetensors")
    low = _tiny_dit_file(tmp_path, tiny_dit_diffusers, "low_noise.safetensors", seed=1)
    pair = W.load_wan_experts(high, low, boundary_ratio=0.875)
    assert pair.transformer is not pair.transformer_2 and pair.boundary_ratio == 0.875
    assert [name for name, _ in pair.experts()] == ["high_noise", "low_noise"]
    assert pair.expert_at(875.0)[0] == "high_noise" and pair.expert_at(874.0)[0] == "low_noise"
    assert pair.modules() == [pair.transformer, pair.transformer_2]
    single = W.load_wan_dit(high)
    assert single.expert_at(0.0) == ("all", single.transformer) and single.modules() == [single.transformer]
    assert pair.cache_identity() != single.cache_identity()
    import dataclasses

    assert dataclasses.replace(pair, boundary_ratio=0.9).cache_identity() != pair.cache_identity()
    assert dataclasses.replace(pair, attention="sage").cache_identity() == pair.cache_identity()


def test_expert_pair_of_different_shapes_is_refused(tmp_path, tiny_dit_diffusers):
    from diffusers import WanTransformer3DModel

    high = _tiny_dit_file(tmp_path, tiny_dit_diffusers)
    flf = WanTransformer3DModel.from_config(W.load_bundled_config("avatar-cascade-tiny-wan-flf2v"))
    other = _save(tmp_path / "flf.safetensors", dit_to_original_layout(flf.state_dict()))
    with pytest.raises(ModelFileError, match="low_noise_dit_name.*does not have the shape"):
        W.load_wan_experts(high, other)
    from avatar_cascade.core.errors import InputError

    with pytest.raises(InputError, match="boundary"):
        W.load_wan_experts(high, high, boundary_ratio=1.5)


def test_attention_choice_resolves_per_device(monkeypatch):
    from avatar_cascade.core.errors import InputError
    from avatar_cascade.models import attention as R
    from avatar_cascade.models import offload as O

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert all(R.resolve_attention(a, cpu) == "sdpa" for a in R.ATTENTION_CHOICES)
    monkeypatch.setattr(R, "_installed", lambda package: False)
    assert R.resolve_attention("auto", cuda) == "sdpa"
    with pytest.raises(InputError, match="attention = 'flash'.*flash_attn"):
        R.resolve_attention("flash", cuda)
    monkeypatch.setattr(R, "_installed", lambda package: package == "flash_attn")
    assert R.resolve_attention("auto", cuda) == "flash"
    with pytest.raises(InputError, match="sageattention"):
        R.resolve_attention("sage", cuda)
    with pytest.raises(InputError, match="offload"):
        O.check_offload("disk")


def test_group_offloading_keeps_results_and_loras(tmp_path, tiny_dit_diffusers):
    """diffusers group offloading (CPU onload device here) gives the same output, also after a LoRA is added."""
    from avatar_cascade.models import dit_runtime as R
    from avatar_cascade.models.lora import apply_loras, lora_spec
    from avatar_cascade.models.offload import is_group_offloaded

    path = _tiny_dit_file(tmp_path, tiny_dit_diffusers)
    x, text, t = torch.randn(1, 36, 5, 8, 8), torch.randn(1, 24, 32), torch.tensor([500])
    plain, offloaded = W.load_wan_dit(path), W.load_wan_dit(path)
    assert R.configure_dit(offloaded, offload="block", device=torch.device("cpu")).offload == "block"
    assert not is_group_offloaded(offloaded.transformer)  # CPU: recorded, not applied
    offloaded.transformer.enable_group_offload(torch.device("cpu"), offload_type="block_level", num_blocks_per_group=1)
    assert is_group_offloaded(offloaded.transformer)
    g = torch.Generator().manual_seed(0)
    lora = {}
    for k, v in dit_to_original_layout(tiny_dit_diffusers).items():
        if k.startswith("blocks.") and k.endswith(".weight") and v.ndim == 2:
            lora[f"diffusion_model.{k[:-7]}.lora_A.weight"] = torch.randn(2, v.shape[1], generator=g) * 0.1
            lora[f"diffusion_model.{k[:-7]}.lora_B.weight"] = torch.randn(v.shape[0], 2, generator=g) * 0.1
    spec = lora_spec(_save(tmp_path / "lora.safetensors", lora), 0.7)
    outs = []
    for dit in (plain, offloaded):
        with torch.no_grad():
            base = dit.transformer(x, t, text, return_dict=False)[0]
            apply_loras(dit, [spec])
            outs.append((base, dit.transformer(x, t, text, return_dict=False)[0]))
    assert is_group_offloaded(offloaded.transformer)
    torch.testing.assert_close(outs[1][0], outs[0][0])
    torch.testing.assert_close(outs[1][1], outs[0][1])
    assert (outs[0][1] - outs[0][0]).abs().max() > 1e-3


def test_dit_loader_node_options(tmp_path, tiny_dit_diffusers, monkeypatch):
    from nodes import NODE_CLASS_MAPPINGS

    monkeypatch.setenv("AVATAR_CASCADE_MODELS", str(tmp_path / "models"))
    folder = tmp_path / "models" / "diffusion_models"
    _tiny_dit_file(folder, tiny_dit_diffusers, "wan_high.safetensors")
    _tiny_dit_file(folder, tiny_dit_diffusers, "wan_low.safetensors", seed=1)
    node = NODE_CLASS_MAPPINGS["AvatarCascadeDiTLoader"]
    optional = node.INPUT_TYPES()["optional"]
    assert optional["low_noise_dit_name"][0] == ["none", "wan_high.safetensors", "wan_low.safetensors"]
    (single,) = node().load("wan_high.safetensors")
    assert single.transformer_2 is None and single.attention == "auto" and single.offload == "none"
    (pair,) = node().load("wan_high.safetensors", "wan_low.safetensors", 0.875, "sdpa", "block")
    assert pair.transformer_2 is not None and pair.boundary_ratio == 0.875
    assert (pair.attention, pair.offload) == ("sdpa", "block")

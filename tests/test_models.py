"""Model loaders: real tiny models written in the real layouts, read back through the real loaders."""

from __future__ import annotations

import os
import time

import pytest
import torch

from avatar_cascade.core.errors import ModelFileError
from avatar_cascade.demo.layouts import dit_to_original_layout, vae_to_original_layout
from avatar_cascade.models import audio_encoder as A
from avatar_cascade.models import text_encoder as T
from avatar_cascade.models import wan_dit as W
from avatar_cascade.models import wan_vae as V
from avatar_cascade.models.files import dequantize, file_identity, resolve_model_path
from tests.helpers import save_safetensors as _save


def _meta_shapes(cls, config):
    from accelerate import init_empty_weights

    with init_empty_weights():
        model = cls(**config) if not hasattr(cls, "from_config") else cls.from_config(config)
    assert all(p.device.type == "meta" for p in model.parameters())
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def tiny_dit_diffusers():
    from avatar_cascade.demo.models import tiny_dit_state_dict

    return W.to_diffusers_layout(tiny_dit_state_dict(0))


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


# ---------------------------------------------------------------- VAE


@pytest.fixture(scope="module")
def tiny_vae_file(tmp_path_factory):
    from avatar_cascade.demo.models import tiny_vae_state_dict

    original = tiny_vae_state_dict(0)
    return _save(tmp_path_factory.mktemp("vae") / "vae.safetensors", original), original


def test_vae_round_trips_in_original_and_diffusers_layouts(tmp_path, tiny_vae_file):
    from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers

    path, original = tiny_vae_file
    reference = convert_wan_vae_to_diffusers(dict(original))
    for p in (path, _save(tmp_path / "diffusers.safetensors", reference)):
        vae = V.load_wan_vae(p)
        loaded = vae.vae.state_dict()
        assert set(loaded) == set(reference)
        assert all(torch.equal(loaded[k], v) for k, v in reference.items())
    assert (vae.z_dim, vae.spatial_factor, vae.temporal_factor) == (16, 8, 4)


def test_vae_encode_decode_shapes_and_normalisation(tiny_vae_file):
    vae = V.load_wan_vae(tiny_vae_file[0])
    video = torch.rand(1, 3, 5, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    latents = vae.encode(video)
    assert latents.shape == (1, 16, 2, 8, 8)
    decoded = vae.decode(latents)
    assert decoded.shape == (1, 3, 5, 64, 64)
    assert decoded.min() >= -1 and decoded.max() <= 1
    # normalisation as in diffusers' Wan pipelines: (mode - mean) / std, and back
    small = video[:, :, :1, :16, :16]
    with torch.no_grad():
        mode = vae.vae.encode(small).latent_dist.mode()
    mean = torch.tensor(vae.vae.config.latents_mean).view(1, 16, 1, 1, 1)
    std = torch.tensor(vae.vae.config.latents_std).view(1, 16, 1, 1, 1)
    torch.testing.assert_close(vae.encode(small), (mode - mean) / std)
    with torch.no_grad():
        raw = vae.vae.decode(mode, return_dict=False)[0].clamp(-1, 1)
    torch.testing.assert_close(vae.decode((mode - mean) / std), raw, atol=1e-5, rtol=1e-4)


def test_full_size_vae_variants_are_detected():
    from diffusers import AutoencoderKLWan

    wan21 = _meta_shapes(AutoencoderKLWan, V.load_bundled_config("wan2.1-vae"))
    assert V.detect_vae_variant(vae_to_original_layout(wan21)) == "wan2.1-vae"
    wan22 = _meta_shapes(AutoencoderKLWan, V.load_bundled_config("wan2.2-vae"))
    assert V.detect_vae_variant(wan22) == "wan2.2-vae"
    original22 = {
        "conv1.weight": (96, 96, 1, 1, 1),
        "encoder.conv1.weight": (160, 12, 3, 3, 3),
        "decoder.middle.0.residual.0.gamma": (1024, 1, 1, 1),
        "decoder.upsamples.0.upsamples.0.residual.2.weight": (1024, 1024, 3, 3, 3),
    }
    with pytest.raises(ModelFileError, match="vae_name.*Wan 2.2 VAE in the original layout"):
        V.detect_vae_variant(original22)


# ---------------------------------------------------------------- text encoder


@pytest.fixture(scope="module")
def tiny_te(tmp_path_factory):
    from avatar_cascade.demo.models import tiny_umt5_state_dict

    sd = tiny_umt5_state_dict(0)
    path = _save(tmp_path_factory.mktemp("te") / "umt5.safetensors", sd)
    return T.load_text_encoder(path), sd


def test_umt5_round_trips_with_its_tokenizer(tiny_te):
    te, sd = tiny_te
    loaded = te.model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in sd.items() if k != "spiece_model")
    assert loaded["encoder.embed_tokens.weight"].data_ptr() == loaded["shared.weight"].data_ptr()
    ids = te.tokenizer("a calm smile").input_ids
    assert ids[-1] == 1 and 2 not in ids  # eos appended, no unknown pieces


def test_text_encoder_zeroes_positions_past_each_prompt(tiny_te):
    te, _ = tiny_te
    te.max_length = 24
    prompts = ["a calm smile", "  the  woman sings a slow song in a warm room &amp; smiles "]
    emb = te.encode(prompts)
    assert emb.shape == (2, 24, 32)
    for i, p in enumerate(prompts):
        n = len(te.tokenizer(T.prompt_clean(p)).input_ids)
        assert (emb[i, :n].abs().sum(-1) > 0).all()
        assert (emb[i, n:] == 0).all()
        with torch.no_grad():
            ids = torch.tensor([te.tokenizer(T.prompt_clean(p)).input_ids + [0] * (24 - n)])
            mask = (torch.arange(24) < n).long()[None]
            direct = te.model(ids, mask).last_hidden_state
        torch.testing.assert_close(emb[i, :n], direct[0, :n])
    assert T.prompt_clean("  a &amp;amp; b \n c ") == "a & b c"


def test_full_size_umt5_is_detected_and_t5_is_refused():
    from transformers import T5Config, T5EncoderModel, UMT5Config, UMT5EncoderModel

    cfg = T.load_bundled_config("umt5-xxl")
    cfg.pop("architectures")
    shapes = _meta_shapes(lambda **c: UMT5EncoderModel(UMT5Config(**c)), cfg)
    assert T.detect_umt5_variant(shapes) == "umt5-xxl"
    t5 = _meta_shapes(
        lambda **c: T5EncoderModel(T5Config(**c)),
        {
            "d_model": 16,
            "d_ff": 32,
            "num_layers": 2,
            "num_heads": 2,
            "d_kv": 8,
            "vocab_size": 50,
            "feed_forward_proj": "gated-gelu",
        },
    )
    with pytest.raises(ModelFileError, match="text_encoder_name.*T5-XXL.*not UMT5"):
        T.detect_umt5_variant(t5)


def test_text_encoder_without_tokenizer_is_refused(tmp_path, tiny_te):
    _, sd = tiny_te
    path = _save(tmp_path / "no_spiece.safetensors", {k: v for k, v in sd.items() if k != "spiece_model"})
    with pytest.raises(ModelFileError, match="text_encoder_name.*spiece_model"):
        T.load_text_encoder(path)


# ---------------------------------------------------------------- audio encoder


@pytest.mark.parametrize("prefix", ["", "wav2vec2."])
def test_wav2vec2_round_trips_and_gives_all_layers_at_50_fps(tmp_path, prefix):
    from avatar_cascade.demo.models import tiny_wav2vec2_state_dict

    sd = tiny_wav2vec2_state_dict(0)
    enc = A.load_audio_encoder(_save(tmp_path / "w2v.safetensors", {prefix + k: v for k, v in sd.items()}))
    loaded = enc.model.state_dict()
    assert set(loaded) == set(sd) and all(torch.equal(loaded[k], v) for k, v in sd.items())
    wave = torch.randn(32000, generator=torch.Generator().manual_seed(0))
    hidden = enc.encode(wave)
    assert hidden.shape[0] == enc.num_layers + 1 == 3
    assert 98 <= hidden.shape[1] <= 100 and hidden.shape[2] == 32
    torch.testing.assert_close(enc.encode(wave * 3 + 0.5), hidden, atol=1e-4, rtol=1e-4)  # normalised input


def test_wav2vec2_weight_norm_names_are_accepted(tmp_path):
    from avatar_cascade.demo.models import tiny_wav2vec2_state_dict

    sd = tiny_wav2vec2_state_dict(0)
    pre = "encoder.pos_conv_embed.conv.parametrizations.weight."
    old = {
        k.replace(pre + "original0", "encoder.pos_conv_embed.conv.weight_g").replace(
            pre + "original1", "encoder.pos_conv_embed.conv.weight_v"
        ): v
        for k, v in sd.items()
    }
    old["lm_head.weight"] = torch.zeros(4, 32)  # a CTC head is ignored
    enc = A.load_audio_encoder(_save(tmp_path / "w2v_old.safetensors", old))
    assert torch.equal(enc.model.state_dict()[pre + "original1"], sd[pre + "original1"])


@pytest.mark.parametrize("variant", ["wav2vec2-base", "wav2vec2-large-xlsr-53"])
def test_full_size_wav2vec2_is_detected(variant):
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    cfg = A.load_bundled_config(variant)
    cfg.pop("architectures")
    shapes = _meta_shapes(lambda **c: Wav2Vec2Model(Wav2Vec2Config(**c)), cfg)
    assert A.detect_wav2vec2_variant(shapes, path="audio_encoders/w2v.safetensors") == variant
    if variant == "wav2vec2-base":
        assert A.detect_wav2vec2_variant(shapes, path="chinese-wav2vec2-base-fp16.safetensors") == (
            "chinese-wav2vec2-base"
        )


# ---------------------------------------------------------------- clear errors


def test_vae_chosen_as_dit_says_what_it_is(tiny_vae_file):
    with pytest.raises(ModelFileError, match=r"dit_name = .*looks like a Wan VAE.*VAE loader"):
        W.load_wan_dit(tiny_vae_file[0], input_name="dit_name")


def test_dit_chosen_as_vae_and_text_encoder_as_audio_encoder(tmp_path, tiny_dit_diffusers, tiny_te):
    dit_path = _save(tmp_path / "dit.safetensors", dit_to_original_layout(tiny_dit_diffusers))
    with pytest.raises(ModelFileError, match=r"vae_name = .*looks like a Wan DiT.*DiT loader"):
        V.load_wan_vae(dit_path)
    te_path = _save(tmp_path / "te.safetensors", tiny_te[1])
    with pytest.raises(ModelFileError, match=r"audio_encoder_name = .*looks like a T5/UMT5 text encoder"):
        A.load_audio_encoder(te_path)


def test_truncated_zero_byte_and_pickle_files_are_refused(tmp_path, tiny_dit_diffusers):
    good = _save(tmp_path / "good.safetensors", dit_to_original_layout(tiny_dit_diffusers))
    data = good.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match=r"dit_name = .*cut\.safetensors.*truncated or not a safetensors file"):
        W.load_wan_dit(tmp_path / "cut.safetensors")
    (tmp_path / "empty.safetensors").write_bytes(b"")
    with pytest.raises(ModelFileError, match=r"dit_name = .*empty\.safetensors.*empty \(0 bytes\)"):
        W.load_wan_dit(tmp_path / "empty.safetensors")
    (tmp_path / "model.ckpt").write_bytes(b"not really a pickle")
    with pytest.raises(ModelFileError, match=r"vae_name = .*model\.ckpt.*only \.safetensors files are loaded"):
        V.load_wan_vae(tmp_path / "model.ckpt")


def test_weights_that_do_not_fit_are_refused(tmp_path, tiny_dit_diffusers):
    sd = dit_to_original_layout(tiny_dit_diffusers)
    sd["blocks.0.extra.weight"] = torch.zeros(2)
    with pytest.raises(ModelFileError, match=r"dit_name = .*1 unexpected weights.*blocks\.0\.extra\.weight"):
        W.load_wan_dit(_save(tmp_path / "extra.safetensors", sd))


def test_resolve_model_path_stays_inside_the_folder(tmp_path):
    root = tmp_path / "models" / "diffusion_models"
    (root / "sub").mkdir(parents=True)
    (root / "a.safetensors").write_bytes(b"x")
    (root / "sub" / "b.safetensors").write_bytes(b"x")
    (tmp_path / "secret.safetensors").write_bytes(b"x")
    assert resolve_model_path([root], "a.safetensors", "dit_name") == (root / "a.safetensors").resolve()
    assert resolve_model_path([root], "sub/b.safetensors", "dit_name") == (root / "sub" / "b.safetensors").resolve()
    with pytest.raises(ModelFileError, match=r"dit_name = '\.\./\.\./secret\.safetensors'.*'\.\.'.*models/diffusion"):
        resolve_model_path([root], "../../secret.safetensors", "dit_name")
    with pytest.raises(ModelFileError, match="dit_name = .*absolute paths"):
        resolve_model_path([root], str(tmp_path / "secret.safetensors"), "dit_name")
    # A link the artist put in the model folder is followed (models often live on another disk).
    os.symlink(tmp_path / "secret.safetensors", root / "link.safetensors")
    assert resolve_model_path([root], "link.safetensors", "dit_name") == (tmp_path / "secret.safetensors").resolve()
    with pytest.raises(ModelFileError, match=r"dit_name = 'nope\.safetensors'.*holds: a\.safetensors, link"):
        resolve_model_path([root], "nope.safetensors", "dit_name")


def test_file_identity_is_stable_and_content_sensitive(tmp_path):
    a = tmp_path / "m.safetensors"
    a.write_bytes(b"\0" * 3_000_000)
    first = file_identity(a)
    assert file_identity(a) == first
    a.write_bytes(b"\0" * 2_999_999 + b"\1")
    assert file_identity(a) != first


def test_hugging_face_folders_load(tmp_path, tiny_te):
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    te, _ = tiny_te
    te.model.save_pretrained(tmp_path / "umt5" / "text_encoder")
    te.tokenizer.save_pretrained(tmp_path / "umt5" / "tokenizer")  # the Wan diffusers repo layout
    folder_te = T.load_text_encoder(tmp_path / "umt5" / "text_encoder")
    folder_te.max_length = te.max_length
    torch.testing.assert_close(folder_te.encode(["a calm smile"]), te.encode(["a calm smile"]))

    cfg = A.load_bundled_config("avatar-cascade-tiny-wav2vec2")
    cfg.pop("architectures")
    model = Wav2Vec2Model(Wav2Vec2Config(**cfg))
    model.save_pretrained(tmp_path / "w2v")
    enc = A.load_audio_encoder(tmp_path / "w2v")
    assert enc.encode(torch.randn(16000)).shape == (3, 49, 32)
    with pytest.raises(ModelFileError, match="audio_encoder_name = .*no config.json"):
        A.load_audio_encoder(tmp_path)


@pytest.mark.parametrize(
    ("keys", "said"),
    [
        (
            ["vision_model.embeddings.patch_embedding.weight", "vision_model.post_layernorm.weight"],
            "a CLIP vision encoder",
        ),
        (["diffusion_model.blocks.0.self_attn.q.lora_A.weight"], "a LoRA"),
        (["audio_proj.proj1.weight", "blocks.0.audio_cross_attn.q_linear.weight"], "an InfiniteTalk/MultiTalk"),
        (["wav2vec2.feature_extractor.conv_layers.0.conv.weight"], "an audio encoder"),
        (["something.else"], "not recognised as a Wan DiT"),
    ],
)
def test_wrong_kind_of_file_is_named(tmp_path, keys, said):
    from avatar_cascade.models.files import check_kind

    with pytest.raises(ModelFileError, match=f"dit_name = .*{said}"):
        check_kind(keys, "dit", "dit_name", tmp_path / "x.safetensors")


def test_a_folder_is_refused_by_single_file_loaders(tmp_path):
    with pytest.raises(ModelFileError, match="dit_name = .*this is a folder"):
        W.load_wan_dit(tmp_path)


def test_vae_rejects_wrong_shapes(tiny_vae_file):
    from avatar_cascade.core.errors import InputError

    vae = V.load_wan_vae(tiny_vae_file[0])
    with pytest.raises(InputError, match="video = .*multiples of 8"):
        vae.encode(torch.zeros(1, 3, 1, 30, 32))
    with pytest.raises(InputError, match="latents = .*16"):
        vae.decode(torch.zeros(1, 48, 1, 2, 2))

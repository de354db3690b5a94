"""VAE, text encoder and audio encoder loaders: real tiny models written in the real layouts, read back
through the real loaders, and full-size variants detected from shapes alone."""

from __future__ import annotations

import pytest
import torch

from avatar_cascade.core.errors import ModelFileError
from avatar_cascade.demo.layouts import vae_to_original_layout
from avatar_cascade.models import audio_encoder as A
from avatar_cascade.models import text_encoder as T
from avatar_cascade.models import wan_vae as V
from tests.helpers import meta_shapes as _meta_shapes
from tests.helpers import save_safetensors as _save

# ``tiny_vae_file`` and ``tiny_te`` (per module) come from conftest.py.


# ---------------------------------------------------------------- VAE


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

"""CLIP ViT-H image encoder for Wan 2.1 I2V / FLF2V: tiny real models in the real file layouts."""

from __future__ import annotations

import pytest
import torch

from avatar_cascade.core.errors import InputError, ModelFileError
from avatar_cascade.demo import tiny_weights as TW
from avatar_cascade.demo.layouts import dit_to_original_layout
from avatar_cascade.models import clip_vision as C
from avatar_cascade.models import wan_dit as W
from avatar_cascade.sampling.conditioning import ClipRequest
from avatar_cascade.sampling.loop import sample_clips
from avatar_cascade.sampling.settings import SamplerSettings
from tests.helpers import cpu_runtime
from tests.helpers import save_safetensors as _save


@pytest.fixture(scope="module")
def tiny_sd():
    return TW.tiny_clip_vision_state_dict(0)


@pytest.fixture(scope="module")
def encoder(tmp_path_factory, tiny_sd):
    return C.load_clip_vision(_save(tmp_path_factory.mktemp("cv") / "clip_vision_tiny.safetensors", tiny_sd))


def _to_open_clip(sd):
    """transformers -> open_clip keys (the inverse of what the loader converts), built independently."""
    out = {}
    names = {
        "vision_model.embeddings.class_embedding": "visual.class_embedding",
        "vision_model.embeddings.patch_embedding.weight": "visual.conv1.weight",
        "vision_model.embeddings.position_embedding.weight": "visual.positional_embedding",
        "vision_model.pre_layrnorm.weight": "visual.ln_pre.weight",
        "vision_model.pre_layrnorm.bias": "visual.ln_pre.bias",
        "vision_model.post_layernorm.weight": "visual.ln_post.weight",
        "vision_model.post_layernorm.bias": "visual.ln_post.bias",
    }
    parts = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj"}
    for k, v in sd.items():
        if k in names:
            out[names[k]] = v
        elif k == "visual_projection.weight":
            out["visual.proj"] = v.t()
        elif ".self_attn.out_proj." in k:
            i, leaf = k.split(".")[3], k.rsplit(".", 1)[1]
            out[f"visual.transformer.resblocks.{i}.attn.out_proj.{leaf}"] = v
        elif ".self_attn.q_proj." in k:
            i, leaf = k.split(".")[3], k.rsplit(".", 1)[1]
            qkv = [sd[k.replace("q_proj", p)] for p in ("q_proj", "k_proj", "v_proj")]
            out[f"visual.transformer.resblocks.{i}.attn.in_proj_{leaf}"] = torch.cat(qkv)
        elif ".self_attn." not in k:
            i = k.split(".")[3]
            rest = k.split(".", 4)[4]
            mod, leaf = rest.rsplit(".", 1)
            out[f"visual.transformer.resblocks.{i}.{parts[mod]}.{leaf}"] = v
    return out


@pytest.mark.parametrize("layout", ["comfyui", "full clip with text tower", "open_clip"])
def test_single_file_round_trips(tmp_path, tiny_sd, layout):
    sd = dict(tiny_sd)
    if layout == "full clip with text tower":
        sd |= {
            "text_model.embeddings.token_embedding.weight": torch.zeros(10, 8),
            "logit_scale": torch.tensor(1.0),
            "vision_model.embeddings.position_ids": torch.arange(5)[None],
        }
    elif layout == "open_clip":
        sd = _to_open_clip(sd)
        assert "visual.transformer.resblocks.0.attn.in_proj_weight" in sd
    enc = C.load_clip_vision(_save(tmp_path / "cv.safetensors", sd))
    assert enc.variant == "avatar-cascade-tiny-clip-vision" and enc.tokens == 5 and enc.hidden_size == 16
    loaded = enc.model.state_dict()
    assert set(loaded) == set(tiny_sd)
    for k, v in tiny_sd.items():
        assert torch.equal(loaded[k], v), k


def test_tokens_are_the_penultimate_hidden_states(encoder):
    g = torch.Generator().manual_seed(0)
    images = torch.rand(2, 40, 56, 3, generator=g)  # not square: shortest side to 28, centre crop
    tokens = encoder.encode(images)
    assert tokens.shape == (2, 5, 16)
    pixels = encoder.preprocess(images)
    assert pixels.shape == (2, 3, 28, 28)
    with torch.no_grad():
        ref = encoder.model(pixel_values=pixels, output_hidden_states=True).hidden_states
    assert len(ref) == 4  # embeddings + 3 layers: [-2] is the output of layer 2 of 3
    torch.testing.assert_close(tokens, ref[-2])
    assert not torch.allclose(tokens, ref[-1])
    # the centre crop: the outer columns do not matter
    edited = images.clone()
    edited[:, :, :4] = 0.0
    torch.testing.assert_close(encoder.encode(edited), tokens)


def test_other_image_encoders_are_refused(tmp_path):
    shapes = {
        "vision_model.embeddings.class_embedding": (1024,),
        "vision_model.embeddings.patch_embedding.weight": (1024, 3, 14, 14),
        "vision_model.embeddings.position_embedding.weight": (257, 1024),
        **{f"vision_model.encoder.layers.{i}.layer_norm1.weight": (1024,) for i in range(24)},
    }
    with pytest.raises(ModelFileError, match="CLIP ViT-L/14.*Wan 2.1 needs CLIP ViT-H/14"):
        C._match_variant(shapes, "clip_name", "clip_l.safetensors")
    from avatar_cascade.demo.models import tiny_vae_state_dict

    with pytest.raises(ModelFileError, match="looks like a Wan VAE"):
        C.load_clip_vision(_save(tmp_path / "vae.safetensors", tiny_vae_state_dict(0)))


def test_bundled_vit_h_config_builds_the_real_shapes():
    from accelerate import init_empty_weights
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    cfg = C.load_bundled_config("clip-vit-h-14")
    with init_empty_weights():
        model = CLIPVisionModelWithProjection(CLIPVisionConfig(**{k: v for k, v in cfg.items() if k[0] != "_"}))
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes["vision_model.embeddings.position_embedding.weight"] == (257, 1280)
    assert shapes["visual_projection.weight"] == (1024, 1280)
    assert C._match_variant(shapes, "clip_name", "clip_vision_h.safetensors")[0] == "clip-vit-h-14"


# ---------------------------------------------------------------- Wan 2.1 FLF2V image tokens


@pytest.fixture(scope="module")
def flf_dit(tmp_path_factory):
    from diffusers import WanTransformer3DModel

    torch.manual_seed(3)
    model = WanTransformer3DModel.from_config(W.load_bundled_config("avatar-cascade-tiny-wan-flf2v"))
    sd = dit_to_original_layout(model.state_dict())
    assert "img_emb.emb_pos" in sd and "blocks.0.cross_attn.k_img.weight" in sd
    dit = W.load_wan_dit(_save(tmp_path_factory.mktemp("flf") / "tiny_flf2v.safetensors", sd))
    assert dit.variant == "avatar-cascade-tiny-wan-flf2v" and dit.has_image_embedder
    return dit


def _requests(n, last=True):
    g = torch.Generator().manual_seed(1)
    return [
        ClipRequest.first_last(
            num_frames=5,
            first_frame=torch.rand(3, 16, 16, generator=g) * 2 - 1,
            last_frame=(torch.rand(3, 16, 16, generator=g) * 2 - 1) if last else None,
            prompt_embeds=torch.randn(24, 32, generator=g),
            negative_embeds=torch.randn(24, 32, generator=g),
            seed=i,
        )
        for i in range(n)
    ]


def _cond(n):
    return torch.randn(n, 20, 2, 2, 2, generator=torch.Generator().manual_seed(2))


def test_flf2v_image_embeds_shape(flf_dit, encoder):
    reqs = _requests(3)
    tokens = C.frame_tokens(encoder, [(r.first_frame, r.last_frame) for r in reqs])
    assert tokens.shape == (3, 10, 16)  # first-frame tokens then last-frame tokens
    torch.testing.assert_close(tokens[1, 5:], encoder.encode_model_frames(reqs[1].last_frame[None])[0])
    with C.wan_image_rows(flf_dit.transformer, tokens) as rows:
        assert rows.shape == (6, 5, 16)  # diffusers' FLF2V layout: (first, last) per clip

    seen = []
    embedder = flf_dit.transformer.condition_embedder.image_embedder
    hook = embedder.register_forward_pre_hook(lambda m, args: seen.append(tuple(args[0].shape)))
    text = []
    hook2 = flf_dit.transformer.register_forward_pre_hook(
        lambda m, a, kw: text.append(tuple(kw["encoder_hidden_states"].shape)), with_kwargs=True
    )
    rt = cpu_runtime()
    try:
        out = sample_clips(flf_dit, _cond(3), reqs, SamplerSettings(steps=2, guidance=3.0), rt, image_encoder=encoder)
    finally:
        hook.remove()
        hook2.remove()
    assert out.shape == (3, 16, 2, 2, 2) and torch.isfinite(out).all()
    assert seen == [(12, 5, 16)] * 2  # 3 clips x 2 CFG rows x (first, last)
    assert text == [(6, 512, 32)] * 2  # prompts padded to the 512 tokens diffusers' image attention expects


def test_first_frame_only_on_an_flf2v_dit(flf_dit, encoder):
    rt = cpu_runtime()
    pos = flf_dit.transformer.condition_embedder.image_embedder.pos_embed
    out = sample_clips(flf_dit, _cond(2), _requests(2, last=False), SamplerSettings(steps=2), rt, image_encoder=encoder)
    assert torch.isfinite(out).all()
    assert flf_dit.transformer.condition_embedder.image_embedder.pos_embed is pos  # restored


def test_an_image_dit_without_encoder_says_what_to_connect(flf_dit):
    rt = cpu_runtime()
    with pytest.raises(InputError, match="clip_vision.*CLIP Vision loader"):
        sample_clips(flf_dit, _cond(1), _requests(1), SamplerSettings(steps=1), rt)


def test_clip_vision_loader_node(tmp_path, tiny_sd, monkeypatch):
    from nodes import NODE_CLASS_MAPPINGS

    monkeypatch.setenv("AVATAR_CASCADE_MODELS", str(tmp_path / "models"))
    _save(tmp_path / "models" / "clip_vision" / "clip_vision_h.safetensors", tiny_sd)
    node = NODE_CLASS_MAPPINGS["AvatarCascadeCLIPVisionLoader"]
    assert node.INPUT_TYPES()["required"]["clip_name"][0] == ["clip_vision_h.safetensors"]
    (enc,) = node().load("clip_vision_h.safetensors")
    assert enc.tokens == 5 and enc.identity

"""InfiniteTalk/MultiTalk-compatible audio adapter: published layout, reference computation, attach/detach."""

from __future__ import annotations

import pytest
import torch

from avatar_cascade.core.errors import InputError, ModelFileError
from avatar_cascade.demo import tiny_weights as TW
from avatar_cascade.demo.models import tiny_dit_state_dict
from avatar_cascade.models import audio_adapter as AA
from avatar_cascade.models import audio_guidance as AG
from avatar_cascade.models import audio_proj as AP
from avatar_cascade.models.audio_adapter import AudioAdapterModule
from avatar_cascade.models.audio_proj import AudioAdapterConfig
from avatar_cascade.models.wan_dit import load_bundled_config, load_wan_dit
from tests.helpers import save_safetensors as _save

TINY = load_bundled_config("avatar-cascade-tiny-wan")
FRAMES = 9  # pixel frames -> 3 latent frames


@pytest.fixture(scope="module")
def dit(tmp_path_factory):
    path = _save(tmp_path_factory.mktemp("dit") / "tiny_wan.safetensors", tiny_dit_state_dict(0))
    return load_wan_dit(path)


@pytest.fixture(scope="module")
def adapter_file(tmp_path_factory):
    return TW.write_tiny_audio_adapter(tmp_path_factory.mktemp("ad") / "tiny_infinitetalk.safetensors", TINY, seed=0)


@pytest.fixture()
def adapter(dit, adapter_file):
    a = AA.load_audio_adapter(adapter_file, dit)
    yield a
    a.detach()


def _inputs(batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 36, 3, 8, 8, generator=g)  # 3 latent frames of 4x4 tokens
    text = torch.randn(batch, 5, 32, generator=g)
    return x, text


def _audio(batch=2, seed=1, layers=2):
    return torch.randn(batch, FRAMES, 5, layers, 32, generator=torch.Generator().manual_seed(seed))


def _run(transformer, x, text):
    with torch.no_grad():
        t = torch.full((x.shape[0],), 700.0)
        return transformer(hidden_states=x, timestep=t, encoder_hidden_states=text, return_dict=False)[0]


# ---------------------------------------------------------------- published layout


def _published_14b_shapes() -> dict[str, tuple[int, ...]]:
    """Key -> shape of InfiniteTalk's adapter for Wan 2.1 14B, from the reference definitions.

    AudioProjModel(seq_len=5, seq_len_vf=5+4-1, blocks=12, channels=768, intermediate_dim=512,
    output_dim=768, context_tokens=32, norm_output_audio=True); per block
    SingleStreamMutiAttention(dim=5120, encoder_hidden_states_dim=768, qkv_bias=True, qk_norm=False)
    and norm_x = WanLayerNorm(5120, elementwise_affine=True); 40 blocks.
    """
    feat = 12 * 768  # wav2vec2 hidden_states[1:] of chinese-wav2vec2-base
    shapes = {
        "audio_proj.proj1.weight": (512, 5 * feat),
        "audio_proj.proj1.bias": (512,),
        "audio_proj.proj1_vf.weight": (512, 8 * feat),
        "audio_proj.proj1_vf.bias": (512,),
        "audio_proj.proj2.weight": (512, 512),
        "audio_proj.proj2.bias": (512,),
        "audio_proj.proj3.weight": (32 * 768, 512),
        "audio_proj.proj3.bias": (32 * 768,),
        "audio_proj.norm.weight": (768,),
        "audio_proj.norm.bias": (768,),
    }
    for i in range(40):
        p = f"blocks.{i}."
        shapes |= {
            p + "audio_cross_attn.q_linear.weight": (5120, 5120),
            p + "audio_cross_attn.q_linear.bias": (5120,),
            p + "audio_cross_attn.kv_linear.weight": (2 * 5120, 768),
            p + "audio_cross_attn.kv_linear.bias": (2 * 5120,),
            p + "audio_cross_attn.proj.weight": (5120, 5120),
            p + "audio_cross_attn.proj.bias": (5120,),
            p + "norm_x.weight": (5120,),
            p + "norm_x.bias": (5120,),
        }
    return shapes


def test_full_size_layout_loads_the_published_keys_strictly():
    published = _published_14b_shapes()
    config = AA.config_from_shapes(published, num_heads=40)
    assert config == AudioAdapterConfig(dim=5120, num_layers=40, num_heads=40)
    with torch.device("meta"):
        module = AudioAdapterModule(config)
    assert {k: tuple(v.shape) for k, v in module.state_dict().items()} == published
    module.load_state_dict({k: torch.empty(s, device="meta") for k, s in published.items()}, strict=True, assign=True)
    assert sum(p.numel() for p in module.parameters()) == pytest.approx(2.49e9, rel=0.01)


def test_a_14b_adapter_is_refused_on_a_1_3b_dit():
    from accelerate import init_empty_weights
    from diffusers import WanTransformer3DModel

    with init_empty_weights():
        small = WanTransformer3DModel.from_config(load_bundled_config("wan2.1-t2v-1.3b"))
        module = AudioAdapterModule(AudioAdapterConfig(dim=5120, num_layers=40, num_heads=40))
    with pytest.raises(ModelFileError, match="5120 wide with 40 blocks, but the DiT is 1536 wide with 30 blocks"):
        AA.AudioAdapter(module).check_fits(small)


@pytest.mark.parametrize("prefix", ["", "diffusion_model.", "model.diffusion_model."])
def test_tiny_adapter_loads_with_comfyui_prefixes_and_fp8(tmp_path, dit, prefix):
    sd = TW.tiny_audio_adapter_state_dict(TINY, seed=3)
    stored = {prefix + k: (v.to(torch.float8_e4m3fn) if k.endswith("q_linear.weight") else v) for k, v in sd.items()}
    adapter = AA.load_audio_adapter(_save(tmp_path / "a.safetensors", stored), dit)
    got = adapter.module.state_dict()
    assert set(got) == set(sd) and got["audio_proj.proj1.weight"].dtype == torch.float32
    assert torch.equal(got["audio_proj.proj3.weight"], sd["audio_proj.proj3.weight"])
    q = "blocks.1.audio_cross_attn.q_linear.weight"
    assert torch.equal(got[q], sd[q].to(torch.float8_e4m3fn).float())


def test_wrong_files_are_named(tmp_path, dit, adapter_file):
    sd = TW.tiny_audio_adapter_state_dict(TINY)
    with pytest.raises(ModelFileError, match="looks like a Wan DiT"):
        AA.load_audio_adapter(dit.path, dit)
    merged = _save(tmp_path / "merged.safetensors", {**tiny_dit_state_dict(0), **sd})
    with pytest.raises(ModelFileError, match="audio layers merged in"):
        AA.load_audio_adapter(merged, dit)
    vae_like = _save(tmp_path / "vae.safetensors", {"decoder.middle.0.residual.0.gamma": torch.ones(4)})
    with pytest.raises(ModelFileError, match="not an InfiniteTalk/MultiTalk audio adapter"):
        AA.load_audio_adapter(vae_like, dit)
    wider = TW.tiny_audio_adapter_state_dict({**TINY, "attention_head_dim": 16})
    with pytest.raises(ModelFileError, match="32 wide with 2 blocks, but the DiT is 24 wide"):
        AA.load_audio_adapter(_save(tmp_path / "wide.safetensors", wider), dit)
    deeper = TW.tiny_audio_adapter_state_dict({**TINY, "num_layers": 3})
    with pytest.raises(ModelFileError, match="3 blocks"):
        AA.load_audio_adapter(_save(tmp_path / "deep.safetensors", deeper), dit)
    del sd["blocks.1.norm_x.bias"]
    with pytest.raises(ModelFileError, match="1 missing weights"):
        AA.load_audio_adapter(_save(tmp_path / "cut.safetensors", sd), dit)


def test_tiny_writer_is_deterministic(tmp_path):
    a = TW.write_tiny_audio_adapter(tmp_path / "a.safetensors", TINY, seed=5)
    b = TW.write_tiny_audio_adapter(tmp_path / "b.safetensors", TINY, seed=5)
    c = TW.write_tiny_audio_adapter(tmp_path / "c.safetensors", TINY, seed=6)
    assert a.read_bytes() == b.read_bytes() != c.read_bytes()


# ---------------------------------------------------------------- reference computation


def test_window_taps_follow_the_reference_indexing():
    """Latent frame 0: frame 0, taps 0-4; latent frame t: frames 4t-3 (taps 0-2), 4t-2 and 4t-1 (tap 2), 4t (2-4)."""
    f = torch.arange(FRAMES)[:, None].float() * 10 + torch.arange(5)[None, :]  # value = 10*frame + tap
    first, later = AP.split_frame_windows(f[None])
    assert first[0, 0].tolist() == [0, 1, 2, 3, 4]
    for t in (1, 2):
        a, b, c, d = 4 * t - 3, 4 * t - 2, 4 * t - 1, 4 * t
        want = [10 * a, 10 * a + 1, 10 * a + 2, 10 * b + 2, 10 * c + 2, 10 * d + 2, 10 * d + 3, 10 * d + 4]
        assert later[0, t - 1].tolist() == want
    per_frame = torch.arange(6.0)[:, None, None]  # [T=6, L=1, D=1]
    w = AP.frame_windows(per_frame, start=1, count=3)[..., 0, 0]
    assert w.tolist() == [[0, 0, 1, 2, 3], [0, 1, 2, 3, 4], [1, 2, 3, 4, 5]]  # clamped at the track start


def test_audio_projection_is_the_reference_mlp(adapter):
    """relu(proj1 | proj1_vf) -> relu(proj2) -> proj3 -> LayerNorm, each window flattened as (tap, layer, channel)."""
    import torch.nn.functional as F

    audio = _audio(batch=1, layers=3)
    p = adapter.module.audio_proj
    first = audio[:, 0, :, 1:].reshape(1, -1)  # InfiniteTalk reads wav2vec2 hidden_states[1:]
    taps = [(1, 0), (1, 1), (1, 2), (2, 2), (3, 2), (4, 2), (4, 3), (4, 4)]  # latent frame 1
    later = torch.stack([audio[0, f, w, 1:] for f, w in taps]).reshape(1, -1)

    def mlp(first_linear, x):  # 4 tokens of width 8 (the tiny sizes)
        hidden = torch.relu(p.proj2(torch.relu(first_linear(x))))
        return F.layer_norm(p.proj3(hidden).view(4, 8), (8,), p.norm.weight, p.norm.bias, 1e-5)

    with torch.no_grad():
        got = p(adapter.prepare_audio(audio))
        torch.testing.assert_close(got[0, 0], mlp(p.proj1, first), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(got[0, 1], mlp(p.proj1_vf, later), atol=1e-5, rtol=1e-5)


def test_audio_cross_attention_is_frame_local_softmax_attention():
    torch.manual_seed(0)
    cfg = AudioAdapterConfig(dim=24, num_layers=1, num_heads=2, feature_size=64, **TW.TINY_SIZES)
    attn = AudioAdapterModule(cfg).blocks[0].audio_cross_attn
    x, tokens = torch.randn(2, 3 * 16, 24), torch.randn(2, 3, 4, 8)
    out = attn(x, tokens)
    kv = attn.kv_linear(tokens)
    k, v = kv[..., :24], kv[..., 24:]  # keys then values
    q = attn.q_linear(x)
    want = torch.empty_like(out)
    for b in range(2):
        for t in range(3):
            rows = slice(16 * t, 16 * (t + 1))
            heads = []
            for h in range(2):
                hs = slice(12 * h, 12 * (h + 1))
                w = (q[b, rows, hs] @ k[b, t, :, hs].T / 12**0.5).softmax(-1)
                heads.append(w @ v[b, t, :, hs])
            want[b, rows] = attn.proj(torch.cat(heads, -1))
    torch.testing.assert_close(out, want, atol=1e-5, rtol=1e-5)


def test_hooks_insert_audio_after_text_cross_attention_like_the_reference_block(dit, adapter):
    """Recompute one block by hand in the reference order and compare with the hooked block."""
    handle = adapter.attach(dit)
    block = dit.transformer.blocks[1]
    seen = {}
    hook = block.register_forward_hook(
        lambda m, args, kwargs, out: seen.update(args=args, kwargs=kwargs, out=out), with_kwargs=True
    )
    x, text = _inputs()
    audio = _audio()
    try:
        with handle.audio_adapter.audio_context(audio):
            _run(dit.transformer, x, text)
    finally:
        hook.remove()
    hidden, context, temb, rope = seen["args"]
    tokens = adapter.module.audio_proj(audio.flatten(3))
    ab = adapter.module.blocks[1]
    with torch.no_grad():
        e = (block.scale_shift_table + temb.float()).chunk(6, dim=1)
        h = hidden + block.attn1(block.norm1(hidden) * (1 + e[1]) + e[0], None, None, rope) * e[2]
        h = h + block.attn2(block.norm2(h), context, None, None)
        h = h + ab.audio_cross_attn(ab.norm_x(h), tokens)  # x = x + audio_cross_attn(norm_x(x), audio)
        h = h + block.ffn(block.norm3(h) * (1 + e[4]) + e[3]) * e[5]
    torch.testing.assert_close(seen["out"], h, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------- behaviour on the tiny DiT


def test_output_follows_the_audio_and_ignores_taps_the_reference_never_reads(dit, adapter):
    handle = adapter.attach(dit)
    x, text = _inputs()
    audio = _audio()
    with handle.audio_adapter.audio_context(audio):
        out = _run(dit.transformer, x, text)
    with handle.audio_adapter.audio_context(_audio(seed=2)):
        other = _run(dit.transformer, x, text)
    assert (out - other).abs().max() > 1e-2
    unread = audio.clone()
    for t in (1, 2):
        a, b, c, d = 4 * t - 3, 4 * t - 2, 4 * t - 1, 4 * t
        unread[:, a, 3:] += 5.0
        unread[:, b, [0, 1, 3, 4]] -= 7.0
        unread[:, c, [0, 1, 3, 4]] -= 7.0
        unread[:, d, :2] += 5.0
    assert not torch.equal(unread, audio)
    with handle.audio_adapter.audio_context(unread):
        assert torch.equal(_run(dit.transformer, x, text), out)
    read = audio.clone()
    read[:, 0, 0] += 5.0  # the first frame reads all five taps
    with handle.audio_adapter.audio_context(read):
        assert not torch.equal(_run(dit.transformer, x, text), out)


def test_batch_with_per_clip_audio_equals_each_clip_alone(dit, adapter):
    handle = adapter.attach(dit)
    x, text = _inputs(batch=2)
    audio = _audio(batch=2)
    with handle.audio_adapter.audio_context(audio):
        both = _run(dit.transformer, x, text)
    for i in range(2):
        with handle.audio_adapter.audio_context(audio[i]):  # one row, [F, W, L, D]
            alone = _run(dit.transformer, x[i : i + 1], text[i : i + 1])
        torch.testing.assert_close(both[i : i + 1], alone, atol=1e-5, rtol=1e-5)


def test_none_is_the_reference_zero_audio_branch_and_detach_restores_the_base(dit, adapter):
    x, text = _inputs()
    keys = set(dit.transformer.state_dict())
    base = _run(dit.transformer, x, text)
    handle = adapter.attach(dit)
    assert handle.transformer is dit.transformer and getattr(dit, "audio_adapter", None) is None
    with handle.audio_adapter.audio_context(None):
        silent = _run(dit.transformer, x, text)
    with handle.audio_adapter.audio_context(torch.zeros(2, FRAMES, 5, 2, 32)):
        zeros = _run(dit.transformer, x, text)
    assert torch.equal(silent, zeros)
    assert (silent - base).abs().max() > 1e-2  # zero features still pass through the adapter, as the reference
    assert torch.equal(_run(dit.transformer, x, text), base)  # attached, outside audio_context: the base DiT
    adapter.detach()
    assert torch.equal(_run(dit.transformer, x, text), base)
    assert set(dit.transformer.state_dict()) == keys
    assert not any(b.attn2._forward_hooks or b.norm2._forward_pre_hooks for b in dit.transformer.blocks)
    with pytest.raises(RuntimeError, match="attach"), handle.audio_adapter.audio_context(None):
        pass


def test_strength_scales_the_audio_residual(dit, adapter_file):
    x, text = _inputs()
    base = _run(dit.transformer, x, text)
    off = AA.load_audio_adapter(adapter_file, dit, strength=0.0)
    with off.attach(dit).audio_adapter.audio_context(_audio()):
        assert torch.equal(_run(dit.transformer, x, text), base)
    off.detach()


def test_both_experts_of_a_wan22_pair_get_the_adapter(dit, adapter):
    import dataclasses

    twin = load_wan_dit(dit.path)
    pair = dataclasses.replace(dit, transformer_2=twin.transformer, boundary_ratio=0.9)
    handle = adapter.attach(pair)
    assert adapter.transformers == [dit.transformer, twin.transformer]
    x, text = _inputs()
    base = _run(twin.transformer, x, text)
    with handle.audio_adapter.audio_context(_audio()):
        assert (_run(twin.transformer, x, text) - base).abs().max() > 1e-2
    with pytest.raises(RuntimeError, match="another DiT"):
        adapter.attach(dit)


def test_loader_node_lists_both_folders_and_leaves_the_input_dit_alone(tmp_path, monkeypatch, dit, adapter_file):
    import shutil

    from nodes import NODE_CLASS_MAPPINGS

    (tmp_path / "model_patches").mkdir()
    (tmp_path / "diffusion_models").mkdir()
    shutil.copy(adapter_file, tmp_path / "model_patches" / "tiny_infinitetalk.safetensors")
    shutil.copy(adapter_file, tmp_path / "diffusion_models" / "other_adapter.safetensors")
    monkeypatch.setenv("AVATAR_CASCADE_MODELS", str(tmp_path))
    node = NODE_CLASS_MAPPINGS["AvatarCascadeAudioAdapterLoader"]
    names = node.INPUT_TYPES()["required"]["adapter_name"][0]
    assert names == ["tiny_infinitetalk.safetensors", "other_adapter.safetensors", "none"]  # none: a MODEL_PATCH
    (out,) = node().load(dit, "other_adapter.safetensors", 0.5)
    assert out.transformer is dit.transformer and out.audio_adapter.strength == 0.5 and dit.audio_adapter is None
    assert out.cache_identity() != dit.cache_identity()
    out.audio_adapter.detach()
    with pytest.raises(ModelFileError, match="not found"):
        node().load(dit, "missing.safetensors", 1.0)
    with pytest.raises(InputError, match="strength"):
        node().load(dit, "other_adapter.safetensors", -1.0)


def test_feature_stacks_with_layer_zero_and_wrong_encoders(dit, adapter):
    handle = adapter.attach(dit)
    x, text = _inputs()
    audio = _audio(layers=3)  # the tiny wav2vec2 gives hidden_states[0..2]; InfiniteTalk reads [1:]
    with handle.audio_adapter.audio_context(audio):
        with_zero = _run(dit.transformer, x, text)
    with handle.audio_adapter.audio_context(audio[:, :, :, 1:]):
        assert torch.equal(_run(dit.transformer, x, text), with_zero)
    with pytest.raises(InputError, match="audio_encoder"):
        adapter.prepare_audio(torch.zeros(1, FRAMES, 5, 25, 1024))
    with pytest.raises(ValueError, match="frames"), handle.audio_adapter.audio_context(_audio()[:, :5]):
        _run(dit.transformer, x, text)
    with pytest.raises(ValueError, match="rows"), handle.audio_adapter.audio_context(_audio(batch=3)):
        _run(dit.transformer, x, text)


# ---------------------------------------------------------------- guidance


def test_guidance_is_infinitetalks_two_scale_formula():
    g = torch.Generator().manual_seed(0)
    cond, drop_text, uncond, drop_audio = (torch.randn(4, generator=g) for _ in range(4))
    three = {"cond": cond, "drop_text": drop_text, "uncond": uncond}
    torch.testing.assert_close(
        AG.combine_guidance(three, 5.0, 4.0), uncond + 5.0 * (cond - drop_text) + 4.0 * (drop_text - uncond)
    )
    assert [b[0] for b in AG.guidance_branches(5.0, 4.0)] == ["cond", "drop_text", "uncond"]
    assert AG.guidance_branches(1.0, 4.0) == (("cond", True, True), ("drop_audio", True, False))
    two = {"cond": cond, "drop_audio": drop_audio}
    torch.testing.assert_close(AG.combine_guidance(two, 1.0, 4.0), drop_audio + 4.0 * (cond - drop_audio))
    # audio scale 1: the three-branch result no longer depends on uncond, so that forward is skipped
    assert [b[0] for b in AG.guidance_branches(5.0, 1.0)] == ["cond", "drop_text"]
    short = AG.combine_guidance({"cond": cond, "drop_text": drop_text}, 5.0, 1.0)
    torch.testing.assert_close(short, AG.combine_guidance(three, 5.0, 1.0))
    assert AG.guidance_branches(1.0, 1.0) == (("cond", True, True),)

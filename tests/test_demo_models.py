"""The tiny demo models: real formats, deterministic, reused, loadable by the real loaders."""

from __future__ import annotations

import importlib.util
import json
import time

import pytest
import torch
from safetensors import safe_open

from avatar_cascade.demo import models as D
from avatar_cascade.models.audio_encoder import load_audio_encoder
from avatar_cascade.models.text_encoder import load_text_encoder
from avatar_cascade.models.wan_dit import load_wan_dit, to_diffusers_layout
from avatar_cascade.models.wan_vae import load_wan_vae

FOLDERS = {
    "dit": "diffusion_models",
    "vae": "vae",
    "text_encoder": "text_encoders",
    "audio_encoder": "audio_encoders",
    "mllm": "LLM",
    "audio_adapter": "model_patches",
    "flf2v_dit": "diffusion_models",
    "clip_vision": "clip_vision",
    "vace_dit": "diffusion_models",
    "comfy_vace_dit": "diffusion_models",
    "omni": "LLM",
    "comfy_dit": "diffusion_models",
    "wide_text_encoder": "text_encoders",
    "comfy_lora": "loras",
    "comfy_audio_adapter": "model_patches",
}
HAS_MLLM_WRITER = importlib.util.find_spec("avatar_cascade.demo.tiny_mllm") is not None


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo_models")
    return root, D.write_demo_models(root, extended=True)


def _files(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_roles_point_at_files_in_comfyui_folders(written):
    root, names = written
    expected = {
        "dit",
        "vae",
        "text_encoder",
        "audio_encoder",
        "audio_adapter",
        "flf2v_dit",
        "clip_vision",
        "vace_dit",
        "comfy_vace_dit",
        "comfy_dit",
        "wide_text_encoder",
        "comfy_lora",
        "comfy_audio_adapter",
    } | ({"mllm", "omni"} if HAS_MLLM_WRITER else set())
    assert set(names) == expected
    for role, name in names.items():
        assert (root / FOLDERS[role] / name).exists(), role
    if HAS_MLLM_WRITER:
        assert (root / "LLM" / names["mllm"] / "config.json").is_file()
        omni = json.loads((root / "LLM" / names["omni"] / "config.json").read_text())
        assert omni["model_type"] == "qwen2_5_omni_thinker"
    total = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    assert total < 32 * 1024 * 1024  # extended set: the ComfyUI-shaped trio has a 4096-wide text encoder (16 MB)


def test_same_seed_gives_byte_identical_files_and_another_seed_does_not(written, tmp_path):
    root, _ = written
    D.write_demo_models(tmp_path, extended=True)
    assert _files(tmp_path) == _files(root)
    other = D.tiny_dit_state_dict(seed=1)
    same = D.tiny_dit_state_dict(seed=0)
    assert not torch.equal(other["blocks.0.self_attn.q.weight"], same["blocks.0.self_attn.q.weight"])


def test_second_call_reuses_files_and_repairs_a_broken_one(written):
    root, names = written
    dit = root / "diffusion_models" / names["dit"]
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}
    t0 = time.perf_counter()
    D.write_demo_models(root, extended=True)
    assert time.perf_counter() - t0 < 1.0
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()} == before
    good = dit.read_bytes()
    dit.write_bytes(good[:1000])  # truncated download
    D.write_demo_models(root, extended=True)
    assert dit.read_bytes() == good


def test_default_set_has_one_model_per_folder_for_the_cli(tmp_path):
    names = D.write_demo_models(tmp_path)
    assert not {"flf2v_dit", "clip_vision", "omni"} & set(names)
    assert [p.name for p in (tmp_path / "diffusion_models").iterdir()] == [names["dit"]]


def test_dit_is_written_in_the_original_wan_layout_and_round_trips(written):
    root, names = written
    path = root / "diffusion_models" / names["dit"]
    with safe_open(str(path), "pt") as f:
        keys = set(f.keys())
        stored = {k: f.get_tensor(k) for k in keys}
    assert "blocks.0.self_attn.q.weight" in keys and "head.head.weight" in keys
    assert not any(k.startswith("condition_embedder") for k in keys)
    dit = load_wan_dit(path)
    assert dit.variant == "avatar-cascade-tiny-wan" and dit.in_channels == 36 and not dit.has_image_embedder
    loaded = dit.transformer.state_dict()
    for k, v in to_diffusers_layout(stored).items():
        assert torch.equal(loaded[k], v), k


def test_every_demo_model_loads_and_runs(written):
    root, names = written
    dit = load_wan_dit(root / "diffusion_models" / names["dit"])
    te = load_text_encoder(root / "text_encoders" / names["text_encoder"])
    te.max_length = 32
    text = te.encode(["A person talks to the camera with a calm, friendly smile."])
    assert text.shape == (1, 32, dit.transformer.config.text_dim)
    with torch.no_grad():
        out = dit.transformer(torch.randn(1, 36, 5, 8, 8), torch.tensor([999]), text, return_dict=False)[0]
    assert out.shape == (1, 16, 5, 8, 8)
    vae = load_wan_vae(root / "vae" / names["vae"])
    assert vae.decode(out[:, :, :1, :4, :4]).shape == (1, 3, 1, 32, 32)
    audio = load_audio_encoder(root / "audio_encoders" / names["audio_encoder"])
    assert audio.encode(torch.randn(16000)).shape[:2] == (audio.num_layers + 1, 49)


def test_tiny_tokenizer_covers_the_demo_vocabulary(written):
    root, names = written
    te = load_text_encoder(root / "text_encoders" / names["text_encoder"])
    ids = te.tokenizer("The singer smiles at the camera and talks about her warm song.").input_ids
    assert 2 not in ids  # no <unk>
    assert D.train_tiny_spiece() == D.train_tiny_spiece()


def test_flf2v_demo_dit_has_an_image_embedder_reads_clip_tokens_and_takes_the_demo_adapter(written):
    from avatar_cascade.models.audio_adapter import load_audio_adapter
    from avatar_cascade.models.clip_vision import load_clip_vision

    root, names = written
    dit = load_wan_dit(root / "diffusion_models" / names["flf2v_dit"])
    assert dit.variant == "avatar-cascade-tiny-wan-flf2v" and dit.has_image_embedder and dit.in_channels == 36
    cv = load_clip_vision(root / "clip_vision" / names["clip_vision"])
    tokens = cv.encode(torch.rand(2, 32, 32, 3))
    assert tokens.shape[0] == 2 and tokens.shape[-1] == dit.transformer.config.image_dim
    # Both tiny DiTs share width and depth, so the one demo InfiniteTalk-layout adapter fits both.
    adapter = load_audio_adapter(root / "model_patches" / names["audio_adapter"], dit)
    assert adapter is not None

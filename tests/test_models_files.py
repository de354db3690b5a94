"""Model files: clear errors for the wrong kind of file, truncated / empty / pickle files, weights that
do not fit and paths outside the model folder; file identity and Hugging Face folders."""

from __future__ import annotations

import os

import pytest
import torch

from avatar_cascade.core.errors import ModelFileError
from avatar_cascade.demo.layouts import dit_to_original_layout
from avatar_cascade.models import audio_encoder as A
from avatar_cascade.models import text_encoder as T
from avatar_cascade.models import wan_dit as W
from avatar_cascade.models import wan_vae as V
from avatar_cascade.models.files import file_identity, resolve_model_path
from tests.helpers import save_safetensors as _save

# ``tiny_dit_diffusers``, ``tiny_vae_file`` and ``tiny_te`` (per module) come from conftest.py.


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
    # The name is kept (a Hugging Face cache link's target has no extension); reading follows the link.
    found = resolve_model_path([root], "link.safetensors", "dit_name")
    assert found == root.resolve() / "link.safetensors"
    assert found.resolve() == (tmp_path / "secret.safetensors").resolve()
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

"""ComfyUI's own VAE, UMT5 and CLIP-vision objects at the tiny demo sizes, built inside a ComfyUI process.

ComfyUI's loader nodes hard-code the real widths (Wan VAE base 96, UMT5-XXL, CLIP ViT-H), so the tiny demo files
cannot go through VAELoader / CLIPLoader / CLIPVisionLoader. These builders run the same ComfyUI classes with the
tiny sizes instead: the Wan VAE class with its base width set to the demo's, the UMT5 text encoder (ComfyUI's T5
with its tokenizer from the file's ``spiece_model``) from a config of the demo's sizes, and ``ClipVisionModel``
from a config JSON. Only for tests (imported by the in-process checks and the test custom nodes); never part of
the pack.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch

from avatar_cascade.models.wan_dit import CONFIG_DIR


def _bundled(name: str) -> dict:
    return json.loads((CONFIG_DIR / name / "config.json").read_text())


def tiny_native_vae(state_dict: dict[str, torch.Tensor]):
    """``comfy.sd.VAE`` of the tiny demo VAE (original Wan layout): ComfyUI's Wan 2.1 VAE with base width 8."""
    import comfy.ldm.wan.vae as wan_vae
    import comfy.sd

    base = _bundled("avatar-cascade-tiny-wan-vae")["base_dim"]
    original = wan_vae.WanVAE.__init__

    def tiny_init(self, dim=128, **kwargs):
        original(self, dim=base, **kwargs)

    wan_vae.WanVAE.__init__ = tiny_init
    try:
        return comfy.sd.VAE(sd=dict(state_dict))
    finally:
        wan_vae.WanVAE.__init__ = original


def _t5_config_file(name: str, vocab: int) -> str:
    cfg = _bundled(name)
    cfg.update(vocab_size=vocab, dense_act_fn="gelu_pytorch_tanh")  # gelu_new: the same tanh GELU, ComfyUI's name
    path = Path(tempfile.mkdtemp(prefix="tiny_umt5_")) / "config.json"
    path.write_text(json.dumps(cfg))
    return str(path)


def tiny_native_clip(state_dict: dict[str, torch.Tensor], config_name: str = "avatar-cascade-tiny-umt5-wide"):
    """``comfy.sd.CLIP`` of a tiny UMT5 file (HF T5 keys + ``spiece_model``) with ComfyUI's Wan tokenizer and T5."""
    import comfy.sd
    import comfy.sd1_clip
    import comfy.supported_models_base
    import comfy.text_encoders.t5
    import comfy.text_encoders.wan

    sd = dict(state_dict)
    spiece = sd.pop("spiece_model")
    config = _t5_config_file(config_name, sd["shared.weight"].shape[0])

    class TinyUMT5(comfy.sd1_clip.SDClipModel):
        def __init__(self, device="cpu", layer="last", layer_idx=None, dtype=None, model_options=None):
            super().__init__(
                device=device,
                layer=layer,
                layer_idx=layer_idx,
                textmodel_json_config=config,
                dtype=dtype,
                special_tokens={"end": 1, "pad": 0},
                model_class=comfy.text_encoders.t5.T5,
                enable_attention_masks=True,
                zero_out_masked=True,
                model_options=model_options or {},
            )

    class TinyWanTE(comfy.sd1_clip.SD1ClipModel):
        def __init__(self, device="cpu", dtype=None, model_options=None):
            opts = model_options or {}
            super().__init__(device=device, dtype=dtype, model_options=opts, name="umt5xxl", clip_model=TinyUMT5)

    target = comfy.supported_models_base.ClipTarget(comfy.text_encoders.wan.WanT5Tokenizer, TinyWanTE)
    params = sum(v.numel() for v in sd.values())
    clip = comfy.sd.CLIP(target, tokenizer_data={"spiece_model": spiece}, parameters=params)
    missing, unexpected = clip.load_sd(sd)
    assert not unexpected and not [k for k in missing if "embed_tokens" not in k], (missing, unexpected)
    return clip


def tiny_native_clip_vision(state_dict: dict[str, torch.Tensor]):
    """``comfy.clip_vision.ClipVisionModel`` of the tiny demo CLIP vision (transformers keys)."""
    import comfy.clip_vision

    cfg = {k: v for k, v in _bundled("avatar-cascade-tiny-clip-vision").items() if not k.startswith("_")}
    path = Path(tempfile.mkdtemp(prefix="tiny_clip_vision_")) / "config.json"
    path.write_text(json.dumps(cfg))
    model = comfy.clip_vision.ClipVisionModel(str(path))
    missing, unexpected = model.load_sd(dict(state_dict))
    assert not missing, missing
    return model

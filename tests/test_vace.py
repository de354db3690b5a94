"""Wan VACE: the tiny VACE written in every key layout and read back through the real loader; full-size
1.3B / 14B layouts loaded strictly on the meta device; VACE's mask folding and control context; the
control hook."""

from __future__ import annotations

import pytest
import torch

from avatar_cascade.core.errors import ModelFileError
from avatar_cascade.demo.tiny_vace import TINY_VACE_VARIANT, tiny_vace_state_dict, vace_to_original_layout
from avatar_cascade.models import wan_dit as W
from avatar_cascade.models import wan_vace as V
from avatar_cascade.models.files import strict_load
from avatar_cascade.sampling.vace import fold_masks, vace_context, vace_control
from tests.helpers import meta_shapes
from tests.helpers import save_safetensors as _save

LAYOUTS = ["original", "model.diffusion_model.", "diffusion_model.", "diffusers"]


@pytest.fixture(scope="module")
def tiny_vace_diffusers():
    from diffusers import WanVACETransformer3DModel

    sd = tiny_vace_state_dict(0)
    model = V.vace_model_from_config(V.load_bundled_config(TINY_VACE_VARIANT))
    strict_load(model, W.to_diffusers_layout(sd), "dit", "<tiny>", "tiny VACE")
    assert isinstance(model, WanVACETransformer3DModel)
    return {k: v.clone() for k, v in model.state_dict().items()}


def _layout(sd_diffusers, layout):
    if layout == "diffusers":
        return dict(sd_diffusers)
    sd = vace_to_original_layout(sd_diffusers)
    return sd if layout == "original" else {layout + k: v for k, v in sd.items()}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_tiny_vace_round_trips_in_every_layout(tmp_path, tiny_vace_diffusers, layout):
    dit = W.load_wan_dit(_save(tmp_path / "vace.safetensors", _layout(tiny_vace_diffusers, layout)))
    assert dit.variant == TINY_VACE_VARIANT and V.is_vace(dit)
    assert dit.in_channels == 16 and list(dit.transformer.config.vace_layers) == [0, 1]
    loaded = dit.transformer.state_dict()
    assert set(loaded) == set(tiny_vace_diffusers)
    for k, v in tiny_vace_diffusers.items():
        assert torch.equal(loaded[k], v), k


def test_original_vace_layout_uses_wan_key_names(tiny_vace_diffusers):
    keys = set(vace_to_original_layout(tiny_vace_diffusers))
    for k in (
        "vace_patch_embedding.weight",
        "vace_blocks.0.before_proj.weight",
        "vace_blocks.0.after_proj.weight",
        "vace_blocks.1.after_proj.bias",
        "vace_blocks.1.self_attn.q.weight",
        "vace_blocks.0.cross_attn.o.weight",
        "vace_blocks.0.modulation",
        "vace_blocks.0.norm3.weight",
        "vace_blocks.1.ffn.0.weight",
        "blocks.0.self_attn.q.weight",
        "head.head.weight",
    ):
        assert k in keys, k
    assert not any(".proj_in." in k or ".attn1." in k or "scale_shift_table" in k for k in keys)
    assert not any(k.startswith("vace_blocks.1.before_proj") for k in keys)  # only block 0 projects its input


@pytest.mark.parametrize("variant", ["wan2.1-vace-1.3b", "wan2.1-vace-14b"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_full_size_vace_loads_strictly_on_meta(variant, layout):
    from diffusers import WanVACETransformer3DModel

    cfg = V.load_bundled_config(variant)
    shapes = meta_shapes(WanVACETransformer3DModel, cfg)
    assert sum(k.startswith("vace_blocks.") and k.endswith("after_proj.weight") for k in _layout(shapes, "original"))
    table = _layout(shapes, layout)
    found, found_cfg = V.match_vace(table)
    assert found == variant and found_cfg["vace_layers"] == cfg["vace_layers"]
    model = V.vace_model_from_config(found_cfg)
    meta = {k: torch.empty(s, device="meta") for k, s in table.items()}
    strict_load(model, W.to_diffusers_layout(W.strip_prefix(meta, W._PREFIXES)), "dit_name", "<meta>", variant)
    assert all(p.device.type == "meta" for p in model.parameters())
    n_layers, n_vace = cfg["num_layers"], len(cfg["vace_layers"])
    assert (n_layers, n_vace) == ((30, 15) if "1.3b" in variant else (40, 8))
    assert cfg["vace_layers"] == list(range(0, n_layers, n_layers // n_vace))


def test_full_size_vace_missing_block_is_refused():
    from diffusers import WanVACETransformer3DModel

    cfg = V.load_bundled_config("wan2.1-vace-1.3b")
    table = vace_to_original_layout(meta_shapes(WanVACETransformer3DModel, cfg))
    variant, found_cfg = V.match_vace(table)
    model = V.vace_model_from_config(found_cfg)
    meta = {k: torch.empty(s, device="meta") for k, s in table.items() if k != "vace_blocks.3.after_proj.weight"}
    with pytest.raises(ModelFileError, match="1 missing weights"):
        strict_load(model, W.to_diffusers_layout(meta), "dit_name", "<meta>", variant)


def test_unknown_vace_shape_gets_evenly_spaced_layers():
    from diffusers import WanVACETransformer3DModel

    cfg = V.load_bundled_config("wan2.1-vace-1.3b") | {"num_layers": 4, "vace_layers": [0, 2]}
    variant, found = V.match_vace(vace_to_original_layout(meta_shapes(WanVACETransformer3DModel, cfg)))
    assert variant == "wan-vace-custom" and found["vace_layers"] == [0, 2] and found["num_layers"] == 4


def test_fold_masks_is_wans_8x8_fold_then_nearest_latent_frames():
    g = torch.Generator().manual_seed(0)
    m = torch.rand(2, 9, 16, 24, generator=g)
    out = fold_masks(m, latent_frames=3)
    assert out.shape == (2, 64, 3, 2, 3)
    # before the temporal resample, channel dy*8+dx holds pixel (8y+dy, 8x+dx) (Wan's vace_encode_masks)
    full = fold_masks(m, latent_frames=9)
    for dy, dx in ((0, 0), (3, 5), (7, 7)):
        assert torch.equal(full[:, dy * 8 + dx], m[:, :, dy::8, dx::8])
    # nearest-exact from 9 frames to 3 latent frames reads frames 1, 4, 7
    assert torch.equal(out, full[:, :, [1, 4, 7]])


def test_vace_context_splits_known_and_generated_pixels(models):
    _, vae, _ = models
    g = torch.Generator().manual_seed(1)
    frames = torch.rand(1, 3, 5, 16, 16, generator=g) * 2 - 1
    masks = torch.ones(1, 5, 16, 16)
    masks[:, 0] = 0
    ctx = vace_context(vae, frames, masks)
    assert ctx.shape == (1, 96, 2, 2, 2)
    from avatar_cascade.sampling.conditioning import encode_video

    m = masks[:, None]
    assert torch.allclose(ctx[:, :16], encode_video(vae, frames * (1 - m)))
    assert torch.allclose(ctx[:, 16:32], encode_video(vae, frames * m))
    assert torch.equal(ctx[:, 32:], fold_masks(masks, 2))


def test_control_hook_feeds_the_context_and_strips_concat_channels(tmp_path, tiny_vace_diffusers):
    dit = W.load_wan_dit(_save(tmp_path / "v.safetensors", vace_to_original_layout(tiny_vace_diffusers)))
    tr = dit.transformer
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 16, 2, 4, 4, generator=g)
    extra = torch.randn(2, 20, 2, 4, 4, generator=g)  # the loop's mask + condition channels
    ctx = torch.randn(1, 96, 2, 4, 4, generator=g)
    text = torch.randn(2, 6, 32, generator=g)
    t = torch.tensor([500.0, 500.0])
    with torch.no_grad():
        want = tr(hidden_states=x, timestep=t, encoder_hidden_states=text, control_hidden_states=torch.cat([ctx] * 2),
                  control_hidden_states_scale=torch.full((2,), 0.7), return_dict=False)[0]
        with vace_control([tr], ctx, 0.7):
            got = tr(hidden_states=torch.cat([x, extra], 1), timestep=t, encoder_hidden_states=text,
                     return_dict=False)[0]
        zero = tr(hidden_states=x, timestep=t, encoder_hidden_states=text, control_hidden_states=torch.cat([ctx] * 2),
                  control_hidden_states_scale=torch.zeros(2), return_dict=False)[0]
    assert torch.equal(got, want)
    assert not torch.allclose(want, zero)  # the control reaches the output
    assert not tr._forward_pre_hooks  # removed after the block


def test_the_comfyui_shaped_tiny_vace_loads_as_its_own_variant(tmp_path):
    """The VACE UNETLoader accepts (1 head x 128, text 4096) in ComfyUI's repackaged layout: the pack's loader
    names it by its bundled config (no "custom" guess), and a config maps back to that variant."""
    from avatar_cascade.demo.models import COMFY_VACE_FILE, write_demo_models
    from avatar_cascade.demo.tiny_vace import TINY_COMFY_VACE_VARIANT

    names = write_demo_models(tmp_path, extended=True)
    assert names["comfy_vace_dit"] == COMFY_VACE_FILE
    dit = W.load_wan_dit(tmp_path / "diffusion_models" / COMFY_VACE_FILE)
    assert dit.variant == TINY_COMFY_VACE_VARIANT and V.is_vace(dit)
    assert V.vace_variant_of_config(V.load_bundled_config(TINY_COMFY_VACE_VARIANT)) == TINY_COMFY_VACE_VARIANT
    assert V.vace_variant_of_config(V.load_bundled_config("wan2.1-vace-14b")) == "wan2.1-vace-14b"
    assert V.vace_variant_of_config({**V.load_bundled_config("wan2.1-vace-14b"), "num_layers": 20}) == "wan-vace-custom"

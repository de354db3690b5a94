"""The stage nodes' model inputs take the pack's handles or ComfyUI's native objects (outside ComfyUI).

What runs without a ComfyUI: the input type unions, the dispatch of :func:`nodes.native_models.engine_model`
(the pack's handles pass through unchanged; an object of the wrong kind is refused naming the input and what
to connect), and the lip-sync node reading ComfyUI's own InfiniteTalk ``MODEL_PATCH`` (a module with the
published keys, as ComfyUI's ModelPatchLoader builds it). Native ``MODEL`` / ``VAE`` / ``CLIP`` sampling runs in
a real ComfyUI: tests/test_comfyui_native.py.
"""

from __future__ import annotations

import pytest
import torch

from avatar_cascade.core.errors import InputError
from nodes import NODE_CLASS_MAPPINGS
from nodes.native_models import engine_model

STAGES = ("AvatarCascadeBlueprintSampler", "AvatarCascadeKeyframeExtractor", "AvatarCascadeFLFRefiner")
UNIONS = {
    "dit": "AVATAR_DIT,MODEL",
    "vae": "AVATAR_VAE,VAE",
    "text_encoder": "AVATAR_TEXT_ENCODER,CLIP",
    "clip_vision": "AVATAR_CLIP_VISION,CLIP_VISION",
}


@pytest.mark.parametrize("node", STAGES)
def test_every_dit_sampling_stage_accepts_the_pack_handle_or_the_native_object(node):
    spec = NODE_CLASS_MAPPINGS[node].INPUT_TYPES()
    inputs = {**spec["required"], **spec.get("optional", {})}
    for name, union in UNIONS.items():
        assert inputs[name][0] == union, (node, name)
    lipsync = NODE_CLASS_MAPPINGS["AvatarCascadeAudioAdapterLoader"].INPUT_TYPES()
    assert lipsync["required"]["dit"][0] == UNIONS["dit"] and lipsync["optional"]["model_patch"][0] == "MODEL_PATCH"


def test_the_packs_handles_pass_through_unchanged(models):
    dit, vae, te = models
    assert engine_model(dit, "dit") is dit and engine_model(vae, "vae") is vae
    assert engine_model(te, "text_encoder") is te and engine_model(None, "clip_vision") is None


@pytest.mark.parametrize("kind", ["dit", "vae", "text_encoder", "clip_vision"])
def test_an_object_of_the_wrong_kind_is_refused_naming_the_input_and_the_fix(kind):
    with pytest.raises(InputError) as err:
        engine_model(torch.zeros(3), kind)
    text = str(err.value)
    assert kind in text and "Tensor" in text and "connect a" in text and UNIONS[kind].split(",")[1] in text


class _ModelPatch:
    """Stands for ComfyUI's ModelPatcher around its MultiTalkModelPatch: ``.model`` holds the published keys."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.model = module


def test_lipsync_node_reads_comfyuis_infinitetalk_model_patch(models, audio_adapter_file, monkeypatch):
    from safetensors.torch import load_file

    from avatar_cascade.models.audio_adapter import AudioAdapterModule, config_from_shapes

    monkeypatch.setenv("AVATAR_CASCADE_MODELS", str(audio_adapter_file.parents[1]))
    dit = models[0]
    node = NODE_CLASS_MAPPINGS["AvatarCascadeAudioAdapterLoader"]()
    sd = load_file(str(audio_adapter_file))
    heads = dit.transformer.config.num_attention_heads
    module = AudioAdapterModule(config_from_shapes({k: tuple(v.shape) for k, v in sd.items()}, heads))
    module.load_state_dict(sd)
    from_patch = node.load(dit, "none", 1.0, model_patch=_ModelPatch(module))[0].audio_adapter
    from_file = node.load(dit, audio_adapter_file.name, 1.0)[0].audio_adapter
    a, b = from_patch.module.state_dict(), from_file.module.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert from_patch.identity and from_patch.identity != from_file.identity  # a patch is keyed by its weights


def test_a_model_patch_that_is_not_infinitetalk_and_no_adapter_at_all_are_refused(models):
    node = NODE_CLASS_MAPPINGS["AvatarCascadeAudioAdapterLoader"]()
    with pytest.raises(InputError, match="model_patch.*not an InfiniteTalk"):
        node.load(models[0], "none", 1.0, model_patch=_ModelPatch(torch.nn.Linear(2, 2)))
    with pytest.raises(InputError, match="adapter_name.*no adapter is chosen.*MODEL_PATCH"):
        node.load(models[0], "none", 1.0)

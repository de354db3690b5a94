"""Lip-sync nodes: an InfiniteTalk/MultiTalk audio adapter onto the Wan DiT."""

from __future__ import annotations

from . import comfy_bridge as bridge
from ._common import DIT_TYPE

CATEGORY = "AvatarCascade/loaders"
ADAPTER_FOLDERS = ("model_patches", "diffusion_models")


def _adapter_names() -> list[str]:
    names: list[str] = []
    for kind in ADAPTER_FOLDERS:
        names += [n for n in bridge.list_models(kind) if n not in names]
    return names + ["none"]  # "none": the adapter comes from a connected MODEL_PATCH


def _resolve(name: str):
    for kind in ADAPTER_FOLDERS:
        if name in bridge.list_models(kind):
            return bridge.resolve_model(kind, name, "adapter_name")
    return bridge.resolve_model(ADAPTER_FOLDERS[0], name, "adapter_name")  # raises, listing what is there


class AvatarCascadeAudioAdapterLoader:
    DESCRIPTION = (
        "Adds lip-sync to a Wan 2.1 14B I2V/FLF2V DiT: loads an InfiniteTalk or MultiTalk audio adapter "
        "(audio projection + an audio cross-attention in every block) from models/model_patches or "
        "models/diffusion_models. The blueprint sampler and refiner then condition each clip on its own "
        "time-aligned audio (the Audio Aligner needs a chinese-wav2vec2-base audio encoder). The input DiT "
        "is not changed: other branches that use it stay without audio."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = ("AVATAR_DIT",)
    RETURN_NAMES = ("dit",)
    OUTPUT_TOOLTIPS = ("The same DiT weights with the audio adapter attached (audio-conditioned while sampling).",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "dit": (
                    DIT_TYPE,
                    {
                        "tooltip": "Wan 2.1 I2V or FLF2V 14B DiT (InfiniteTalk: trained on I2V 480P): the pack's DiT "
                        "or a native MODEL (the adapter then joins ComfyUI's blocks only while the cascade samples)."
                    },
                ),
                "adapter_name": (
                    _adapter_names(),
                    {
                        "tooltip": "InfiniteTalk/MultiTalk adapter (InfiniteTalk's single/infinitetalk.safetensors "
                        "or ComfyUI's repackaged file) in models/model_patches or models/diffusion_models."
                    },
                ),
                "strength": (
                    "FLOAT",
                    {
                        "default": 1.0,
                        "min": 0.0,
                        "max": 4.0,
                        "step": 0.05,
                        "tooltip": "Scale of the audio cross-attention output (1.0 = as trained; 0 = no lip-sync).",
                    },
                ),
            },
            "optional": {
                "model_patch": (
                    "MODEL_PATCH",
                    {
                        "tooltip": "ComfyUI's own InfiniteTalk patch (ModelPatchLoader, newer ComfyUI) instead of "
                        "adapter_name: the same weights, read from it."
                    },
                ),
            },
        }

    def load(self, dit, adapter_name, strength=1.0, model_patch=None):
        from avatar_cascade.core.errors import InputError
        from avatar_cascade.models.audio_adapter import audio_adapter_from_state_dict, load_audio_adapter

        from .native_models import engine_model, native_identity

        dit = engine_model(dit, "dit")
        if model_patch is not None:
            module = getattr(model_patch, "model", model_patch)
            if not hasattr(module, "state_dict") or not any(".audio_cross_attn." in k for k in module.state_dict()):
                raise InputError(
                    "model_patch",
                    type(module).__name__,
                    "is not an InfiniteTalk / MultiTalk patch",
                    "load wan2.1_infiniteTalk_single_fp16.safetensors with ModelPatchLoader",
                )
            sd = module.state_dict()
            adapter = audio_adapter_from_state_dict(sd, dit, native_identity(module), None, "model_patch", strength)
        elif adapter_name == "none":
            raise InputError(
                "adapter_name", "none", "no adapter is chosen", "pick an adapter file or connect a MODEL_PATCH"
            )
        else:
            adapter = load_audio_adapter(_resolve(adapter_name), dit, input_name="adapter_name", strength=strength)
        return (adapter.attach(dit),)


NODE_CLASS_MAPPINGS = {"AvatarCascadeAudioAdapterLoader": AvatarCascadeAudioAdapterLoader}
NODE_DISPLAY_NAME_MAPPINGS = {"AvatarCascadeAudioAdapterLoader": "Avatar Cascade: Load Audio Adapter (lip-sync)"}

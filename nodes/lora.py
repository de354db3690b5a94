"""LoRA nodes: build an ``AVATAR_LORA`` stack and apply it to a DiT (model in, model out)."""

from __future__ import annotations

from . import comfy_bridge as bridge

CATEGORY = "AvatarCascade/loaders"


class AvatarCascadeLoRAStack:
    DESCRIPTION = (
        "Adds one Wan LoRA (ComfyUI, kohya/musubi or diffusers format, from models/loras) to a LoRA stack. Chain "
        "stacks through prev_lora, then connect the stack to 'Apply LoRA Stack'. Changing a strength later does not "
        "reload the DiT."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = ("AVATAR_LORA",)
    RETURN_NAMES = ("lora",)
    OUTPUT_TOOLTIPS = ("The ordered LoRA stack (this LoRA after the ones of prev_lora).",)
    FUNCTION = "stack"

    @classmethod
    def INPUT_TYPES(cls):
        from avatar_cascade.models.lora import LORA_TARGETS

        return {
            "required": {
                "lora_name": (bridge.list_models("loras"), {"tooltip": "A Wan 2.1 / 2.2 LoRA in models/loras."}),
                "strength": (
                    "FLOAT",
                    {
                        "default": 1.0,
                        "min": -10.0,
                        "max": 10.0,
                        "step": 0.05,
                        "tooltip": "How much of the LoRA to add (1.0 = as trained, 0 = off, negative subtracts).",
                    },
                ),
                "apply_to": (
                    list(LORA_TARGETS),
                    {
                        "default": "all",
                        "tooltip": "Wan 2.2 A14B: which expert gets this LoRA (high_noise / low_noise LoRA files). "
                        "Other DiTs always get it.",
                    },
                ),
            },
            "optional": {"prev_lora": ("AVATAR_LORA", {"tooltip": "LoRAs applied before this one (optional)."})},
        }

    def stack(self, lora_name, strength, apply_to="all", prev_lora=None):
        from avatar_cascade.models.lora import lora_spec, stack_loras

        path = bridge.resolve_model("loras", lora_name, "lora_name")
        return (stack_loras(prev_lora, lora_spec(path, strength, apply_to, input_name="lora_name")),)


class AvatarCascadeApplyLoRA:
    DESCRIPTION = (
        "Applies a LoRA stack to a Wan DiT: returns a DiT that samples with these LoRAs at these strengths. The "
        "base weights are shared and never changed (peft adapters), so several stacks can use one loaded DiT."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = ("AVATAR_DIT",)
    RETURN_NAMES = ("dit",)
    OUTPUT_TOOLTIPS = ("The DiT with the LoRA stack (feeds the blueprint sampler / refiner).",)
    FUNCTION = "apply"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "dit": ("AVATAR_DIT", {"tooltip": "The Wan DiT from 'Load Wan DiT'."}),
                "lora": ("AVATAR_LORA", {"tooltip": "The LoRA stack from 'LoRA Stack' nodes."}),
            }
        }

    def apply(self, dit, lora):
        from avatar_cascade.models.lora import apply_loras

        return (apply_loras(dit, lora, input_name="lora"),)


NODE_CLASS_MAPPINGS = {
    "AvatarCascadeLoRAStack": AvatarCascadeLoRAStack,
    "AvatarCascadeApplyLoRA": AvatarCascadeApplyLoRA,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "AvatarCascadeLoRAStack": "Avatar Cascade: LoRA Stack",
    "AvatarCascadeApplyLoRA": "Avatar Cascade: Apply LoRA Stack",
}

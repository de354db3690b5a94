"""Loader nodes: model files from ComfyUI's folders -> engine model handles."""

from __future__ import annotations

from . import comfy_bridge as bridge

CATEGORY = "AvatarCascade/loaders"


def _file_input(kind: str, tooltip: str) -> tuple:
    return (bridge.list_models(kind), {"tooltip": tooltip})


class AvatarCascadeDiTLoader:
    DESCRIPTION = (
        "Loads a Wan video DiT (Wan 2.1 I2V / FLF2V / T2V, Wan 2.2) single-file safetensors from "
        "models/diffusion_models — original, ComfyUI-repackaged or diffusers key layout. For Wan 2.2 A14B pick the "
        "high-noise expert here and the low-noise expert below; the samplers switch experts at 'boundary'. "
        "'offload' runs big DiTs on small GPUs (diffusers group offloading)."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = ("AVATAR_DIT",)
    RETURN_NAMES = ("dit",)
    OUTPUT_TOOLTIPS = ("The Wan DiT used by the blueprint sampler and the refiner.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        from avatar_cascade.models.attention import ATTENTION_CHOICES
        from avatar_cascade.models.offload import OFFLOAD_CHOICES

        return {
            "required": {"dit_name": _file_input("diffusion_models", "Wan DiT file in models/diffusion_models.")},
            "optional": {
                "low_noise_dit_name": (
                    ["none", *bridge.list_models("diffusion_models")],
                    {
                        "default": "none",
                        "tooltip": "Wan 2.2 A14B only: the low-noise expert (…_low_noise_14B…); dit_name is then the "
                        "high-noise expert. 'none' for every other model.",
                    },
                ),
                "boundary": (
                    "FLOAT",
                    {
                        "default": 0.9,
                        "min": 0.01,
                        "max": 0.99,
                        "step": 0.005,
                        "tooltip": "Wan 2.2 A14B: the high-noise expert denoises while t >= boundary x 1000 "
                        "(0.9 for I2V A14B, 0.875 for T2V A14B).",
                    },
                ),
                "attention": (
                    list(ATTENTION_CHOICES),
                    {
                        "default": "auto",
                        "tooltip": "Attention kernel: sdpa (torch), flash (flash-attn package), sage (sageattention "
                        "package, faster, slightly different), auto = flash when installed, else sdpa. CPU: sdpa.",
                    },
                ),
                "offload": (
                    list(OFFLOAD_CHOICES),
                    {
                        "default": "none",
                        "tooltip": "Low-VRAM mode: block keeps one transformer block on the GPU at a time, leaf one "
                        "layer (least memory, slowest). none = whole DiT on the GPU (fastest).",
                    },
                ),
            },
        }

    def load(self, dit_name, low_noise_dit_name="none", boundary=0.9, attention="auto", offload="none"):
        from avatar_cascade.models.dit_runtime import configure_dit
        from avatar_cascade.models.wan_dit import load_wan_dit, load_wan_experts

        path = bridge.resolve_model("diffusion_models", dit_name, "dit_name")
        if low_noise_dit_name in (None, "", "none"):
            dit = load_wan_dit(path, input_name="dit_name")
        else:
            low = bridge.resolve_model("diffusion_models", low_noise_dit_name, "low_noise_dit_name")
            dit = load_wan_experts(path, low, boundary_ratio=boundary)
        return (configure_dit(dit, attention=attention, offload=offload, device=bridge.compute_device()),)


class AvatarCascadeCLIPVisionLoader:
    DESCRIPTION = (
        "Loads the CLIP ViT-H/14 image encoder (clip_vision_h.safetensors) from models/clip_vision. Wan 2.1 I2V and "
        "FLF2V DiTs need it: they also attend to CLIP tokens of the first (and last) frame."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = ("AVATAR_CLIP_VISION",)
    RETURN_NAMES = ("clip_vision",)
    OUTPUT_TOOLTIPS = ("Image encoder for Wan 2.1 I2V / FLF2V (not needed by Wan 2.2 or T2V DiTs).",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {"clip_name": _file_input("clip_vision", "clip_vision_h.safetensors in models/clip_vision.")}
        }

    def load(self, clip_name):
        from avatar_cascade.models.clip_vision import load_clip_vision

        return (load_clip_vision(bridge.resolve_model("clip_vision", clip_name, "clip_name"), input_name="clip_name"),)


class AvatarCascadeVAELoader:
    DESCRIPTION = "Loads a Wan 2.1 VAE from models/vae (original or diffusers layout)."
    CATEGORY = CATEGORY
    RETURN_TYPES = ("AVATAR_VAE",)
    RETURN_NAMES = ("vae",)
    OUTPUT_TOOLTIPS = ("The Wan VAE that encodes keyframes and decodes clips.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"vae_name": _file_input("vae", "Wan VAE file in models/vae.")}}

    def load(self, vae_name):
        from avatar_cascade.models.wan_vae import load_wan_vae

        return (load_wan_vae(bridge.resolve_model("vae", vae_name, "vae_name"), input_name="vae_name"),)


class AvatarCascadeTextEncoderLoader:
    DESCRIPTION = "Loads the UMT5 text encoder (ComfyUI's text_encoders file, tokenizer carried inside) for Wan."
    CATEGORY = CATEGORY
    RETURN_TYPES = ("AVATAR_TEXT_ENCODER",)
    RETURN_NAMES = ("text_encoder",)
    OUTPUT_TOOLTIPS = ("Encodes the storyline's global and shot prompts.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"text_encoder_name": _file_input("text_encoders", "UMT5 file in models/text_encoders.")}}

    def load(self, text_encoder_name):
        from avatar_cascade.models.text_encoder import load_text_encoder

        path = bridge.resolve_model("text_encoders", text_encoder_name, "text_encoder_name")
        return (load_text_encoder(path, input_name="text_encoder_name"),)


class AvatarCascadeAudioEncoderLoader:
    DESCRIPTION = "Loads a wav2vec2-family audio encoder (base, chinese-base, large-xlsr) from models/audio_encoders."
    CATEGORY = CATEGORY
    RETURN_TYPES = ("AVATAR_AUDIO_ENCODER",)
    RETURN_NAMES = ("audio_encoder",)
    OUTPUT_TOOLTIPS = ("Audio features for lip-sync, extracted once by the Audio Aligner.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {"audio_encoder_name": _file_input("audio_encoders", "wav2vec2 file in models/audio_encoders.")}
        }

    def load(self, audio_encoder_name):
        from avatar_cascade.models.audio_encoder import load_audio_encoder

        path = bridge.resolve_model("audio_encoders", audio_encoder_name, "audio_encoder_name")
        return (load_audio_encoder(path, input_name="audio_encoder_name"),)


class AvatarCascadeMLLMLoader:
    DESCRIPTION = (
        "Loads a local multimodal LLM folder from models/LLM for the Director: Qwen2.5-Omni (thinker), "
        "Qwen2.5-VL or Qwen3-VL. No downloads, no remote code."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = ("AVATAR_MLLM",)
    RETURN_NAMES = ("mllm",)
    OUTPUT_TOOLTIPS = ("The Director's multimodal LLM.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "mllm_name": (
                    bridge.list_models("LLM", folders=True),
                    {"tooltip": "A Hugging Face model folder inside models/LLM."},
                )
            }
        }

    def load(self, mllm_name):
        from avatar_cascade.models.mllm import load_mllm

        path = bridge.resolve_model("LLM", mllm_name, "mllm_name")
        return (load_mllm(path, input_name="mllm_name", dtype=bridge.make_runtime().dtype),)


NODE_CLASS_MAPPINGS = {
    "AvatarCascadeDiTLoader": AvatarCascadeDiTLoader,
    "AvatarCascadeCLIPVisionLoader": AvatarCascadeCLIPVisionLoader,
    "AvatarCascadeVAELoader": AvatarCascadeVAELoader,
    "AvatarCascadeTextEncoderLoader": AvatarCascadeTextEncoderLoader,
    "AvatarCascadeAudioEncoderLoader": AvatarCascadeAudioEncoderLoader,
    "AvatarCascadeMLLMLoader": AvatarCascadeMLLMLoader,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "AvatarCascadeDiTLoader": "Avatar Cascade: Load Wan DiT",
    "AvatarCascadeCLIPVisionLoader": "Avatar Cascade: Load CLIP Vision (Wan I2V)",
    "AvatarCascadeVAELoader": "Avatar Cascade: Load Wan VAE",
    "AvatarCascadeTextEncoderLoader": "Avatar Cascade: Load UMT5 Text Encoder",
    "AvatarCascadeAudioEncoderLoader": "Avatar Cascade: Load Audio Encoder",
    "AvatarCascadeMLLMLoader": "Avatar Cascade: Load Director MLLM",
}

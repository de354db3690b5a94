"""The model files and sample media the shipped workflows name, and where ComfyUI keeps each role.

A role maps to a plain file / folder name (the demo models, made locally) or to a
``(name, public download URL or None)`` pair. The UI twins list the downloadable ones under ``models`` (the
frontend's missing-model downloads: each entry needs a URL) and the others under
``extra.avatar_cascade_local_models`` with where to get them.
"""

from __future__ import annotations

DEMO_MODELS = {
    "dit": "avatar_cascade_tiny_wan_flf.safetensors",
    "vae": "avatar_cascade_tiny_wan_vae.safetensors",
    "text_encoder": "avatar_cascade_tiny_umt5.safetensors",
    "audio_encoder": "avatar_cascade_tiny_wav2vec2.safetensors",
    "mllm": "avatar-cascade-tiny-qwen25-vl",
    "audio_adapter": "avatar_cascade_tiny_infinitetalk.safetensors",
}
SAMPLE_IMAGE = "avatar_cascade_sample_portrait.png"
SAMPLE_AUDIO = "avatar_cascade_sample_speech.flac"
KEY_IMAGES = ("avatar_cascade_key_01.png", "avatar_cascade_key_02.png", "avatar_cascade_key_03.png")

HF_WAN21 = "https://huggingface.co/Comfy-Org/Wan_2.1_ComfyUI_repackaged/resolve/main/split_files"
# role -> (file or folder name as ComfyUI lists it, public download URL or None)
WAN21_480P_MODELS = {
    "dit": (
        "wan2.1_flf2v_720p_14B_fp16.safetensors",
        f"{HF_WAN21}/diffusion_models/wan2.1_flf2v_720p_14B_fp16.safetensors",
    ),
    "vae": ("wan_2.1_vae.safetensors", f"{HF_WAN21}/vae/wan_2.1_vae.safetensors"),
    "text_encoder": (
        "umt5_xxl_fp8_e4m3fn_scaled.safetensors",
        f"{HF_WAN21}/text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors",
    ),
    "clip_vision": ("clip_vision_h.safetensors", f"{HF_WAN21}/clip_vision/clip_vision_h.safetensors"),
    "audio_encoder": (
        "wav2vec2-chinese-base_fp16.safetensors",
        f"{HF_WAN21}/audio_encoders/wav2vec2-chinese-base_fp16.safetensors",
    ),
    "audio_adapter": (
        "wan2.1_infiniteTalk_single_fp16.safetensors",
        f"{HF_WAN21}/model_patches/wan2.1_infiniteTalk_single_fp16.safetensors",
    ),
    # Folders (Hugging Face snapshots) have no single-file URL the frontend could download.
    "mllm": ("Qwen2.5-Omni-7B", None),
}
WAN21_LOWVRAM_MODELS = {
    "dit": (
        "wan2.1_fun_inp_1.3B_bf16.safetensors",
        f"{HF_WAN21}/diffusion_models/wan2.1_fun_inp_1.3B_bf16.safetensors",
    ),
    "vae": WAN21_480P_MODELS["vae"],
    "text_encoder": WAN21_480P_MODELS["text_encoder"],
    "clip_vision": WAN21_480P_MODELS["clip_vision"],
    "audio_encoder": WAN21_480P_MODELS["audio_encoder"],
    "mllm": ("Qwen2.5-VL-3B-Instruct", None),
}
INBETWEEN_MODELS = {k: WAN21_480P_MODELS[k] for k in ("dit", "vae", "text_encoder", "clip_vision")}
# ComfyUI's own loaders feed the cascade (UNETLoader, LoraLoaderModelOnly, CLIPLoader, VAELoader,
# CLIPVisionLoader): the fp8 FLF2V file for 16 GB cards, and a LoRA of the artist's (here the widely used
# lightx2v step-distill LoRA, whose regime the graph's sampler widgets follow: 4 steps, no CFG).
NATIVE_MODELS = {
    **WAN21_480P_MODELS,
    "dit": (
        "wan2.1_flf2v_720p_14B_fp8_e4m3fn.safetensors",
        f"{HF_WAN21}/diffusion_models/wan2.1_flf2v_720p_14B_fp8_e4m3fn.safetensors",
    ),
    "lora": (
        "lightx2v_I2V_14B_480p_cfg_step_distill_rank64_bf16.safetensors",
        "https://huggingface.co/Kijai/WanVideo_comfy/resolve/main/Lightx2v/"
        "lightx2v_I2V_14B_480p_cfg_step_distill_rank64_bf16.safetensors",
    ),
}

# role -> ComfyUI model folder
MODEL_FOLDERS = {
    "dit": "diffusion_models",
    "vae": "vae",
    "text_encoder": "text_encoders",
    "audio_encoder": "audio_encoders",
    "mllm": "LLM",
    "audio_adapter": "model_patches",
    "clip_vision": "clip_vision",
    "lora": "loras",
    "vace_dit": "diffusion_models",
}


def model_names(models: dict) -> dict:
    """role -> the file or folder name alone (URLs dropped)."""
    return {role: (v[0] if isinstance(v, tuple) else v) for role, v in models.items()}


def model_list(models: dict) -> list[dict]:
    """The UI twin's model entries: name, ComfyUI folder and the download URL, or, for what the frontend cannot
    download (the tiny demo models, made locally; an MLLM, a whole Hugging Face repository), where to get it."""
    out = []
    for role, v in models.items():
        name, url = v if isinstance(v, tuple) else (v, None)
        entry = {"name": name, "directory": MODEL_FOLDERS[role]}
        if url:
            entry["url"] = url
        elif isinstance(v, tuple):  # a model folder: the repository of that name, downloaded whole
            entry["source"] = f"https://huggingface.co/Qwen/{name} (the whole repository, as models/LLM/{name})"
        else:
            entry["source"] = "python -m avatar_cascade demo-models --out <ComfyUI>/models"
        out.append(entry)
    return out

"""The shipped workflow graphs, in ComfyUI's API format (``{node id: {class_type, inputs, _meta}}``).

A link is ``[source node id, output slot]``. Key order is the order written to ``workflows/``
(node ids and inputs alike), so the builders below keep it. ``WORKFLOWS`` names every shipped
graph with the models it uses; ``scripts/make_workflows.py`` writes them with their UI twins.
"""

from __future__ import annotations

from workflow_models import (
    DEMO_MODELS,
    INBETWEEN_MODELS,
    KEY_IMAGES,
    NATIVE_MODELS,
    SAMPLE_AUDIO,
    SAMPLE_IMAGE,
    WAN21_480P_MODELS,
    WAN21_LOWVRAM_MODELS,
    model_names,
)

KEYFRAME_WEIGHTS = (
    '{"identity": 1.0, "sharpness": 0.5, "face": 0.5, "mouth": 0.5, "colour": 0.5, "centre": 0.25, "diversity": 0.25}'
)
INBETWEEN_PROMPT = "A hand-drawn cartoon character moves smoothly from one pose to the next, clean lines."
DEMO_INSTRUCTION = "A friendly presenter talks to the camera. Smile at 0:02."


# --- node builders shared by the graphs -------------------------------------------------------


def node(class_type: str, inputs: dict, title: str | None = None) -> dict:
    """One API-format node; ``title`` becomes ``_meta.title``."""
    out = {"class_type": class_type, "inputs": inputs}
    if title is not None:
        out["_meta"] = {"title": title}
    return out


def dit_loader(dit_name: str) -> dict:
    return node(
        "AvatarCascadeDiTLoader",
        {"dit_name": dit_name, "low_noise_dit_name": "none", "boundary": 0.9, "attention": "auto", "offload": "none"},
    )


def sampling(steps: int = 0, guidance: float = -1.0, shift: float = -1.0, scheduler: str = "auto") -> dict:
    """The sampler settings every denoising node takes, in widget order (default: all auto = the DiT's preset)."""
    return {"steps": steps, "guidance": guidance, "shift": shift, "scheduler": scheduler, "seed": 0}


GUIDANCE_TAIL = {"guidance_low_noise": -1.0, "audio_guidance": -1.0, "negative_prompt": "auto"}


def flf_refiner(
    dit: list,
    vae: list,
    text_encoder: list,
    keyframes: list,
    timeline: list,
    storyline: list,
    *,
    batch_size: int,
    cache_folder: str,
    clip_vision: list | None = None,
) -> dict:
    inputs = {
        "dit": dit,
        "vae": vae,
        "text_encoder": text_encoder,
        "keyframes": keyframes,
        "timeline": timeline,
        "storyline": storyline,
        **sampling(),
        "batch_size": batch_size,
        "negative_frame_strength": 0.0,
        "reroll": "",
        "cache_folder": cache_folder,
    }
    if clip_vision is not None:
        inputs["clip_vision"] = clip_vision
    local = {"devices": "auto", "backend": "local", "ray_address": "auto", "ray_workers": 0, "ray_path_map": ""}
    return node("AvatarCascadeFLFRefiner", {**inputs, **GUIDANCE_TAIL, **local})


def clip_stitcher(clips: list, timeline: list, *, filename_prefix: str, crf: int, colour_match: float) -> dict:
    return node(
        "AvatarCascadeClipStitcher",
        {
            "clips": clips,
            "timeline": timeline,
            "filename_prefix": filename_prefix,
            "crf": crf,
            "codec": "h264",
            "pix_fmt": "yuv420p",
            "colour_match": colour_match,
            "crossfade": True,
            "interpolate": 1,
            "interpolation": "flow",
            "output_height": 0,
            "upscale_tile": 512,
            "max_image_frames": 300,
        },
    )


# --- the tiny demo, one group of nodes at a time ----------------------------------------------


def _demo_media() -> dict:
    return {
        "1": node("LoadImage", {"image": SAMPLE_IMAGE}, "Reference image"),
        "2": node("LoadAudio", {"audio": SAMPLE_AUDIO}, "Speech"),
    }


def _demo_loaders() -> dict:
    m = DEMO_MODELS
    return {
        "3": dit_loader(m["dit"]),
        "4": node("AvatarCascadeVAELoader", {"vae_name": m["vae"]}),
        "5": node("AvatarCascadeTextEncoderLoader", {"text_encoder_name": m["text_encoder"]}),
        "6": node("AvatarCascadeAudioEncoderLoader", {"audio_encoder_name": m["audio_encoder"]}),
        "7": node("AvatarCascadeMLLMLoader", {"mllm_name": m["mllm"]}),
        "14": node(
            "AvatarCascadeAudioAdapterLoader",
            {"dit": ["3", 0], "adapter_name": m["audio_adapter"], "strength": 1.0},
            "Lip-sync adapter (InfiniteTalk layout)",
        ),
    }


def _demo_aligner_director() -> dict:
    aligner = {
        "audio": ["2", 0],
        "fps": 16.0,
        "clip_frames": 17,
        "audio_encoder": ["6", 0],
        "snap_seams_frames": 4,
        "max_duration_s": 1800.0,
        "loudness_lufs": 0.0,
    }
    director = {
        "image": ["1", 0],
        "timeline": ["8", 0],
        "mllm": ["7", 0],
        "seed": 0,
        "max_new_tokens": 96,
        "instruction": DEMO_INSTRUCTION,
    }
    return {"8": node("AvatarCascadeAudioAligner", aligner), "9": node("AvatarCascadeDirector", director)}


def _demo_blueprint_keyframes() -> dict:
    blueprint = {
        "dit": ["14", 0],
        "vae": ["4", 0],
        "text_encoder": ["5", 0],
        "image": ["1", 0],
        "timeline": ["8", 0],
        "storyline": ["9", 0],
        "width": 32,
        "height": 32,
        "framing": "bucket",
        "blueprint_fps": 8.0,
        "window_frames": 17,
        "lead_frames": 4,
        "prompt_mode": "majority",
        **sampling(),
        "work_folder": "demo",
        "batch_size": 0,
        **GUIDANCE_TAIL,
    }
    keyframes = {
        "blueprint": ["10", 0],
        "timeline": ["8", 0],
        "image": ["1", 0],
        "width": 64,
        "height": 64,
        "framing": "bucket",
        "search_radius_s": 0.25,
        "colour_match": 1.0,
        "weights": KEYFRAME_WEIGHTS,
        "lift_denoise": 0.3,
        "lift_steps": 0,
        "seed": 0,
        "work_folder": "demo",
        "dit": ["3", 0],
        "vae": ["4", 0],
        "text_encoder": ["5", 0],
        "storyline": ["9", 0],
    }
    return {
        "10": node("AvatarCascadeBlueprintSampler", blueprint),
        "11": node("AvatarCascadeKeyframeExtractor", keyframes),
    }


def _demo_refine_stitch() -> dict:
    return {
        "12": flf_refiner(
            ["14", 0],
            ["4", 0],
            ["5", 0],
            ["11", 0],
            ["8", 0],
            ["9", 0],
            batch_size=2,
            cache_folder="demo_clips",
        ),
        "13": clip_stitcher(["12", 0], ["8", 0], filename_prefix="avatar_cascade/demo", crf=23, colour_match=1.0),
    }


def demo_graph() -> dict:
    """The tiny demo: all six stages with the demo models (output is noise; every stage runs)."""
    return {
        **_demo_media(),
        **_demo_loaders(),
        **_demo_aligner_director(),
        **_demo_blueprint_keyframes(),
        **_demo_refine_stitch(),
    }


# --- the real-model graphs: the demo with other models and settings ---------------------------


def _with_clip_vision(g: dict, name: str, targets: tuple[str, ...]) -> None:
    g["15"] = node("AvatarCascadeCLIPVisionLoader", {"clip_name": name})
    for nid in targets:
        g[nid]["inputs"]["clip_vision"] = ["15", 0]


def wan21_480p_graph() -> dict:
    """Wan 2.1 FLF2V-14B + InfiniteTalk lip-sync adapter + Qwen2.5-Omni director, refined at 832x480, 25 fps."""
    m = model_names(WAN21_480P_MODELS)
    g = demo_graph()
    g["3"]["inputs"]["dit_name"] = m["dit"]
    g["4"]["inputs"]["vae_name"] = m["vae"]
    g["5"]["inputs"]["text_encoder_name"] = m["text_encoder"]
    g["6"]["inputs"]["audio_encoder_name"] = m["audio_encoder"]
    g["7"]["inputs"]["mllm_name"] = m["mllm"]
    g["14"]["inputs"]["adapter_name"] = m["audio_adapter"]
    g["8"]["inputs"].update(fps=25.0, clip_frames=81, snap_seams_frames=8)
    g["9"]["inputs"].update(max_new_tokens=1024)
    g["10"]["inputs"].update(width=416, height=240, blueprint_fps=8.0, window_frames=33, lead_frames=8)
    g["10"]["inputs"].update(work_folder="wan21_480p")
    g["11"]["inputs"].update(width=832, height=480, work_folder="wan21_480p")
    g["12"]["inputs"].update(batch_size=0, cache_folder="wan21_480p_clips")
    # rendered at 480p / 25 fps, written at 1080p / 50 fps (flow interpolation + resize; add an upscale model)
    g["13"]["inputs"].update(filename_prefix="avatar_cascade/wan21_480p", crf=19, interpolate=2, output_height=1080)
    _with_clip_vision(g, m["clip_vision"], ("10", "11", "12"))
    return g


def wan21_lowvram_graph() -> dict:
    """Wan 2.1 Fun-InP 1.3B (36-channel first/last-frame DiT) with block offload, Qwen2.5-VL-3B director, 16 fps."""
    m = model_names(WAN21_LOWVRAM_MODELS)
    g = wan21_480p_graph()
    del g["14"]  # InfiniteTalk exists for the 14B DiTs only
    g["3"]["inputs"].update(dit_name=m["dit"], offload="block")
    g["7"]["inputs"]["mllm_name"] = m["mllm"]
    g["10"]["inputs"]["dit"] = ["3", 0]
    g["12"]["inputs"]["dit"] = ["3", 0]
    g["8"]["inputs"].update(fps=16.0, clip_frames=81, snap_seams_frames=8)
    g["9"]["inputs"].update(max_new_tokens=512)
    g["10"]["inputs"].update(work_folder="wan21_lowvram")
    g["11"]["inputs"].update(work_folder="wan21_lowvram")
    g["12"]["inputs"].update(batch_size=1, cache_folder="wan21_lowvram_clips")
    g["13"]["inputs"].update(filename_prefix="avatar_cascade/wan21_lowvram")
    g["15"]["inputs"]["clip_name"] = m["clip_vision"]
    return g


# --- in-betweening: drawn keys instead of a blueprint ------------------------------------------


def inbetween_graph() -> dict:
    """ToonCrafter-style in-betweening: drawn keys -> FLF2V refiner fills each gap -> one video (silent track)."""
    m = model_names(INBETWEEN_MODELS)
    keys = {"segment_frames": 33, "fps": 16.0, "width": 832, "height": 480, "prompt": INBETWEEN_PROMPT}
    return {
        "1": node("LoadImage", {"image": KEY_IMAGES[0]}, "Key 1"),
        "2": node("LoadImage", {"image": KEY_IMAGES[1]}, "Key 2"),
        "3": node("LoadImage", {"image": KEY_IMAGES[2]}, "Key 3"),
        "4": node("ImageBatch", {"image1": ["1", 0], "image2": ["2", 0]}),
        "5": node("ImageBatch", {"image1": ["4", 0], "image2": ["3", 0]}),
        "6": dit_loader(m["dit"]),
        "7": node("AvatarCascadeVAELoader", {"vae_name": m["vae"]}),
        "8": node("AvatarCascadeTextEncoderLoader", {"text_encoder_name": m["text_encoder"]}),
        "9": node("AvatarCascadeCLIPVisionLoader", {"clip_name": m["clip_vision"]}),
        "10": node("AvatarCascadeKeyframesFromImages", {"images": ["5", 0], **keys}),
        "11": flf_refiner(
            ["6", 0],
            ["7", 0],
            ["8", 0],
            ["10", 0],
            ["10", 1],
            ["10", 2],
            batch_size=0,
            cache_folder="inbetween_clips",
            clip_vision=["9", 0],
        ),
        "12": clip_stitcher(["11", 0], ["10", 1], filename_prefix="avatar_cascade/inbetween", crf=19, colour_match=0.0),
    }


# --- ComfyUI's native loaders feeding the cascade ------------------------------------------------


def native_graph() -> dict:
    """The Wan 2.1 480p graph on ComfyUI's own loaders: UNETLoader (fp8 FLF2V) -> LoraLoaderModelOnly -> the
    lip-sync adapter and the stages; CLIPLoader (wan), VAELoader and CLIPVisionLoader for the rest. Sampler
    widgets follow the LoRA's regime (lightx2v step distill: 4 steps, guidance 1, shift 5)."""
    m = model_names(NATIVE_MODELS)
    g = wan21_480p_graph()
    g["3"] = node("UNETLoader", {"unet_name": m["dit"], "weight_dtype": "default"}, "Wan DiT (UNETLoader)")
    g["16"] = node(
        "LoraLoaderModelOnly", {"model": ["3", 0], "lora_name": m["lora"], "strength_model": 1.0}, "Your LoRA"
    )
    g["4"] = node("VAELoader", {"vae_name": m["vae"]})
    g["5"] = node("CLIPLoader", {"clip_name": m["text_encoder"], "type": "wan", "device": "default"})
    g["15"] = node("CLIPVisionLoader", {"clip_name": m["clip_vision"]})
    g["14"]["inputs"]["dit"] = ["16", 0]
    g["11"]["inputs"]["dit"] = ["16", 0]
    for nid in ("10", "12"):
        g[nid]["inputs"].update(steps=4, guidance=1.0, shift=5.0)
    g["11"]["inputs"].update(lift_steps=4)
    for nid, folder in (("10", "native"), ("11", "native")):
        g[nid]["inputs"]["work_folder"] = folder
    g["12"]["inputs"]["cache_folder"] = "native_clips"
    g["13"]["inputs"]["filename_prefix"] = "avatar_cascade/native"
    return g


# file stem in workflows/ -> (graph builder, models it uses)
WORKFLOWS = {
    "avatar_cascade_demo": (demo_graph, DEMO_MODELS),
    "avatar_cascade_wan21_480p": (wan21_480p_graph, WAN21_480P_MODELS),
    "avatar_cascade_wan21_1.3b_lowvram": (wan21_lowvram_graph, WAN21_LOWVRAM_MODELS),
    "avatar_cascade_inbetween": (inbetween_graph, INBETWEEN_MODELS),
    "avatar_cascade_native": (native_graph, NATIVE_MODELS),
}

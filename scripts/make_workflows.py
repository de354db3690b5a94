"""Write the shipped workflows: each graph in API format and its UI-format twin.

The graphs are defined once here (API format); the UI format is derived from
the node classes' INPUT_TYPES (widgets in order, ``control_after_generate``
after seeds) so the twins cannot drift. Run from the repository root:

    python scripts/make_workflows.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nodes import NODE_CLASS_MAPPINGS  # noqa: E402

# ComfyUI core nodes used by our workflows: widget inputs and outputs.
CORE_NODES = {
    "LoadImage": {
        "widgets": [("image", "COMBO"), ("upload", "IMAGEUPLOAD")],
        "outputs": [("IMAGE", "IMAGE"), ("MASK", "MASK")],
    },
    "LoadAudio": {"widgets": [("audio", "COMBO"), ("upload", "AUDIOUPLOAD")], "outputs": [("AUDIO", "AUDIO")]},
    "ImageBatch": {
        "widgets": [],
        "inputs": [("image1", "IMAGE"), ("image2", "IMAGE")],
        "outputs": [("IMAGE", "IMAGE")],
    },
}

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
KEYFRAME_WEIGHTS = (
    '{"identity": 1.0, "sharpness": 0.5, "face": 0.5, "mouth": 0.5, "colour": 0.5, "centre": 0.25, "diversity": 0.25}'
)


def demo_graph() -> dict:
    """The tiny demo: all six stages with the demo models (output is noise; every stage runs)."""
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": SAMPLE_IMAGE}, "_meta": {"title": "Reference image"}},
        "2": {"class_type": "LoadAudio", "inputs": {"audio": SAMPLE_AUDIO}, "_meta": {"title": "Speech"}},
        "3": {
            "class_type": "AvatarCascadeDiTLoader",
            "inputs": {
                "dit_name": DEMO_MODELS["dit"],
                "low_noise_dit_name": "none",
                "boundary": 0.9,
                "attention": "auto",
                "offload": "none",
            },
        },
        "4": {"class_type": "AvatarCascadeVAELoader", "inputs": {"vae_name": DEMO_MODELS["vae"]}},
        "5": {
            "class_type": "AvatarCascadeTextEncoderLoader",
            "inputs": {"text_encoder_name": DEMO_MODELS["text_encoder"]},
        },
        "6": {
            "class_type": "AvatarCascadeAudioEncoderLoader",
            "inputs": {"audio_encoder_name": DEMO_MODELS["audio_encoder"]},
        },
        "7": {"class_type": "AvatarCascadeMLLMLoader", "inputs": {"mllm_name": DEMO_MODELS["mllm"]}},
        "14": {
            "class_type": "AvatarCascadeAudioAdapterLoader",
            "inputs": {"dit": ["3", 0], "adapter_name": DEMO_MODELS["audio_adapter"], "strength": 1.0},
            "_meta": {"title": "Lip-sync adapter (InfiniteTalk layout)"},
        },
        "8": {
            "class_type": "AvatarCascadeAudioAligner",
            "inputs": {
                "audio": ["2", 0],
                "fps": 16.0,
                "clip_frames": 17,
                "audio_encoder": ["6", 0],
                "snap_seams_frames": 4,
                "max_duration_s": 1800.0,
                "loudness_lufs": 0.0,
            },
        },
        "9": {
            "class_type": "AvatarCascadeDirector",
            "inputs": {
                "image": ["1", 0],
                "timeline": ["8", 0],
                "mllm": ["7", 0],
                "seed": 0,
                "max_new_tokens": 96,
                "instruction": "A friendly presenter talks to the camera. Smile at 0:02.",
            },
        },
        "10": {
            "class_type": "AvatarCascadeBlueprintSampler",
            "inputs": {
                "dit": ["14", 0],
                "vae": ["4", 0],
                "text_encoder": ["5", 0],
                "image": ["1", 0],
                "timeline": ["8", 0],
                "storyline": ["9", 0],
                "width": 32,
                "height": 32,
                "blueprint_fps": 8.0,
                "window_frames": 17,
                "overlap_frames": 1,
                "reanchor": 0.5,
                "prompt_mode": "majority",
                "steps": 4,
                "guidance": 3.0,
                "shift": 3.0,
                "scheduler": "unipc",
                "seed": 0,
                "work_folder": "demo",
                "guidance_low_noise": -1.0,
                "audio_guidance": 4.0,
            },
        },
        "11": {
            "class_type": "AvatarCascadeKeyframeExtractor",
            "inputs": {
                "blueprint": ["10", 0],
                "timeline": ["8", 0],
                "image": ["1", 0],
                "width": 64,
                "height": 64,
                "search_radius_s": 0.25,
                "colour_match": 1.0,
                "weights": KEYFRAME_WEIGHTS,
                "lift_denoise": 0.0,
                "lift_steps": 4,
                "seed": 0,
                "work_folder": "demo",
            },
        },
        "12": {
            "class_type": "AvatarCascadeFLFRefiner",
            "inputs": {
                "dit": ["14", 0],
                "vae": ["4", 0],
                "text_encoder": ["5", 0],
                "keyframes": ["11", 0],
                "timeline": ["8", 0],
                "storyline": ["9", 0],
                "steps": 4,
                "guidance": 3.0,
                "shift": 3.0,
                "scheduler": "unipc",
                "seed": 0,
                "batch_size": 2,
                "negative_frame_strength": 0.0,
                "reroll": "",
                "cache_folder": "demo_clips",
                "guidance_low_noise": -1.0,
                "audio_guidance": 4.0,
                "devices": "auto",
            },
        },
        "13": {
            "class_type": "AvatarCascadeClipStitcher",
            "inputs": {
                "clips": ["12", 0],
                "timeline": ["8", 0],
                "filename_prefix": "avatar_cascade/demo",
                "crf": 23,
                "codec": "h264",
                "pix_fmt": "yuv420p",
                "colour_match": 1.0,
                "crossfade": True,
                "double_fps": False,
                "max_image_frames": 300,
            },
        },
    }


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
KEY_IMAGES = ("avatar_cascade_key_01.png", "avatar_cascade_key_02.png", "avatar_cascade_key_03.png")


def _names(models: dict) -> dict:
    return {role: (v[0] if isinstance(v, tuple) else v) for role, v in models.items()}


def _with_clip_vision(g: dict, name: str, targets: tuple[str, ...]) -> None:
    g["15"] = {"class_type": "AvatarCascadeCLIPVisionLoader", "inputs": {"clip_name": name}}
    for nid in targets:
        g[nid]["inputs"]["clip_vision"] = ["15", 0]


def wan21_480p_graph() -> dict:
    """Wan 2.1 FLF2V-14B + InfiniteTalk lip-sync adapter + Qwen2.5-Omni director, refined at 832x480, 25 fps."""
    m = _names(WAN21_480P_MODELS)
    g = demo_graph()
    g["3"]["inputs"]["dit_name"] = m["dit"]
    g["4"]["inputs"]["vae_name"] = m["vae"]
    g["5"]["inputs"]["text_encoder_name"] = m["text_encoder"]
    g["6"]["inputs"]["audio_encoder_name"] = m["audio_encoder"]
    g["7"]["inputs"]["mllm_name"] = m["mllm"]
    g["14"]["inputs"]["adapter_name"] = m["audio_adapter"]
    g["8"]["inputs"].update(fps=25.0, clip_frames=81, snap_seams_frames=8)
    g["9"]["inputs"].update(max_new_tokens=1024)
    g["10"]["inputs"].update(
        width=416, height=240, blueprint_fps=8.0, window_frames=33, steps=20, guidance=5.0, work_folder="wan21_480p"
    )
    g["11"]["inputs"].update(width=832, height=480, lift_steps=20, work_folder="wan21_480p")
    g["12"]["inputs"].update(steps=30, guidance=5.0, shift=5.0, batch_size=0, cache_folder="wan21_480p_clips")
    g["13"]["inputs"].update(filename_prefix="avatar_cascade/wan21_480p", crf=19)
    _with_clip_vision(g, m["clip_vision"], ("10", "11", "12"))
    return g


def wan21_lowvram_graph() -> dict:
    """Wan 2.1 Fun-InP 1.3B (36-channel first/last-frame DiT) with block offload, Qwen2.5-VL-3B director, 16 fps."""
    m = _names(WAN21_LOWVRAM_MODELS)
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


def inbetween_graph() -> dict:
    """ToonCrafter-style in-betweening: drawn keys -> FLF2V refiner fills each gap -> one video (silent track)."""
    m = _names(INBETWEEN_MODELS)
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": KEY_IMAGES[0]}, "_meta": {"title": "Key 1"}},
        "2": {"class_type": "LoadImage", "inputs": {"image": KEY_IMAGES[1]}, "_meta": {"title": "Key 2"}},
        "3": {"class_type": "LoadImage", "inputs": {"image": KEY_IMAGES[2]}, "_meta": {"title": "Key 3"}},
        "4": {"class_type": "ImageBatch", "inputs": {"image1": ["1", 0], "image2": ["2", 0]}},
        "5": {"class_type": "ImageBatch", "inputs": {"image1": ["4", 0], "image2": ["3", 0]}},
        "6": {
            "class_type": "AvatarCascadeDiTLoader",
            "inputs": {
                "dit_name": m["dit"],
                "low_noise_dit_name": "none",
                "boundary": 0.9,
                "attention": "auto",
                "offload": "none",
            },
        },
        "7": {"class_type": "AvatarCascadeVAELoader", "inputs": {"vae_name": m["vae"]}},
        "8": {"class_type": "AvatarCascadeTextEncoderLoader", "inputs": {"text_encoder_name": m["text_encoder"]}},
        "9": {"class_type": "AvatarCascadeCLIPVisionLoader", "inputs": {"clip_name": m["clip_vision"]}},
        "10": {
            "class_type": "AvatarCascadeKeyframesFromImages",
            "inputs": {
                "images": ["5", 0],
                "segment_frames": 33,
                "fps": 16.0,
                "width": 832,
                "height": 480,
                "prompt": "A hand-drawn cartoon character moves smoothly from one pose to the next, clean lines.",
            },
        },
        "11": {
            "class_type": "AvatarCascadeFLFRefiner",
            "inputs": {
                "dit": ["6", 0],
                "vae": ["7", 0],
                "text_encoder": ["8", 0],
                "keyframes": ["10", 0],
                "timeline": ["10", 1],
                "storyline": ["10", 2],
                "steps": 30,
                "guidance": 5.0,
                "shift": 5.0,
                "scheduler": "unipc",
                "seed": 0,
                "batch_size": 0,
                "negative_frame_strength": 0.0,
                "reroll": "",
                "cache_folder": "inbetween_clips",
                "clip_vision": ["9", 0],
                "guidance_low_noise": -1.0,
                "audio_guidance": 4.0,
                "devices": "auto",
            },
        },
        "12": {
            "class_type": "AvatarCascadeClipStitcher",
            "inputs": {
                "clips": ["11", 0],
                "timeline": ["10", 1],
                "filename_prefix": "avatar_cascade/inbetween",
                "crf": 19,
                "codec": "h264",
                "pix_fmt": "yuv420p",
                "colour_match": 0.0,
                "crossfade": True,
                "double_fps": False,
                "max_image_frames": 300,
            },
        },
    }


WORKFLOWS = {
    "avatar_cascade_demo": (demo_graph, DEMO_MODELS),
    "avatar_cascade_wan21_480p": (wan21_480p_graph, WAN21_480P_MODELS),
    "avatar_cascade_wan21_1.3b_lowvram": (wan21_lowvram_graph, WAN21_LOWVRAM_MODELS),
    "avatar_cascade_inbetween": (inbetween_graph, INBETWEEN_MODELS),
}
MODEL_FOLDERS = {
    "dit": "diffusion_models",
    "vae": "vae",
    "text_encoder": "text_encoders",
    "audio_encoder": "audio_encoders",
    "mllm": "LLM",
    "audio_adapter": "model_patches",
    "clip_vision": "clip_vision",
}


def node_spec(class_type: str) -> tuple[list[tuple[str, str, dict]], list[tuple[str, str]]]:
    """(inputs as (name, type, options) in declaration order, outputs as (name, type))."""
    if class_type in CORE_NODES:
        core = CORE_NODES[class_type]
        return [(n, t, {}) for n, t in core.get("inputs", []) + core["widgets"]], core["outputs"]
    cls = NODE_CLASS_MAPPINGS[class_type]
    spec = cls.INPUT_TYPES()
    inputs = []
    for section in ("required", "optional"):
        for name, val in spec.get(section, {}).items():
            typ = "COMBO" if isinstance(val[0], list) else val[0]
            inputs.append((name, typ, val[1] if len(val) > 1 else {}))
    names = getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES)
    return inputs, list(zip(names, cls.RETURN_TYPES))


WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO", "IMAGEUPLOAD", "AUDIOUPLOAD"}


NODE_WIDTH = 300


def node_height(n_inputs: int, n_outputs: int, n_widgets: int) -> int:
    """Approximate frontend height (px) of a node: title, one row per slot, one per widget."""
    return 30 + 22 * max(n_inputs, n_outputs, 1) + 24 * n_widgets


def layout(api: dict) -> dict[str, tuple[int, int]]:
    """Node positions: one column per dependency depth (sources left), nodes stacked without overlap."""
    depth: dict[str, int] = {}

    def visit(nid: str) -> int:
        if nid not in depth:
            ups = [v[0] for v in api[nid]["inputs"].values() if isinstance(v, list)]
            depth[nid] = 1 + max((visit(u) for u in ups), default=-1)
        return depth[nid]

    for nid in api:
        visit(nid)
    pos, column_y = {}, {}
    for nid in api:
        inputs, outputs = node_spec(api[nid]["class_type"])
        n_links = sum(1 for _, typ, _ in inputs if typ not in WIDGET_TYPES)
        n_widgets = len(inputs) - n_links
        d = depth[nid]
        y = column_y.get(d, 60)
        pos[nid] = (40 + (NODE_WIDTH + 60) * d, y)
        column_y[d] = y + node_height(n_links, len(outputs), n_widgets) + 50
    return pos


def api_to_ui(api: dict, models: list[dict]) -> dict:
    """UI-format (version 0.4) twin of an API-format graph, laid out left to right."""
    nodes, links = [], []
    link_id = 0
    order = {nid: i for i, nid in enumerate(api)}
    pos = layout(api)
    pending = []
    for nid, node in api.items():
        inputs, outputs = node_spec(node["class_type"])
        ui_inputs, widgets = [], []
        for name, typ, opts in inputs:
            val = node["inputs"].get(name)
            if typ in WIDGET_TYPES:
                if typ == "IMAGEUPLOAD":
                    widgets.append("image")
                    continue
                if typ == "AUDIOUPLOAD":
                    widgets.append(None)
                    continue
                widgets.append(val)
                if opts.get("control_after_generate"):
                    widgets.append("fixed")
            else:
                entry = {"name": name, "type": typ, "link": None}
                if isinstance(val, list):
                    link_id += 1
                    entry["link"] = link_id
                    pending.append((link_id, val[0], val[1], nid, len(ui_inputs), typ))
                ui_inputs.append(entry)
        nodes.append(
            {
                "id": int(nid),
                "type": node["class_type"],
                "pos": list(pos[nid]),
                "size": [NODE_WIDTH, node_height(len(ui_inputs), len(outputs), len(widgets))],
                "flags": {},
                "order": order[nid],
                "mode": 0,
                "inputs": ui_inputs,
                "outputs": [{"name": n, "type": t, "links": []} for n, t in outputs],
                "properties": {
                    "Node name for S&R": node["class_type"],
                    **({"cnr_id": "avatar-cascade"} if node["class_type"] not in CORE_NODES else {}),
                },
                "widgets_values": widgets,
                "title": node.get("_meta", {}).get("title"),
            }
        )
        if nodes[-1]["title"] is None:
            del nodes[-1]["title"]
    by_id = {str(n["id"]): n for n in nodes}
    for lid, src, slot, dst, dst_slot, typ in pending:
        links.append([lid, int(src), slot, int(dst), dst_slot, typ])
        by_id[str(src)]["outputs"][slot]["links"].append(lid)
    return {
        "last_node_id": max(int(k) for k in api),
        "last_link_id": link_id,
        "nodes": nodes,
        "links": links,
        "groups": [],
        "config": {},
        "extra": {"ds": {"scale": 0.8, "offset": [0, 0]}},
        "version": 0.4,
        "models": models,
    }


def main() -> None:
    out = ROOT / "workflows"
    out.mkdir(exist_ok=True)
    for name, (graph_fn, models) in WORKFLOWS.items():
        api = graph_fn()
        model_list = []
        for role, v in models.items():
            name_, url = v if isinstance(v, tuple) else (v, None)
            model_list.append({"name": name_, "directory": MODEL_FOLDERS[role], **({"url": url} if url else {})})
        (out / f"{name}_api.json").write_text(json.dumps(api, indent=2) + "\n")
        (out / f"{name}.json").write_text(json.dumps(api_to_ui(api, model_list), indent=2) + "\n")
        print("wrote", name)


if __name__ == "__main__":
    main()

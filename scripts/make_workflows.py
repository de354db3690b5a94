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


WORKFLOWS = {"avatar_cascade_demo": (demo_graph, DEMO_MODELS)}
MODEL_FOLDERS = {
    "dit": "diffusion_models",
    "vae": "vae",
    "text_encoder": "text_encoders",
    "audio_encoder": "audio_encoders",
    "mllm": "LLM",
    "audio_adapter": "model_patches",
}


def node_spec(class_type: str) -> tuple[list[tuple[str, str, dict]], list[tuple[str, str]]]:
    """(inputs as (name, type, options) in declaration order, outputs as (name, type))."""
    if class_type in CORE_NODES:
        core = CORE_NODES[class_type]
        return [(n, t, {}) for n, t in core["widgets"]], core["outputs"]
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


def api_to_ui(api: dict, models: list[dict]) -> dict:
    """UI-format (version 0.4) twin of an API-format graph, laid out left to right."""
    nodes, links = [], []
    link_id = 0
    order = {nid: i for i, nid in enumerate(api)}
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
                "pos": [40 + 330 * (order[nid] % 5), 60 + 420 * (order[nid] // 5)],
                "size": [300, 120 + 26 * len(widgets)],
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
        model_list = [{"name": f, "directory": MODEL_FOLDERS[role]} for role, f in models.items()]
        (out / f"{name}_api.json").write_text(json.dumps(api, indent=2) + "\n")
        (out / f"{name}.json").write_text(json.dumps(api_to_ui(api, model_list), indent=2) + "\n")
        print("wrote", name)


if __name__ == "__main__":
    main()

"""Write the shipped workflows: each graph in API format and its UI-format twin.

The graphs are defined once, in API format, in ``scripts/workflow_graphs.py`` (the models they
name in ``scripts/workflow_models.py``); the UI format is derived here from the node classes'
INPUT_TYPES (widgets in order, ``control_after_generate`` after seeds) so the twins cannot drift.
Run from the repository root:

    python scripts/make_workflows.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = Path(__file__).resolve().parent
# The repository root for ``nodes``; this folder for the sibling modules (already on sys.path when
# run as a script, not when loaded by path with importlib).
for _p in (ROOT, SCRIPTS):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from workflow_graphs import (  # noqa: E402
    KEYFRAME_WEIGHTS,
    WORKFLOWS,
    demo_graph,
    inbetween_graph,
    wan21_480p_graph,
    wan21_lowvram_graph,
)
from workflow_guided import GUIDED_WORKFLOWS  # noqa: E402
from workflow_models import (  # noqa: E402
    DEMO_MODELS,
    HF_WAN21,
    INBETWEEN_MODELS,
    KEY_IMAGES,
    MODEL_FOLDERS,
    SAMPLE_AUDIO,
    SAMPLE_IMAGE,
    WAN21_480P_MODELS,
    WAN21_LOWVRAM_MODELS,
    model_list,
)
from workflow_subgraphs import cut_subgraph  # noqa: E402

from nodes import NODE_CLASS_MAPPINGS  # noqa: E402

# Kept importable from here: the graphs and model tables lived in this module before the split.
__all__ = [
    "DEMO_MODELS",
    "HF_WAN21",
    "INBETWEEN_MODELS",
    "KEY_IMAGES",
    "KEYFRAME_WEIGHTS",
    "MODEL_FOLDERS",
    "SAMPLE_AUDIO",
    "SAMPLE_IMAGE",
    "WAN21_480P_MODELS",
    "WAN21_LOWVRAM_MODELS",
    "WORKFLOWS",
    "api_to_ui",
    "cascade_blueprint",
    "demo_graph",
    "inbetween_graph",
    "layout",
    "main",
    "node_height",
    "node_spec",
    "wan21_480p_graph",
    "wan21_lowvram_graph",
]

# ComfyUI core nodes used by our workflows: widget inputs and outputs.
CORE_NODES = {
    "LoadImage": {
        "widgets": [("image", "COMBO"), ("upload", "IMAGEUPLOAD")],
        "outputs": [("IMAGE", "IMAGE"), ("MASK", "MASK")],
    },
    "LoadAudio": {"widgets": [("audio", "COMBO"), ("upload", "AUDIOUPLOAD")], "outputs": [("AUDIO", "AUDIO")]},
    "UNETLoader": {"widgets": [("unet_name", "COMBO"), ("weight_dtype", "COMBO")], "outputs": [("MODEL", "MODEL")]},
    "LoraLoaderModelOnly": {
        "widgets": [("lora_name", "COMBO"), ("strength_model", "FLOAT")],
        "inputs": [("model", "MODEL")],
        "outputs": [("MODEL", "MODEL")],
    },
    "VAELoader": {"widgets": [("vae_name", "COMBO")], "outputs": [("VAE", "VAE")]},
    "CLIPLoader": {
        "widgets": [("clip_name", "COMBO"), ("type", "COMBO"), ("device", "COMBO")],
        "outputs": [("CLIP", "CLIP")],
    },
    "CLIPVisionLoader": {"widgets": [("clip_name", "COMBO")], "outputs": [("CLIP_VISION", "CLIP_VISION")]},
    "ImageBatch": {
        "widgets": [],
        "inputs": [("image1", "IMAGE"), ("image2", "IMAGE")],
        "outputs": [("IMAGE", "IMAGE")],
    },
}
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO", "IMAGEUPLOAD", "AUDIOUPLOAD"}
NODE_WIDTH = 300


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


def _slots(nid: str, node: dict, inputs: list, pending: list) -> tuple[list[dict], list]:
    """A node's UI link inputs and widget values; each link is queued on ``pending`` (its id: the count so far)."""
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
                entry["link"] = len(pending) + 1
                pending.append((entry["link"], val[0], val[1], nid, len(ui_inputs), typ))
            ui_inputs.append(entry)
    return ui_inputs, widgets


def _ui_node(nid: str, node: dict, order: int, pos: tuple[int, int], pending: list) -> dict:
    """The UI-format entry of one API node (links queued on ``pending``, wired up by ``api_to_ui``)."""
    inputs, outputs = node_spec(node["class_type"])
    ui_inputs, widgets = _slots(nid, node, inputs, pending)
    out = {
        "id": int(nid),
        "type": node["class_type"],
        "pos": list(pos),
        "size": [NODE_WIDTH, node_height(len(ui_inputs), len(outputs), len(widgets))],
        "flags": {},
        "order": order,
        "mode": 0,
        "inputs": ui_inputs,
        "outputs": [{"name": n, "type": t, "links": []} for n, t in outputs],
        "properties": {
            "Node name for S&R": node["class_type"],
            **({"cnr_id": "avatar-cascade"} if node["class_type"] not in CORE_NODES else {}),
        },
        "widgets_values": widgets,
    }
    title = node.get("_meta", {}).get("title")
    if title is not None:
        out["title"] = title
    return out


def api_to_ui(api: dict, models: list[dict]) -> dict:
    """UI-format (version 0.4) twin of an API-format graph, laid out left to right."""
    pos = layout(api)
    pending: list[tuple] = []
    nodes = [_ui_node(nid, node, i, pos[nid], pending) for i, (nid, node) in enumerate(api.items())]
    by_id = {str(n["id"]): n for n in nodes}
    links = []
    for lid, src, slot, dst, dst_slot, _ in pending:
        out = by_id[str(src)]["outputs"][slot]
        links.append([lid, int(src), slot, int(dst), dst_slot, out["type"]])  # the type that flows: the output's
        out["links"].append(lid)
    return {
        "last_node_id": max(int(k) for k in api),
        "last_link_id": len(pending),
        "nodes": nodes,
        "links": links,
        "groups": [],
        "config": {},
        "extra": {
            "ds": {"scale": 0.8, "offset": [0, 0]},
            # what the frontend cannot download (its models entries need a URL): made locally or a whole repository
            **({"avatar_cascade_local_models": local} if (local := [m for m in models if "url" not in m]) else {}),
        },
        "version": 0.4,
        "models": [m for m in models if "url" in m],
    }


# The cascade blueprint (subgraphs/): cut from the production Wan 2.1 480p graph. Its six stages go inside;
# the loaders stay outside (ours or ComfyUI's own); the per-run widgets are promoted onto the node.
CASCADE_STAGES = (
    "AvatarCascadeAudioAligner",
    "AvatarCascadeDirector",
    "AvatarCascadeBlueprintSampler",
    "AvatarCascadeKeyframeExtractor",
    "AvatarCascadeFLFRefiner",
    "AvatarCascadeClipStitcher",
)
BLUEPRINT_DESCRIPTION = (
    "Kling-Avatar cascade in one node: Audio Aligner, MLLM Director, Blueprint DiT Sampler, Keyframe Extractor, "
    "First-Last-Frame Refiner and Clip Stitcher. Wire a reference image, a speech or singing track, the "
    "loaders (Avatar Cascade's or ComfyUI's own MODEL / CLIP / VAE / CLIP_VISION) and an instruction."
)


def cascade_blueprint() -> dict:
    """``subgraphs/avatar_cascade.json``: the six stages of the Wan 2.1 480p graph as one subgraph node."""
    api = wan21_480p_graph()
    members = [nid for nid, n in api.items() if n["class_type"] in CASCADE_STAGES]
    ids = {api[nid]["class_type"]: nid for nid in members}
    assert len(ids) == len(CASCADE_STAGES) == len(members), ids
    feeds = {cls: {k: v for k, v in api[ids[cls]]["inputs"].items() if isinstance(v, list)} for cls in ids}
    lift_dit = tuple(feeds["AvatarCascadeKeyframeExtractor"]["dit"])
    stitcher = ids["AvatarCascadeClipStitcher"]
    return cut_subgraph(
        api,
        members,
        name="Avatar Cascade (Kling-Avatar)",
        description=BLUEPRINT_DESCRIPTION,
        category="Avatar Cascade",
        input_names={lift_dit: "keyframe_dit"},  # the plain DiT of the keyframe lift (no audio adapter)
        outputs=[(stitcher, slot) for slot in range(len(node_spec("AvatarCascadeClipStitcher")[1]))],
        promoted=[
            (ids["AvatarCascadeDirector"], "instruction"),
            (ids["AvatarCascadeBlueprintSampler"], "seed"),
            (ids["AvatarCascadeFLFRefiner"], "seed"),
            (stitcher, "filename_prefix"),
        ],
        ui_node=_ui_node,
        node_spec=node_spec,
        layout=layout,
    )


def main() -> None:
    sub = ROOT / "subgraphs"
    sub.mkdir(exist_ok=True)
    (sub / "avatar_cascade.json").write_text(json.dumps(cascade_blueprint(), indent=2) + "\n")
    print("wrote subgraphs/avatar_cascade.json")
    out = ROOT / "workflows"
    out.mkdir(exist_ok=True)
    for name, (graph_fn, models) in {**WORKFLOWS, **GUIDED_WORKFLOWS}.items():
        api = graph_fn()
        (out / f"{name}_api.json").write_text(json.dumps(api, indent=2) + "\n")
        (out / f"{name}.json").write_text(json.dumps(api_to_ui(api, model_list(models)), indent=2) + "\n")
        print("wrote", name)


if __name__ == "__main__":
    main()

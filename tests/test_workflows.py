"""Shipped workflows: only existing node ids, matching input names and widget counts, UI == API graph."""

import json
from pathlib import Path

import pytest

from nodes import NODE_CLASS_MAPPINGS

WF = Path(__file__).resolve().parents[1] / "workflows"
# ComfyUI core node ids our workflows may use, with their widget counts in the UI format.
CORE = {
    "LoadImage": 2,
    "LoadAudio": 2,
    "ImageBatch": 0,
    "UNETLoader": 2,
    "LoraLoaderModelOnly": 2,
    "VAELoader": 1,
    "CLIPLoader": 3,
    "CLIPVisionLoader": 1,
}
# ComfyUI core node ids -> their linked (non-widget) inputs, as declared in ComfyUI's nodes.py.
CORE_LINKED = {n: set() for n in CORE} | {"ImageBatch": {"image1", "image2"}, "LoraLoaderModelOnly": {"model"}}
# ComfyUI's own loaders: (class, widget) -> the models folder it reads.
CORE_MODEL_WIDGETS = {
    ("UNETLoader", "unet_name"): "diffusion_models",
    ("LoraLoaderModelOnly", "lora_name"): "loras",
    ("VAELoader", "vae_name"): "vae",
    ("CLIPLoader", "clip_name"): "text_encoders",
    ("CLIPVisionLoader", "clip_name"): "clip_vision",
}
# Loader widgets naming a model file / folder -> the ComfyUI models folder it is looked up in.
MODEL_WIDGETS = {
    "dit_name": "diffusion_models",
    "vae_name": "vae",
    "text_encoder_name": "text_encoders",
    "audio_encoder_name": "audio_encoders",
    "mllm_name": "LLM",
    "adapter_name": "model_patches",
    "clip_name": "clip_vision",
}
API_FILES = sorted(WF.glob("*_api.json"))


def _widget_names(cls):
    spec = cls.INPUT_TYPES()
    names = []
    for section in ("required", "optional"):
        for name, val in spec.get(section, {}).items():
            if isinstance(val[0], list) or val[0] in ("INT", "FLOAT", "STRING", "BOOLEAN"):
                names.append((name, (val[1] if len(val) > 1 else {}).get("control_after_generate", False)))
    return names


def _all_inputs(cls):
    spec = cls.INPUT_TYPES()
    return {n for s in ("required", "optional") for n in spec.get(s, {})}, set(spec.get("required", {}))


def test_there_are_workflows():
    assert API_FILES, "no API workflows shipped"
    for api in API_FILES:
        assert (WF / api.name.replace("_api.json", ".json")).is_file(), f"{api.name} has no UI-format twin"


@pytest.mark.parametrize("path", API_FILES, ids=lambda p: p.name)
def test_api_workflow_names_real_nodes_and_inputs(path):
    api = json.loads(path.read_text())
    for nid, node in api.items():
        ct = node["class_type"]
        assert ct in NODE_CLASS_MAPPINGS or ct in CORE, f"node {nid}: unknown class_type {ct}"
        if ct in CORE:
            linked = {k for k, v in node["inputs"].items() if isinstance(v, list)}
            assert linked == CORE_LINKED[ct], f"node {nid} ({ct}): linked inputs {linked}"
            continue
        allowed, required = _all_inputs(NODE_CLASS_MAPPINGS[ct])
        given = set(node["inputs"])
        assert given <= allowed, f"node {nid} ({ct}): unknown inputs {given - allowed}"
        assert required <= given, f"node {nid} ({ct}): missing inputs {required - given}"
        for name, val in node["inputs"].items():
            if isinstance(val, list):
                assert val[0] in api, f"node {nid}.{name} links to missing node {val[0]}"
    text = path.read_text()
    assert "/home/" not in text and "/root/" not in text and ":\\\\" not in text, "absolute path in workflow"


@pytest.mark.parametrize("path", API_FILES, ids=lambda p: p.name)
def test_ui_twin_describes_the_same_graph(path):
    api = json.loads(path.read_text())
    ui = json.loads((WF / path.name.replace("_api.json", ".json")).read_text())
    assert ui["version"] == 0.4 and isinstance(ui["links"], list)
    nodes = {str(n["id"]): n for n in ui["nodes"]}
    assert set(nodes) == set(api)
    link_by_id = {lk[0]: lk for lk in ui["links"]}
    for nid, node in api.items():
        un = nodes[nid]
        assert un["type"] == node["class_type"]
        ct = node["class_type"]
        # Links: every API link appears as a UI link into the input of the same name.
        ui_links = {}
        for slot, inp in enumerate(un["inputs"]):
            if inp["link"] is not None:
                lk = link_by_id[inp["link"]]
                assert lk[3] == int(nid) and lk[4] == slot
                ui_links[inp["name"]] = [str(lk[1]), lk[2]]
        api_links = {k: v for k, v in node["inputs"].items() if isinstance(v, list)}
        assert ui_links == api_links, f"node {nid}: links differ"
        # Widgets: same count as INPUT_TYPES declares, same values in order.
        if ct in CORE:
            assert len(un["widgets_values"]) == CORE[ct]
            if CORE[ct]:
                first_widget = next(v for v in node["inputs"].values() if not isinstance(v, list))
                assert un["widgets_values"][0] == first_widget
            continue
        expected = []
        for name, has_control in _widget_names(NODE_CLASS_MAPPINGS[ct]):
            expected.append(node["inputs"][name])
            if has_control:
                expected.append("fixed")
        assert un["widgets_values"] == expected, f"node {nid} ({ct}): widget values differ"


@pytest.mark.parametrize(
    "path", [p for p in sorted(WF.glob("*.json")) if not p.name.endswith("_api.json")], ids=lambda p: p.name
)
def test_ui_workflows_list_their_models(path):
    ui = json.loads(path.read_text())
    local = ui["extra"].get("avatar_cascade_local_models", [])
    assert ui["models"] or local, "the UI twin tells users what to download"
    for m in ui["models"]:  # the frontend's schema (1.58) wants name, url and directory on every entry
        assert set(m) >= {"name", "directory", "url"} and "/" not in m["name"]
        assert m["url"].startswith("https://huggingface.co/") and m["url"].endswith("/" + m["name"]), m
    for m in local:
        assert set(m) >= {"name", "directory", "source"} and "url" not in m, m


@pytest.mark.parametrize("path", API_FILES, ids=lambda p: p.name)
def test_every_model_the_graph_loads_is_in_the_ui_models_list(path):
    api = json.loads(path.read_text())
    ui = json.loads((WF / path.name.replace("_api.json", ".json")).read_text())
    listed = {(m["directory"], m["name"]) for m in ui["models"] + ui["extra"].get("avatar_cascade_local_models", [])}
    used = set()
    for node in api.values():
        for k, v in node["inputs"].items():
            folder = CORE_MODEL_WIDGETS.get((node["class_type"], k)) if node["class_type"] in CORE else None
            folder = folder or (MODEL_WIDGETS.get(k) if node["class_type"] not in CORE else None)
            if folder and v != "none":
                used.add((folder, v))
    assert used == listed, f"loaded but not listed: {used - listed}; listed but unused: {listed - used}"


@pytest.mark.parametrize(
    "path", [p for p in sorted(WF.glob("*.json")) if not p.name.endswith("_api.json")], ids=lambda p: p.name
)
def test_every_link_carries_a_type_its_input_accepts(path):
    ui = json.loads(path.read_text())
    nodes = {n["id"]: n for n in ui["nodes"]}
    for lid, src, slot, dst, dst_slot, typ in ui["links"]:
        assert nodes[src]["outputs"][slot]["type"] == typ, f"link {lid}: not the type its output gives"
        accepts = {t.strip() for t in nodes[dst]["inputs"][dst_slot]["type"].split(",")}
        assert typ in accepts, f"link {lid}: {typ} into {nodes[dst]['type']}.{nodes[dst]['inputs'][dst_slot]['name']}"


def test_the_native_workflow_runs_the_cascade_on_comfyuis_own_loaders():
    api = json.loads((WF / "avatar_cascade_native_api.json").read_text())
    by_type = {}
    for nid, node in api.items():
        by_type.setdefault(node["class_type"], []).append(nid)
    assert {"UNETLoader", "LoraLoaderModelOnly", "CLIPLoader", "VAELoader", "CLIPVisionLoader"} <= set(by_type)
    assert not {"AvatarCascadeDiTLoader", "AvatarCascadeVAELoader", "AvatarCascadeTextEncoderLoader"} & set(by_type)
    (unet,), (lora,) = by_type["UNETLoader"], by_type["LoraLoaderModelOnly"]
    assert api[lora]["inputs"]["model"] == [unet, 0]
    assert api[by_type["CLIPLoader"][0]]["inputs"]["type"] == "wan"
    (adapter,) = by_type["AvatarCascadeAudioAdapterLoader"]
    assert api[adapter]["inputs"]["dit"] == [lora, 0]  # the LoRA'd MODEL carries the lip-sync adapter
    for ct in ("AvatarCascadeBlueprintSampler", "AvatarCascadeFLFRefiner"):
        assert api[by_type[ct][0]]["inputs"]["dit"] == [adapter, 0], ct
    assert api[by_type["AvatarCascadeKeyframeExtractor"][0]]["inputs"]["dit"] == [lora, 0]


def test_the_shipped_set_covers_the_issue():
    names = {p.name.removesuffix("_api.json") for p in API_FILES}
    assert names >= {
        "avatar_cascade_demo",
        "avatar_cascade_wan21_480p",
        "avatar_cascade_wan21_1.3b_lowvram",
        "avatar_cascade_inbetween",
    }
    wan = json.loads((WF / "avatar_cascade_wan21_480p_api.json").read_text())
    by_type = {}
    for nid, node in wan.items():
        by_type.setdefault(node["class_type"], []).append(nid)
    (cv,) = by_type["AvatarCascadeCLIPVisionLoader"]
    for ct in ("AvatarCascadeBlueprintSampler", "AvatarCascadeKeyframeExtractor", "AvatarCascadeFLFRefiner"):
        assert wan[by_type[ct][0]]["inputs"]["clip_vision"] == [cv, 0], ct
    low = json.loads((WF / "avatar_cascade_wan21_1.3b_lowvram_api.json").read_text())
    loader = next(n for n in low.values() if n["class_type"] == "AvatarCascadeDiTLoader")
    assert loader["inputs"]["offload"] == "block"
    assert not any(n["class_type"] == "AvatarCascadeAudioAdapterLoader" for n in low.values())
    inb = json.loads((WF / "avatar_cascade_inbetween_api.json").read_text())
    assert {n["class_type"] for n in inb.values()} >= {"ImageBatch", "AvatarCascadeKeyframesFromImages"}


@pytest.mark.slow  # a fresh interpreter imports every node
def test_readme_node_reference_is_in_sync():
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    r = subprocess.run(
        [sys.executable, str(root / "scripts" / "node_reference.py"), "--check"], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stdout + r.stderr

"""The shipped subgraph blueprint (``subgraphs/avatar_cascade.json``): the cascade as one node.

Checked against what loads it: ComfyUI's server lists ``custom_nodes/*/subgraphs/*.json`` (newer than
the CI snapshot); the frontend (1.58) takes ``nodes[0]`` as the subgraph node, finds its definition by
type, validates the workflow schema (version 0.4 outer, version 1 subgraph with input / output nodes
and object links) and flattens the subgraph into the prompt it sends. The flattened blueprint in a host
graph wired like the Wan 2.1 480p workflow must be that workflow, node for node; the real-ComfyUI run
of that prompt is in test_comfyui_integration.py.
"""

from __future__ import annotations

import json
import re
import uuid

import pytest

from nodes import NODE_CLASS_MAPPINGS
from tests.blueprint_flatten import BLUEPRINT, definition, flatten, host_graph, load_blueprint, make_workflows
from tests.test_nodes import STAGES  # the six stage node ids (the paper's stages), listed once for the tests


@pytest.fixture(scope="module")
def mw():
    return make_workflows()


def _is_uuid(value) -> bool:
    try:
        return str(uuid.UUID(value)) == value
    except (TypeError, ValueError):
        return False


def test_the_blueprint_is_what_the_generator_writes(mw):
    """Cut from the shipped 480p graph by scripts/make_workflows.py: it cannot drift from the workflows."""
    assert json.loads(BLUEPRINT.read_text()) == json.loads(json.dumps(mw.cascade_blueprint()))


def test_the_blueprint_has_the_shape_the_frontend_loads():
    bp = load_blueprint()
    assert bp["version"] == 0.4 and isinstance(bp["last_node_id"], int) and bp["links"] == []
    (host,) = bp["nodes"]
    sg = definition(bp)  # the frontend: definitions.subgraphs.find(id == nodes[0].type), else "not a valid subgraph"
    assert _is_uuid(sg["id"]) and _is_uuid(bp["id"])
    assert sg["version"] == 1 and isinstance(sg["revision"], int) and sg["name"]
    assert set(sg["state"]) >= {"lastGroupId", "lastNodeId", "lastLinkId", "lastRerouteId"}
    assert sg["state"]["lastLinkId"] == max(lk["id"] for lk in sg["links"])
    assert sg["state"]["lastNodeId"] == max(n["id"] for n in sg["nodes"])
    for io in ("inputNode", "outputNode"):
        assert len(sg[io]["bounding"]) == 4 and all(isinstance(v, (int, float)) for v in sg[io]["bounding"])
    assert (sg["inputNode"]["id"], sg["outputNode"]["id"]) == (-10, -20)
    for slot in sg["inputs"] + sg["outputs"]:
        assert _is_uuid(slot["id"]) and slot["name"] and slot["type"] and slot["linkIds"]
    names = [s["name"] for s in sg["inputs"]]
    assert len(set(names)) == len(names), names
    for node in sg["nodes"]:
        assert set(node) >= {"id", "type", "pos", "size", "flags", "order", "mode", "properties"}
        assert node["type"] in NODE_CLASS_MAPPINGS, node["type"]
        cnr = node["properties"].get("cnr_id")
        assert cnr is None or re.fullmatch(r"[a-zA-Z0-9](?:[a-zA-Z0-9._-]*[a-zA-Z0-9])?", cnr), cnr
    # the node the library shows: the subgraph's inputs and outputs, in order, with their types
    assert [(i["name"], i["type"]) for i in host["inputs"]] == [(s["name"], s["type"]) for s in sg["inputs"]]
    assert [(o["name"], o["type"]) for o in host["outputs"]] == [(s["name"], s["type"]) for s in sg["outputs"]]
    assert sg["category"] and (bp["extra"].get("BlueprintDescription") or sg.get("description"))


def test_every_link_is_wired_both_ways():
    """Object links (version 1): each names its ends, and both ends name it; no dangling or doubled link."""
    sg = definition(load_blueprint())
    nodes = {n["id"]: n for n in sg["nodes"]}
    links = {lk["id"]: lk for lk in sg["links"]}
    assert len(links) == len(sg["links"])
    for lk in sg["links"]:
        if lk["origin_id"] == -10:
            assert lk["id"] in sg["inputs"][lk["origin_slot"]]["linkIds"]
            assert lk["type"] == sg["inputs"][lk["origin_slot"]]["type"]
        else:
            out = nodes[lk["origin_id"]]["outputs"][lk["origin_slot"]]
            assert lk["id"] in out["links"] and lk["type"] == out["type"]
        if lk["target_id"] == -20:
            assert sg["outputs"][lk["target_slot"]]["linkIds"] == [lk["id"]]
        else:
            assert nodes[lk["target_id"]]["inputs"][lk["target_slot"]]["link"] == lk["id"]
    used = {inp["link"] for n in sg["nodes"] for inp in n["inputs"] if inp["link"] is not None}
    used |= {lid for n in sg["nodes"] for out in n["outputs"] for lid in out["links"]}
    used |= {lid for s in sg["inputs"] + sg["outputs"] for lid in s["linkIds"]}
    assert used == set(links)


def test_each_subgraph_input_carries_a_type_every_stage_it_feeds_accepts(mw):
    """The frontend connects an outer output to a subgraph input by the input's type: our loaders' and
    ComfyUI's own (MODEL / CLIP / VAE / CLIP_VISION) must both fit every stage behind it."""
    sg = definition(load_blueprint())
    nodes = {n["id"]: n for n in sg["nodes"]}
    links = {lk["id"]: lk for lk in sg["links"]}
    types = {}
    for sg_in in sg["inputs"]:
        for lid in sg_in["linkIds"]:
            lk = links[lid]
            name = nodes[lk["target_id"]]["inputs"][lk["target_slot"]]["name"]
            declared = dict((n, t) for n, t, _ in mw.node_spec(nodes[lk["target_id"]]["type"])[0])[name]
            assert set(declared.split(",")) == set(sg_in["type"].split(",")), (sg_in["name"], declared)
        types[sg_in["name"]] = set(sg_in["type"].split(","))
    assert {"MODEL", "AVATAR_DIT"} <= types["dit"] and {"MODEL", "AVATAR_DIT"} <= types["keyframe_dit"]
    assert {"CLIP", "AVATAR_TEXT_ENCODER"} <= types["text_encoder"] and {"VAE", "AVATAR_VAE"} <= types["vae"]


def test_the_blueprint_holds_the_six_stages_and_promotes_the_per_run_widgets():
    bp = load_blueprint()
    sg = definition(bp)
    assert sorted(n["type"] for n in sg["nodes"]) == sorted(STAGES)
    host = bp["nodes"][0]
    inner = {str(n["id"]): n for n in sg["nodes"]}
    promoted = host["properties"]["proxyWidgets"]
    assert len(promoted) == len(host["widgets_values"])
    assert {inner[nid]["type"] for nid, w in promoted if w == "instruction"} == {"AvatarCascadeDirector"}
    for nid, widget in promoted:
        assert nid in inner, (nid, widget)


def test_flattened_in_a_host_graph_the_blueprint_is_the_480p_workflow(mw):
    """What the frontend sends for the blueprint node wired to the 480p graph's loaders is that graph."""
    api = mw.wan21_480p_graph()
    prompt = flatten(host_graph(api, load_blueprint()), mw.node_spec)
    sg = definition(load_blueprint())
    stages = {str(n["id"]) for n in sg["nodes"]}

    def renamed(nid: str) -> str:
        return f"100:{nid}" if nid in stages else nid

    expected = {
        renamed(nid): {**n, "inputs": {k: [renamed(v[0]), v[1]] if isinstance(v, list) else v
                                       for k, v in n["inputs"].items()}}
        for nid, n in api.items()
    }
    assert prompt == expected


def test_a_promoted_widget_reaches_its_stage(mw):
    """The instruction typed on the blueprint node is the Director's instruction in the prompt."""
    bp = load_blueprint()
    graph = host_graph(mw.wan21_480p_graph(), bp)
    values = list(bp["nodes"][0]["widgets_values"])
    index = [w for _, w in bp["nodes"][0]["properties"]["proxyWidgets"]].index("instruction")
    values[index] = "Sing the chorus, then wave at 0:03."
    graph["100"]["widgets"] = values
    prompt = flatten(graph, mw.node_spec)
    (director,) = [n for n in prompt.values() if n["class_type"] == "AvatarCascadeDirector"]
    assert director["inputs"]["instruction"] == "Sing the chorus, then wave at 0:03."


def test_the_frontend_lists_the_blueprint_from_the_packs_subgraphs_folder():
    """ComfyUI's subgraph manager globs ``<custom_nodes>/<pack>/subgraphs/*.json``: the file sits there."""
    root = BLUEPRINT.parents[1]
    assert BLUEPRINT.parent.name == "subgraphs" and (root / "__init__.py").is_file()
    assert sorted(p.name for p in BLUEPRINT.parent.glob("*.json")) == ["avatar_cascade.json"]

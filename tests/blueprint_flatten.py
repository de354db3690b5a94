"""What ComfyUI's frontend does with a subgraph blueprint, for the tests: place it in a graph, flatten it.

The frontend never sends a subgraph to the server: it flattens each subgraph node into its inner
nodes, with ids ``"<host id>:<inner id>"``, links from the subgraph's input node (-10) replaced by
the host's incoming links, and promoted widgets (``proxyWidgets``) set from the host's values. This
module does that for a host graph in API format whose subgraph nodes are written
``{"blueprint": <blueprint workflow>, "inputs": {subgraph input name: [node, slot]}}``, so the
flattened prompt can be compared with the shipped graph and posted to a real ComfyUI.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BLUEPRINT = ROOT / "subgraphs" / "avatar_cascade.json"
INPUT_NODE, OUTPUT_NODE = -10, -20


def make_workflows():
    """``scripts/make_workflows.py`` as a module (its builders and the graphs)."""
    spec = importlib.util.spec_from_file_location("make_workflows", ROOT / "scripts" / "make_workflows.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_blueprint() -> dict:
    return json.loads(BLUEPRINT.read_text())


def definition(blueprint: dict) -> dict:
    """The subgraph the blueprint's node instantiates (as the frontend finds it: by the node's type)."""
    host = blueprint["nodes"][0]
    return next(sg for sg in blueprint["definitions"]["subgraphs"] if sg["id"] == host["type"])


def widget_inputs(node: dict, node_spec) -> dict:
    """An inner UI node's widget values by input name (the inverse of make_workflows' ``_slots``)."""
    values = list(node["widgets_values"])
    out = {}
    for name, typ, opts in node_spec(node["type"])[0]:
        if typ not in ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"):
            continue
        out[name] = values.pop(0)
        if opts.get("control_after_generate"):
            values.pop(0)  # "fixed" / "randomize": a frontend-only value, not sent
    assert not values, (node["type"], values)
    return out


def flatten(graph: dict, node_spec) -> dict:
    """The API prompt of ``graph``: plain API nodes kept, each blueprint node replaced by its inner nodes."""
    outputs_of: dict[tuple[str, int], list] = {}  # (host id, subgraph output slot) -> the inner [node, slot]
    prompt: dict = {}
    for hid, node in graph.items():
        if "blueprint" not in node:
            continue
        blueprint = node["blueprint"]
        sg, host = definition(blueprint), blueprint["nodes"][0]
        links = {lk["id"]: lk for lk in sg["links"]}
        inner = {str(n["id"]): n for n in sg["nodes"]}
        for slot, sg_out in enumerate(sg["outputs"]):
            (lid,) = sg_out["linkIds"]
            outputs_of[(hid, slot)] = [f"{hid}:{links[lid]['origin_id']}", links[lid]["origin_slot"]]
        for nid, n in inner.items():
            inputs = widget_inputs(n, node_spec)
            for slot, inp in enumerate(n["inputs"]):
                if inp.get("link") is None:
                    continue
                lk = links[inp["link"]]
                assert lk["target_id"] == n["id"] and lk["target_slot"] == slot, lk
                if lk["origin_id"] == INPUT_NODE:
                    name = sg["inputs"][lk["origin_slot"]]["name"]
                    if name in node["inputs"]:  # an unwired subgraph input leaves the inner input unwired
                        inputs[inp["name"]] = list(node["inputs"][name])
                else:
                    inputs[inp["name"]] = [f"{hid}:{lk['origin_id']}", lk["origin_slot"]]
            prompt[f"{hid}:{nid}"] = {"class_type": n["type"], "inputs": inputs}
            if "title" in n:
                prompt[f"{hid}:{nid}"]["_meta"] = {"title": n["title"]}
        promoted = zip(host["properties"]["proxyWidgets"], node.get("widgets", host["widgets_values"]))
        for (nid, widget), value in promoted:
            prompt[f"{hid}:{nid}"]["inputs"][widget] = value
    for nid, node in graph.items():
        if "blueprint" in node:
            continue
        inputs = {}
        for k, v in node["inputs"].items():
            inputs[k] = outputs_of.get((str(v[0]), v[1]), v) if isinstance(v, list) else v
        prompt[nid] = {**node, "inputs": inputs}
    return prompt


def host_graph(api: dict, blueprint: dict, host_id: str = "100") -> dict:
    """``api`` with its cascade stages replaced by one blueprint node fed from the same outside outputs.

    Which outside output feeds which subgraph input is read off ``api`` itself (the stage input the
    subgraph input's first link reaches), so the host graph is wired as an artist would wire it.
    """
    sg = definition(blueprint)
    stages = {str(n["id"]) for n in sg["nodes"]}
    inner = {str(n["id"]): n for n in sg["nodes"]}
    links = {lk["id"]: lk for lk in sg["links"]}
    wiring = {}
    for sg_in in sg["inputs"]:
        lk = links[sg_in["linkIds"][0]]
        target = inner[str(lk["target_id"])]
        wiring[sg_in["name"]] = list(api[str(lk["target_id"])]["inputs"][target["inputs"][lk["target_slot"]]["name"]])
    graph = {nid: n for nid, n in api.items() if nid not in stages}
    graph[host_id] = {"blueprint": blueprint, "inputs": wiring}
    return graph

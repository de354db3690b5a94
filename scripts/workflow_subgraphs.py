"""The shipped subgraph blueprint: the six cascade stages as one node (``subgraphs/avatar_cascade.json``).

ComfyUI versions newer than the CI snapshot serve every ``custom_nodes/<pack>/subgraphs/*.json`` at
``/global_subgraphs`` and the frontend lists each in the node library under "Subgraph Blueprints"
(the server's ``app/subgraph_manager.py``; the frontend's ``loadInstalledBlueprints``). A blueprint
is a workflow (version 0.4) whose only node instantiates the subgraph of ``definitions.subgraphs``:
the format ComfyUI writes when a subgraph is published (frontend 1.58 ``publishSubgraph``).

The blueprint is cut from a shipped API graph, so it cannot drift from the workflows: the stage
nodes go inside, every link into them from outside becomes a subgraph input (one input per source
output, fanned out to every stage that reads it), and the listed stage outputs become subgraph
outputs. Loaders stay outside, so an artist wires our loaders or ComfyUI's own (MODEL / CLIP / VAE /
CLIP_VISION: the stage inputs accept both) and their LoRA chains. Widgets keep the source graph's
values; the ones an artist changes per run are promoted onto the node (``proxyWidgets``).
"""

from __future__ import annotations

import uuid

# Fixed namespace: the blueprint's ids are stable across regenerations (uuid5 of their names).
NAMESPACE = uuid.UUID("5b1f0a52-8c3e-4d07-9a55-2f6d8c1e7a31")
INPUT_NODE, OUTPUT_NODE = -10, -20
HOST_ID = -1


def _uid(*parts: str) -> str:
    return str(uuid.uuid5(NAMESPACE, "/".join(parts)))


def _wire(pending: list, by_id: dict, input_names: dict, name: str) -> tuple[list[dict], list[dict]]:
    """(subgraph inputs, object links) of the queued links: member to member as they are, outside to
    member from the input node, one subgraph input per outside (node, slot)."""
    sources: dict[tuple[str, int], dict] = {}
    links = []
    for lid, src, slot, dst, dst_slot, typ in pending:
        src = str(src)
        link = {"id": lid, "target_id": int(dst), "target_slot": dst_slot}
        if src in by_id:
            out = by_id[src]["outputs"][slot]
            out["links"].append(lid)
            link |= {"origin_id": int(src), "origin_slot": slot, "type": out["type"]}
        else:
            key = (src, slot)
            if key not in sources:
                label = input_names.get(key, by_id[str(dst)]["inputs"][dst_slot]["name"])
                assert label not in [s["name"] for s in sources.values()], f"two sources for input {label!r}"
                sources[key] = {"id": _uid(name, "input", label), "name": label, "type": typ, "linkIds": [],
                                "localized_name": label}
            sources[key]["linkIds"].append(lid)
            link |= {"origin_id": INPUT_NODE, "origin_slot": list(sources).index(key), "type": sources[key]["type"]}
        links.append(link)
    return list(sources.values()), sorted(links, key=lambda lk: lk["id"])


def _expose(outputs: list, by_id: dict, links: list, name: str) -> list[dict]:
    """Subgraph outputs for the member (node, slot) in ``outputs``, linked to the output node."""
    sg_outputs = []
    for index, (nid, slot) in enumerate(outputs):
        out = by_id[nid]["outputs"][slot]
        lid = max(lk["id"] for lk in links) + 1
        out["links"].append(lid)
        links.append({"id": lid, "origin_id": int(nid), "origin_slot": slot, "target_id": OUTPUT_NODE,
                      "target_slot": index, "type": out["type"]})
        sg_outputs.append({"id": _uid(name, "output", out["name"]), "name": out["name"], "type": out["type"],
                           "linkIds": [lid], "localized_name": out["name"]})
    return sg_outputs


def _definition(name: str, description: str, category: str, nodes: list, inputs: list, outputs: list,
                links: list) -> dict:
    """The subgraph definition (version 1), its input / output nodes left and right of the members."""
    left = min(n["pos"][0] for n in nodes) - 260
    right = max(n["pos"][0] + n["size"][0] for n in nodes) + 80
    top = min(n["pos"][1] for n in nodes)
    for i, slot in enumerate(inputs):
        slot["pos"] = [left + 160, top + 30 + 20 * i]
    for i, slot in enumerate(outputs):
        slot["pos"] = [right + 20, top + 30 + 20 * i]
    return {
        "id": _uid(name, "subgraph"),
        "version": 1,
        "state": {"lastGroupId": 0, "lastNodeId": max(n["id"] for n in nodes),
                  "lastLinkId": max(lk["id"] for lk in links), "lastRerouteId": 0},
        "revision": 0,
        "config": {},
        "name": name,
        "description": description,
        "category": category,
        "inputNode": {"id": INPUT_NODE, "bounding": [left, top, 180, 40 + 20 * len(inputs)]},
        "outputNode": {"id": OUTPUT_NODE, "bounding": [right, top, 140, 40 + 20 * len(outputs)]},
        "inputs": inputs,
        "outputs": outputs,
        "widgets": [],
        "nodes": nodes,
        "groups": [],
        "links": links,
        "extra": {},
    }


def cut_subgraph(
    api: dict,
    members: list[str],
    *,
    name: str,
    description: str,
    category: str,
    input_names: dict[tuple[str, int], str],
    outputs: list[tuple[str, int]],
    promoted: list[tuple[str, str]],
    ui_node,
    node_spec,
    layout,
) -> dict:
    """The blueprint workflow of the ``members`` of ``api`` (node ids, in order).

    ``input_names`` names the subgraph input fed by an outside (node id, slot) (default: the first
    reading input's name); ``outputs`` are the member (node id, slot) exposed as subgraph outputs;
    ``promoted`` the (member id, widget) shown on the node. ``ui_node``, ``node_spec`` and ``layout``
    are make_workflows' UI-format builders, so inner nodes are written exactly as in the workflows.
    """
    inner = {nid: api[nid] for nid in members}
    # Positions from the members' own dependency depths (outside links cut for the layout only).
    pos = layout({nid: {**n, "inputs": {k: v for k, v in n["inputs"].items()
                                        if not (isinstance(v, list) and v[0] not in inner)}}
                  for nid, n in inner.items()})
    pending: list[tuple] = []
    nodes = [ui_node(nid, node, i, pos[nid], pending) for i, (nid, node) in enumerate(inner.items())]
    by_id = {str(n["id"]): n for n in nodes}
    inputs, links = _wire(pending, by_id, input_names, name)
    sg_outputs = _expose(outputs, by_id, links, name)
    definition = _definition(name, description, category, nodes, inputs, sg_outputs, links)
    for nid, widget in promoted:
        names = [n for n, typ, _ in node_spec(api[nid]["class_type"])[0]]
        assert widget in names and not isinstance(api[nid]["inputs"][widget], list), (nid, widget)
    host = {
        "id": HOST_ID,
        "type": definition["id"],
        "pos": [0, 0],
        "size": [360, 60 + 22 * max(len(inputs), len(sg_outputs)) + 24 * len(promoted)],
        "flags": {},
        "order": 0,
        "mode": 0,
        "title": name,
        "inputs": [{"name": s["name"], "type": s["type"], "link": None} for s in inputs],
        "outputs": [{"name": s["name"], "type": s["type"], "links": []} for s in sg_outputs],
        "properties": {"proxyWidgets": [[nid, widget] for nid, widget in promoted]},
        "widgets_values": [api[nid]["inputs"][widget] for nid, widget in promoted],
    }
    return {
        "id": _uid(name, "workflow"),
        "revision": 0,
        "last_node_id": definition["state"]["lastNodeId"],
        "last_link_id": 0,
        "nodes": [host],
        "links": [],
        "groups": [],
        "definitions": {"subgraphs": [definition]},
        "config": {},
        "extra": {"BlueprintDescription": description},
        "version": 0.4,
    }

"""Node layer: metadata artists see, and the demo workflow executed node by node (no ComfyUI needed)."""

import json
from pathlib import Path

import pytest
import torch

from nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

STAGES = [
    "AvatarCascadeAudioAligner",
    "AvatarCascadeDirector",
    "AvatarCascadeBlueprintSampler",
    "AvatarCascadeKeyframeExtractor",
    "AvatarCascadeFLFRefiner",
    "AvatarCascadeClipStitcher",
]
ROOT = Path(__file__).resolve().parents[1]


def test_six_stage_nodes_and_loaders_are_registered():
    for node_id in STAGES:
        assert node_id in NODE_CLASS_MAPPINGS
    assert set(NODE_DISPLAY_NAME_MAPPINGS) == set(NODE_CLASS_MAPPINGS)
    assert all(k.startswith("AvatarCascade") for k in NODE_CLASS_MAPPINGS)


@pytest.mark.parametrize("node_id", sorted(NODE_CLASS_MAPPINGS))
def test_every_node_is_documented(node_id):
    cls = NODE_CLASS_MAPPINGS[node_id]
    assert cls.CATEGORY.startswith("AvatarCascade/")
    assert len(cls.DESCRIPTION) > 40
    assert callable(getattr(cls, cls.FUNCTION))
    assert len(cls.OUTPUT_TOOLTIPS) == len(cls.RETURN_TYPES) == len(cls.RETURN_NAMES)
    for section in ("required", "optional"):
        for name, spec in cls.INPUT_TYPES().get(section, {}).items():
            assert len(spec) > 1 and spec[1].get("tooltip"), f"{node_id}.{name} has no tooltip"


def test_validate_inputs_says_what_to_change():
    aligner = NODE_CLASS_MAPPINGS["AvatarCascadeAudioAligner"]
    assert aligner.VALIDATE_INPUTS(fps=25.0, clip_frames=81) is True
    msg = aligner.VALIDATE_INPUTS(fps=25.0, clip_frames=80)
    assert isinstance(msg, str) and "clip_frames" in msg and "4n+1" in msg
    bp = NODE_CLASS_MAPPINGS["AvatarCascadeBlueprintSampler"]
    msg = bp.VALIDATE_INPUTS(width=100, height=64)
    assert isinstance(msg, str) and "width" in msg and "multiple of 16" in msg


def _core_node(class_type, inputs, input_dir: Path):
    """ComfyUI core loaders used by our workflows, reproduced with our media loaders (test stand-in)."""
    from avatar_cascade.media import load_audio, load_image

    if class_type == "LoadImage":
        img = load_image(input_dir / inputs["image"])[None]
        return (img, torch.zeros(img.shape[:3]))
    if class_type == "LoadAudio":
        return (load_audio(input_dir / inputs["audio"]).to_comfy(),)
    raise KeyError(class_type)


def run_api_workflow(api: dict, input_dir: Path) -> dict:
    """Execute an API-format graph in dependency order, as ComfyUI would (minus caching/UI)."""
    results: dict[str, tuple] = {}

    def run(nid):
        if nid in results:
            return results[nid]
        node = api[nid]
        kwargs = {}
        for k, v in node["inputs"].items():
            kwargs[k] = run(v[0])[v[1]] if isinstance(v, list) else v
        ct = node["class_type"]
        if ct in NODE_CLASS_MAPPINGS:
            cls = NODE_CLASS_MAPPINGS[ct]
            if hasattr(cls, "VALIDATE_INPUTS"):
                widgets = {k: v for k, v in node["inputs"].items() if not isinstance(v, list)}
                assert cls.VALIDATE_INPUTS(**widgets) is True
            out = getattr(cls(), cls.FUNCTION)(**kwargs)
            out = out["result"] if isinstance(out, dict) else out
        else:
            out = _core_node(ct, kwargs, input_dir)
        results[nid] = out
        return out

    for nid in api:
        run(nid)
    return results


@pytest.mark.slow  # the whole demo workflow through the nodes
def test_demo_workflow_runs_through_the_nodes(demo_models_dir, tmp_path, monkeypatch):
    from avatar_cascade.cli import copy_sample_inputs
    from avatar_cascade.media import probe_media

    monkeypatch.setenv("AVATAR_CASCADE_MODELS", str(demo_models_dir))
    monkeypatch.setenv("AVATAR_CASCADE_OUTPUT", str(tmp_path / "output"))
    copy_sample_inputs(tmp_path / "input")
    api = json.loads((ROOT / "workflows" / "avatar_cascade_demo_api.json").read_text())
    results = run_api_workflow(api, tmp_path / "input")

    stitch_id = next(k for k, v in api.items() if v["class_type"] == "AvatarCascadeClipStitcher")
    path = Path(results[stitch_id][1])
    assert path.is_file() and path.parent.parent == tmp_path / "output"
    info = probe_media(path)
    timeline = results[next(k for k, v in api.items() if v["class_type"] == "AvatarCascadeAudioAligner")][0].timeline
    assert info["video_frames"] == timeline.num_frames
    assert [s["type"] for s in info["streams"]].count("video") == 1
    assert [s["type"] for s in info["streams"]].count("audio") == 1

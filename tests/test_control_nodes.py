"""The control inputs through the nodes (no ComfyUI needed): the Blueprint Sampler's optional ``control`` (a
Wan VACE DiT renders the blueprint under it; a plain DiT refuses it) and the Guided Refiner's optional
``vace_reference`` IMAGE."""

from __future__ import annotations

import pytest
import torch

from avatar_cascade.core.errors import InputError
from avatar_cascade.demo.tiny_vace import tiny_vace_state_dict
from avatar_cascade.models.wan_dit import load_wan_dit
from avatar_cascade.stages.director.rules import rule_based_storyline
from tests.helpers import aligned_tone, node_class
from tests.helpers import refiner_inputs as make_inputs
from tests.helpers import save_safetensors as _save

BLUEPRINT = dict(width=32, height=32, framing="bucket", blueprint_fps=4.0, window_frames=9, lead_frames=4,
                 prompt_mode="majority", seed=0, steps=2, guidance=1.0, shift=3.0, batch_size=1)  # fmt: skip


@pytest.fixture(scope="module")
def vace(tmp_path_factory):
    return load_wan_dit(_save(tmp_path_factory.mktemp("vace") / "vace.safetensors", tiny_vace_state_dict(0)))


@pytest.fixture()
def output(tmp_path, monkeypatch):
    monkeypatch.setenv("AVATAR_CASCADE_OUTPUT", str(tmp_path / "output"))
    return tmp_path


def _control(frames: int, strength: float = 5.0):
    g = torch.Generator().manual_seed(6)
    layer = torch.rand(frames, 32, 32, 3, generator=g)
    (control,) = node_class("AvatarCascadeControlVideo")().build(layer, 0.0, 0, strength)
    return control


def _out(result):
    """A node's outputs (a node that shows warnings returns ``{"ui": ..., "result": outputs}``)."""
    return result["result"] if isinstance(result, dict) else result


def _frames(bp) -> torch.Tensor:
    return torch.stack([bp.frame(i) for i in range(len(bp))])


def test_the_blueprint_node_renders_under_a_control_with_a_vace_dit(vace, models, output):
    _, vae, te = models
    aligned = aligned_tone(2.0, gate_hz=0.7)
    story = rule_based_storyline("a calm talk", aligned.timeline, [-30.0, -12.0])
    image = torch.rand(1, 48, 40, 3, generator=torch.Generator().manual_seed(5))
    node = node_class("AvatarCascadeBlueprintSampler")()
    (free,) = _out(node.render(vace, vae, te, image, aligned, story, "free", **BLUEPRINT))
    control = _control(aligned.timeline.padded_frames)
    (guided,) = _out(node.render(vace, vae, te, image, aligned, story, "guided", control=control, **BLUEPRINT))
    assert guided.key != free.key and (_frames(guided).float() - _frames(free).float()).abs().mean() > 1.0
    with pytest.raises(InputError, match="needs a Wan VACE DiT"):
        node.render(models[0], vae, te, image, aligned, story, "plain", control=control, **BLUEPRINT)


def test_the_guided_refiner_node_takes_a_vace_reference(vace, models, output):
    _, vae, te = models
    kf, aligned, story = make_inputs()
    node = node_class("AvatarCascadeGuidedRefiner")()
    widgets = dict(seed=7, steps=2, guidance=3.0, shift=3.0, batch_size=2, negative_frame_strength=0.0)
    (plain,) = _out(node.refine(vace, vae, te, kf, aligned, story, "plain", **widgets))
    ref = torch.rand(1, 24, 12, 3, generator=torch.Generator().manual_seed(4))
    (guided,) = _out(node.refine(vace, vae, te, kf, aligned, story, "ref", vace_reference=ref, **widgets))
    assert all(a.key != b.key for a, b in zip(plain.records, guided.records))
    assert all(guided.frames(k).shape == plain.frames(k).shape for k in range(3))
    assert any(not torch.equal(guided.frames(k), plain.frames(k)) for k in range(3))

"""Model presets: each family's reference settings are what the default (auto) widgets run with.

The expected numbers are written out here from the reference code (Wan 2.1 / 2.2 ``generate.py`` and
configs, InfiniteTalk's ``generate_infinitetalk.py`` and README), independently of
``configs/presets.json``, so a wrong preset value or a preset not applied fails a test.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from avatar_cascade.models.presets import preset, preset_for, preset_names, regime_warnings
from avatar_cascade.sampling.settings import SamplerSettings
from avatar_cascade.stages.blueprint.sampler import blueprint_size
from avatar_cascade.stages.blueprint.settings import BlueprintSettings
from avatar_cascade.stages.keyframes.settings import KeyframeSettings
from avatar_cascade.stages.refiner.refiner import resolve_settings
from avatar_cascade.stages.refiner.settings import RefinerSettings
from tests.helpers import aligned_tone, cpu_runtime, refiner_inputs

WAN_NEGATIVE_START = "色调艳丽，过曝，静态，细节模糊不清"

# family -> (steps, text guidance, shift at 832x480, shift at 1280x720, trained frames, fps)
REFERENCE = {
    "wan2.1-i2v-14b": (40, 5.0, 3.0, 5.0, 81, 16),
    "wan2.1-flf2v-14b": (50, 5.0, 16.0, 16.0, 81, 16),
    "wan2.2-i2v-a14b": (40, 3.5, 5.0, 5.0, 81, 16),
    "wan2.2-ti2v-5b": (50, 5.0, 5.0, 5.0, 121, 24),
    "infinitetalk": (40, 5.0, 7.0, 11.0, 81, 25),
}


def _dit(wan_models, variant: str, adapter: bool = False):
    """The tiny DiT handle labelled as ``variant`` (presets read the variant; the weights stay tiny)."""
    dit = dataclasses.replace(wan_models.dit, variant=variant)
    if adapter:
        dit = dataclasses.replace(dit, audio_adapter=object())
    return dit


def _family(name: str) -> tuple[str, bool]:
    return ("wan2.1-i2v-14b", True) if name == "infinitetalk" else (name, False)


@pytest.mark.parametrize("family", sorted(REFERENCE))
def test_default_refiner_and_blueprint_settings_are_the_family_s_preset(family, wan_models):
    steps, guidance, shift_480, shift_720, frames, fps = REFERENCE[family]
    variant, adapter = _family(family)
    dit = _dit(wan_models, variant, adapter)
    aligned = aligned_tone(2.0)
    for (w, h), shift in (((832, 480), shift_480), ((1280, 720), shift_720)):
        got = resolve_settings(RefinerSettings(), dit, w, h).sampler
        assert (got.steps, got.guidance, got.shift, got.scheduler) == (steps, guidance, shift, "unipc"), (w, h)
        assert got.negative_prompt.startswith(WAN_NEGATIVE_START)
    p = preset_for(dit)
    assert (p.trained_frames, p.fps) == (frames, fps) and all(p.sources.get(k) for k in ("steps", "shift", "fps"))
    if family == "infinitetalk":
        assert got.audio_guidance == 4.0
    if family == "wan2.2-i2v-a14b":
        assert got.guidance_2 == 3.5
    # the blueprint resolves from the same preset (its own low resolution picks the nearest trained shift)
    bw, bh, sampler, bp_preset = blueprint_size(
        wan_models.__class__(dit, wan_models.vae, wan_models.text_encoder), torch.rand(48, 80, 3), aligned,
        BlueprintSettings(),
    )  # fmt: skip
    want_bp = resolve_settings(RefinerSettings(), dit, bw, bh).sampler
    assert bp_preset.name == p.name or (family == "infinitetalk" and bp_preset.name == "wan2.1-i2v-14b")
    if family != "infinitetalk":  # without audio features the blueprint's windows run without the adapter
        assert sampler == want_bp and sampler.steps == steps


def test_a_5b_dit_renders_at_multiples_of_32(wan_models):
    dit = _dit(wan_models, "wan2.2-ti2v-5b")
    w, h, *_ = blueprint_size(
        wan_models.__class__(dit, wan_models.vae, wan_models.text_encoder), torch.rand(90, 160, 3), aligned_tone(1.0),
        BlueprintSettings(width=1280, height=704),
    )  # fmt: skip
    assert w % 32 == 0 and h % 32 == 0


def test_explicit_widgets_win_over_the_preset(wan_models):
    dit = _dit(wan_models, "wan2.1-flf2v-14b")
    mine = RefinerSettings(sampler=SamplerSettings(steps=8, shift=2.0, negative_prompt=""))
    got = resolve_settings(mine, dit, 832, 480).sampler
    assert (got.steps, got.shift, got.guidance, got.negative_prompt) == (8, 2.0, 5.0, "")


def test_every_preset_names_a_source_for_every_value():
    for name in preset_names():
        p = preset(name)
        for key in ("steps", "guidance", "scheduler", "shift", "trained_frames", "fps", "areas"):
            assert p.sources.get(key), (name, key)
        assert p.negative_prompt.startswith(WAN_NEGATIVE_START)


def test_the_preset_is_what_the_refiner_really_runs_and_records(models, tmp_path, counter):
    """A DiT labelled Wan 2.1 FLF2V renders with 50 steps (counted forwards) and shift 16; the manifest
    records the preset and the resolved sampler."""
    from avatar_cascade.models.handle import WanModels
    from avatar_cascade.stages.refiner.refiner import refine_clips

    dit, vae, te = models
    flf = dataclasses.replace(dit, variant="wan2.1-flf2v-14b")
    kf, aligned, story = refiner_inputs(clips=1, size=16)
    settings = RefinerSettings(sampler=SamplerSettings(guidance=1.0))  # one forward per step
    rt = cpu_runtime()
    refine_clips(WanModels(flf, vae, te), kf, aligned, story, settings, rt, cache_dir=tmp_path)
    assert counter.take() == 50
    manifest = json.loads((tmp_path / "refiner_manifest.json").read_text())
    assert manifest["preset"] == "wan2.1-flf2v-14b"
    assert manifest["sampler"]["steps"] == 50 and manifest["sampler"]["shift"] == 16.0
    # 16 fps, 5-frame clips, first-last frames on an FLF2V DiT: in its regime but for the tiny frames (16x16),
    # only the missing lip-sync and the size are told
    told = ("refiner: no lip-sync", "refiner: frames of 16x16: Wan 2.1 FLF2V 14B (720P) was trained at 832x480")
    assert [w for w in rt.warnings if not w.startswith(told)] == []


def test_off_regime_runs_are_named():
    class D:
        variant = "wan2.1-flf2v-14b"
        image_tokens_per_frame_pair = 514
        audio_adapter = object()

    lines = regime_warnings(D(), fps=25, clip_frames=97, last_frame=True)
    assert any("FLF2V" in x and "InfiniteTalk" in x for x in lines)
    assert any("97 frames" in x for x in lines)
    i2v = type("I2V", (), {"variant": "wan2.1-i2v-14b", "image_tokens_per_frame_pair": None, "audio_adapter": None})
    lines = regime_warnings(i2v(), fps=25, clip_frames=81, last_frame=True)
    assert any("first-frame" in x for x in lines) and any("16 fps" in x for x in lines)
    assert regime_warnings(i2v(), fps=16, clip_frames=81, last_frame=False) == []
    tiny = type("T", (), {"variant": "avatar-cascade-tiny-wan", "image_tokens_per_frame_pair": None})
    assert regime_warnings(tiny(), fps=25, clip_frames=97, last_frame=True) == []  # random weights: no regime


def test_no_audio_adapter_is_a_visible_warning(models, tmp_path):
    from avatar_cascade.models.handle import WanModels
    from avatar_cascade.stages.refiner.refiner import refine_clips

    dit, vae, te = models
    kf, aligned, story = refiner_inputs(clips=1, size=16)
    rt = cpu_runtime()
    settings = RefinerSettings(sampler=SamplerSettings(steps=1, guidance=1.0))
    refine_clips(WanModels(dit, vae, te), kf, aligned, story, settings, rt, cache_dir=tmp_path)
    assert any(w.startswith("refiner: no lip-sync") for w in rt.warnings)


def test_the_lift_uses_the_family_preset_without_the_adapter(wan_models):
    from avatar_cascade.sampling.settings import resolve_sampler

    dit = _dit(wan_models, "wan2.1-i2v-14b", adapter=True)
    got = resolve_sampler(KeyframeSettings().lift.sampler, dit, 832, 480, with_audio=False)
    assert (got.steps, got.shift) == (40, 3.0)  # Wan 2.1 I2V at 480p, not InfiniteTalk's 7

"""One source for settings: each default, range and tooltip is declared once, in the engine's settings
classes; the node widgets and the command-line flags are made from them and must agree with the engine.

Walks every setting of every stage: the node widget default, the CLI default and the engine default
are one value; every widget has a tooltip and a range; settings cannot be built positionally;
``--seed`` and ``--steps`` reach every stage that has a seed / samples (the blueprint too: a
different seed gives a different blueprint key and different blueprint frames).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from avatar_cascade.cascade import STAGE_SETTINGS
from avatar_cascade.cli import SHARED, _parser, main, run_config, stage_flag
from avatar_cascade.core.settings import from_text, from_widget, leaves, to_widget
from avatar_cascade.sampling.settings import SamplerSettings
from avatar_cascade.stages.aligner.settings import AlignerSettings
from avatar_cascade.stages.blueprint.settings import BlueprintSettings
from avatar_cascade.stages.inbetween.settings import InbetweenSettings
from avatar_cascade.stages.keyframes.settings import KeyframeSettings, LiftSettings
from avatar_cascade.stages.refiner.settings import RefinerSettings
from avatar_cascade.stages.stitcher.settings import StitcherSettings
from nodes import NODE_CLASS_MAPPINGS

CLASSES = [*STAGE_SETTINGS.values(), SamplerSettings, LiftSettings, InbetweenSettings]
REQUIRED = ["--image", "face.png", "--audio", "talk.wav", "--prompt", "hi", "--models", "models", "--out", "o.mp4"]
WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN")
# Widgets of the stage nodes that are no engine setting: the run's text, names and folders.
NODE_ONLY = {
    "AvatarCascadeAudioAligner": set(),
    "AvatarCascadeDirector": {"instruction"},
    "AvatarCascadeBlueprintSampler": {"work_folder"},
    "AvatarCascadeKeyframeExtractor": {"work_folder"},
    "AvatarCascadeFLFRefiner": {"reroll", "cache_folder"},
    "AvatarCascadeClipStitcher": {"filename_prefix", "max_image_frames"},
    "AvatarCascadeKeyframesFromImages": {"prompt"},
}


def _widgets(node_cls) -> dict[str, tuple]:
    spec = node_cls.INPUT_TYPES()
    return {
        name: entry
        for section in ("required", "optional")
        for name, entry in spec.get(section, {}).items()
        if isinstance(entry[0], list) or entry[0] in WIDGET_TYPES
    }


def _mapped(node_cls) -> dict:
    """Widget name -> (NodeWidgets, Leaf) of every setting the node shows."""
    return {w: (nw, nw.leaves[w]) for nw in node_cls.settings_widgets() for w in nw.names}


# ----------------------------------------------------------------------------- declarations


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_every_setting_declares_a_tooltip_and_a_range_that_holds_its_default(cls):
    for leaf in leaves(cls):
        assert len(leaf.spec.tooltip) > 10, leaf.name
        if leaf.kind in ("INT", "FLOAT"):
            assert leaf.spec.min is not None and leaf.spec.max is not None and leaf.spec.min < leaf.spec.max, leaf
            if isinstance(leaf.value, (int, float)):
                assert leaf.spec.min <= leaf.value <= leaf.spec.max, leaf
        if leaf.kind == "COMBO":
            assert leaf.value in leaf.spec.choices, leaf
    assert cls().check() == cls()  # the defaults pass the engine's own checks


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_settings_are_keyword_only_and_frozen(cls):
    first = dataclasses.fields(cls)[0]
    with pytest.raises(TypeError):
        cls(getattr(cls(), first.name))  # a field reorder can never silently shift values
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(cls(), first.name, getattr(cls(), first.name))


def test_the_defaults_that_used_to_differ_have_one_value():
    assert AlignerSettings().snap_seams_frames == 8  # engine had 0, node and CLI 8
    assert AlignerSettings().max_duration_s == 3600.0  # engine None, node 1800, CLI 3600
    assert StitcherSettings().colour_match == 1.0  # engine 0.0, node and CLI 1.0
    samplers = {cls.__name__: s for cls, s in [
        (BlueprintSettings, BlueprintSettings().sampler),
        (LiftSettings, KeyframeSettings().lift.sampler),
        (RefinerSettings, RefinerSettings().sampler),
    ]}  # fmt: skip
    # every sampler is auto (the loaded DiT's preset); tests/test_presets.py checks what each resolves to
    assert all(s == SamplerSettings() and not s.resolved for s in samplers.values())
    assert KeyframeSettings().lift.denoise == 0.3  # the lift is on whenever a DiT is connected


# ----------------------------------------------------------------------------- nodes


@pytest.mark.parametrize("node_id", sorted(NODE_ONLY))
def test_node_widget_defaults_ranges_and_tooltips_are_the_engine_s(node_id):
    node_cls = NODE_CLASS_MAPPINGS[node_id]
    widgets, mapped = _widgets(node_cls), _mapped(node_cls)
    assert set(widgets) == set(mapped) | NODE_ONLY[node_id], "a widget that is neither a setting nor node-only"
    for name, (_, leaf) in mapped.items():
        typ, opts = widgets[name]
        assert from_widget(leaf, opts["default"]) == leaf.value, f"{node_id}.{name}: node default != engine default"
        assert opts["tooltip"] == leaf.spec.tooltip
        if leaf.kind in ("INT", "FLOAT"):
            assert typ == leaf.kind and opts["max"] == leaf.spec.max
            lowest = leaf.spec.min if leaf.spec.none_as is None else min(leaf.spec.min, leaf.spec.none_as)
            assert opts["min"] == lowest  # a sentinel such as -1 (= same as guidance) stays reachable
        elif leaf.kind == "COMBO":
            assert typ == list(leaf.spec.choices)
    for nw in node_cls.settings_widgets():  # all widgets at their defaults make exactly the engine default
        assert nw.build({w: widgets[w][1]["default"] for w in nw.names}) == nw.settings()


@pytest.mark.parametrize("node_id", sorted(NODE_ONLY))
def test_node_validate_inputs_refuses_every_value_past_its_range(node_id):
    node_cls = NODE_CLASS_MAPPINGS[node_id]
    assert node_cls.VALIDATE_INPUTS(**{w: e[1]["default"] for w, e in _widgets(node_cls).items()}) is True
    for name, (_, leaf) in _mapped(node_cls).items():
        if leaf.kind in ("INT", "FLOAT"):
            msg = node_cls.VALIDATE_INPUTS(**{name: leaf.spec.max + 1})
            assert isinstance(msg, str) and msg.startswith(f"{name} = ") and "Fix:" in msg, (name, msg)
        elif leaf.kind == "COMBO" and not leaf.spec.open_choices:
            msg = node_cls.VALIDATE_INPUTS(**{name: "no-such-choice"})
            assert isinstance(msg, str) and name in msg, (name, msg)


# ----------------------------------------------------------------------------- command line


def test_cli_defaults_are_the_engine_defaults():
    cfg = run_config(REQUIRED)
    for stage, cls in STAGE_SETTINGS.items():
        assert getattr(cfg, stage) == cls(), stage
    run = next(a for a in _parser()._actions if a.dest == "cmd").choices["run"]
    generated = [a for a in run._actions if a.dest.startswith(("set:", "shared:"))]
    assert generated and all(a.default is None for a in generated)  # None = the settings class decides
    flags = {s for a in run._actions for s in a.option_strings}
    for stage, cls in STAGE_SETTINGS.items():
        for leaf in leaves(cls):
            if leaf.spec.cli:
                assert stage_flag(stage, leaf.name) in flags, (stage, leaf.name)
    assert {"--fps", "--clip-frames", "--width", "--height", "--steps", "--seed", "--reroll"} <= flags


def test_a_flag_at_its_default_text_gives_the_default():
    for stage, cls in STAGE_SETTINGS.items():
        for leaf in leaves(cls):
            if leaf.spec.cli and leaf.kind != "BOOLEAN" and not leaf.spec.cli_text:
                assert from_text(leaf, str(to_widget(leaf))) == leaf.value, (stage, leaf.name)


def test_every_cli_setting_reaches_its_stage():
    args = ["--fps", "30000/1001", "--width", "640", "--aligner-snap-seams-frames", "0",
            "--keyframes-lift-denoise", "0.3", "--refiner-devices", "cuda:0, cuda:1", "--no-stitcher-crossfade",
            "--blueprint-guidance-2", "-1", "--aligner-loudness-lufs", "-23"]  # fmt: skip
    cfg = run_config([*REQUIRED, *args])
    assert cfg.aligner.fps == "30000/1001" and cfg.aligner.snap_seams_frames == 0
    assert cfg.aligner.loudness_lufs == -23.0 and cfg.keyframes.width == 640 and cfg.keyframes.lift.denoise == 0.3
    assert cfg.refiner.devices == ("cuda:0", "cuda:1") and cfg.stitcher.crossfade is False
    assert cfg.blueprint.sampler.guidance_2 is None  # -1 = the same as guidance, as on the node


def test_seed_reaches_every_stage_that_has_one():
    one, two = run_config([*REQUIRED, "--seed", "1"]), run_config([*REQUIRED, "--seed", "2"])
    seeds = [(stage, leaf) for stage, cls in STAGE_SETTINGS.items() for leaf in leaves(cls) if leaf.path[-1] == "seed"]
    assert {s for s, _ in seeds} == {"director", "blueprint", "keyframes", "refiner"}
    for stage, leaf in seeds:
        assert _value(one, stage, leaf) == 1 and _value(two, stage, leaf) == 2, (stage, leaf.name)
    sampler = SamplerSettings(steps=2, guidance=1.0, shift=3.0, scheduler="unipc")
    assert one.blueprint.key_parts(sampler) != two.blueprint.key_parts(sampler)
    lift = ["--keyframes-lift-denoise", "0.3"]
    l1, l2 = run_config([*REQUIRED, *lift, "--seed", "1"]), run_config([*REQUIRED, *lift, "--seed", "2"])
    assert l1.keyframes.lift.key_parts() != l2.keyframes.lift.key_parts()
    own = run_config([*REQUIRED, "--seed", "1", "--blueprint-seed", "5"])  # a stage's own flag wins
    assert own.blueprint.seed == 5 and own.refiner.seed == own.director.seed == own.keyframes.lift.seed == 1


def test_steps_reach_every_stage_that_samples():
    cfg = run_config([*REQUIRED, "--steps", "3"])
    samplers = {stage: _samplers(getattr(cfg, stage)) for stage in STAGE_SETTINGS}
    assert {s for s, found in samplers.items() if found} == {"blueprint", "keyframes", "refiner"}
    for stage, found in samplers.items():
        default = _samplers(STAGE_SETTINGS[stage]())
        for got, want in zip(found, default):
            assert got == dataclasses.replace(want, steps=3), stage  # only the steps changed
    own = run_config([*REQUIRED, "--steps", "3", "--refiner-steps", "7"])
    assert own.refiner.sampler.steps == 7 and own.blueprint.sampler.steps == own.keyframes.lift.sampler.steps == 3


@pytest.mark.parametrize(
    ("args", "flag"),
    [(["--steps", "-1"], "--steps"), (["--blueprint-steps", "-3"], "--blueprint-steps"),
     (["--keyframes-lift-steps", "x"], "--keyframes-lift-steps"), (["--stitcher-crf", "99"], "--stitcher-crf"),
     (["--blueprint-lead-frames", "40"], "--blueprint-lead-frames"), (["--framing", "stretch"], "--framing")],
)  # fmt: skip
def test_a_bad_setting_names_its_flag_before_anything_is_loaded(args, flag, tmp_path, capsys):
    argv = ["run", *REQUIRED[:-2], "--out", str(tmp_path / "o.mp4"), *args]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {flag} = ") and "Fix:" in err and err.count("\n") == 1, err


# ----------------------------------------------------------------------------- the seed reaches the pixels


def test_seed_1_and_2_give_different_blueprint_keys_and_frames(wan_models, tmp_path):
    from avatar_cascade.stages.blueprint.sampler import render_blueprint
    from avatar_cascade.stages.director.rules import rule_based_storyline
    from tests.helpers import aligned_tone, cpu_runtime

    small = ["--blueprint-width", "32", "--blueprint-height", "32", "--blueprint-fps", "4",
             "--blueprint-window-frames", "9", "--blueprint-lead-frames", "4", "--steps", "2",
             "--blueprint-guidance", "1"]  # fmt: skip
    aligned = aligned_tone(1.0)
    story = rule_based_storyline("talk", aligned.timeline, None)
    reference = torch.rand(48, 40, 3, generator=torch.Generator().manual_seed(5))
    out = {}
    for seed in (1, 2):
        cfg = run_config([*REQUIRED, *small, "--seed", str(seed)])
        assert cfg.blueprint.sampler.steps == 2 and cfg.blueprint.seed == seed
        bp = render_blueprint(wan_models, reference, aligned, story, cfg.blueprint, cpu_runtime(), work_dir=tmp_path)
        out[seed] = (bp.key, bp.frames(0, len(bp)))
    assert out[1][0] != out[2][0]
    assert out[1][1].shape == out[2][1].shape and not torch.equal(out[1][1], out[2][1])


def _value(cfg, stage, leaf):
    obj = getattr(cfg, stage)
    for part in leaf.path:
        obj = getattr(obj, part)
    return obj


def _samplers(settings) -> list[SamplerSettings]:
    """Every SamplerSettings nested in ``settings`` (depth first)."""
    out = []
    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        if isinstance(value, SamplerSettings):
            out.append(value)
        elif dataclasses.is_dataclass(value):
            out += _samplers(value)
    return out


def test_shared_flags_cover_names_that_exist():
    names = {leaf.path[-1] for cls in STAGE_SETTINGS.values() for leaf in leaves(cls)}
    assert set(SHARED.values()) <= names

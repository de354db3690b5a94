"""Widgets shared by the stage nodes, and the bridge from a settings class to a node's widgets.

A node lists which settings it shows and under which widget names (:class:`NodeWidgets`); the
default, range, step and tooltip of each widget come from the engine's settings class
(:mod:`avatar_cascade.core.settings`), and so do the checks of ``VALIDATE_INPUTS``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

# The sampler widgets of the DiT-sampling nodes (blueprint, refiner), in their order; the advanced
# ones (Wan 2.2 A14B low-noise guidance, audio guidance) are optional inputs.
SAMPLER_WIDGETS = ("steps", "guidance", "shift", "scheduler", "seed")
ADVANCED_SAMPLER_WIDGETS = ("guidance_low_noise", "audio_guidance", "negative_prompt")
SAMPLER_RENAME = {"guidance_low_noise": "guidance_2"}


class NodeWidgets:
    """The widgets one node shows for one settings class.

    Args:
        settings: the settings class (e.g. ``BlueprintSettings``).
        names: the node's widget names of these settings, in the node's order.
        rename: widget name -> flat setting name where they differ (``blueprint_fps`` -> ``fps``).
    """

    def __init__(self, settings: type, names: Sequence[str], rename: Mapping[str, str] | None = None) -> None:
        from avatar_cascade.core.settings import leaves

        self.settings = settings
        self.names = tuple(names)
        self.rename = dict(rename or {})
        by_name = {leaf.name: leaf for leaf in leaves(settings)}
        self.leaves = {w: by_name[self.rename.get(w, w)] for w in self.names}

    def inputs(self, *names: str) -> dict[str, tuple]:
        """ComfyUI input specs of ``names`` (default: all), in that order."""
        from avatar_cascade.core.settings import widget

        return {w: widget(self.leaves[w]) for w in (names or self.names)}

    def build(self, widgets: Mapping[str, Any]):
        """The settings object of these widget values (other keys are ignored; missing widgets = defaults)."""
        from avatar_cascade.core.settings import build, from_widget

        values = {self.leaves[w].name: from_widget(self.leaves[w], v) for w, v in widgets.items() if w in self.leaves}
        return build(self.settings, values)

    def validate(self, widgets: Mapping[str, Any]) -> bool | str:
        """``VALIDATE_INPUTS``: True, or what to change. Unknown (linked) widgets are None or absent; the
        rules tying several settings together are checked once all of this node's widgets are known."""
        from avatar_cascade.core.errors import InputError
        from avatar_cascade.core.settings import check_value, from_widget

        known = {w: v for w, v in widgets.items() if w in self.leaves and v is not None}
        by_setting = {self.leaves[w].name: w for w in self.names}
        try:
            for w, v in known.items():
                leaf = self.leaves[w]
                check_value(w, leaf.spec, leaf.kind, from_widget(leaf, v))
            if len(known) == len(self.names):
                try:
                    self.build(known).check()
                except InputError as exc:
                    name = by_setting.get(exc.input_name, exc.input_name)
                    raise InputError(name, exc.value, exc.problem, exc.fix) from None
        except InputError as exc:
            return str(exc)
        return True


def with_warnings(runtime, result: tuple, ui: dict | None = None) -> dict:
    """A node's return value with the run's warnings for the artist (``runtime.warnings``) in its ``ui`` as
    ``avatar_warnings``: shown on the node, in the graph, by the pack's web extension (``web/avatar_cascade.js``;
    the stock frontend shows only images and videos from ``ui``). They are also logged to the console."""
    ui = dict(ui or {})
    if runtime.warnings:
        ui["avatar_warnings"] = list(runtime.warnings)
    return {"ui": ui, "result": result}


def first_failure(*results: bool | str) -> bool | str:
    """The first message among ``VALIDATE_INPUTS`` results, else True."""
    return next((r for r in results if r is not True), True)


# Each model input takes the pack's own handle or ComfyUI's native object (a type union: ComfyUI links either).
DIT_TYPE = "AVATAR_DIT,MODEL"
MODEL_INPUTS = {
    "dit": (
        DIT_TYPE,
        {
            "tooltip": "Wan DiT (image-to-video / first-last-frame capable): the pack's DiT loader, or a native MODEL "
            "(UNETLoader, GGUF loaders, after LoRA / patch nodes: ComfyUI runs it with every patch applied)."
        },
    ),
    "vae": ("AVATAR_VAE,VAE", {"tooltip": "Wan VAE: the pack's VAE loader or ComfyUI's VAELoader."}),
    "text_encoder": (
        "AVATAR_TEXT_ENCODER,CLIP",
        {
            "tooltip": "UMT5 text encoder: the pack's loader, or ComfyUI's CLIPLoader (type wan; prompt emphasis "
            "such as (word:1.2) works there)."
        },
    ),
}


# Optional inputs for the DiT-sampling nodes (blueprint, refiner): add to their "optional" section.
OPTIONAL_MODEL_INPUTS = {
    "clip_vision": (
        "AVATAR_CLIP_VISION,CLIP_VISION",
        {
            "tooltip": "CLIP ViT-H image encoder (the pack's loader or CLIPVisionLoader): required by Wan 2.1 I2V / "
            "FLF2V DiTs, unused by Wan 2.2."
        },
    ),
}


def wan_models(dit, vae, text_encoder, clip_vision=None):
    """The engine's ``WanModels`` of a node's model inputs (native ComfyUI objects wrapped, see native_models)."""
    from avatar_cascade.models.handle import WanModels

    from .native_models import engine_models

    m = engine_models(dit=dit, vae=vae, text_encoder=text_encoder, clip_vision=clip_vision)
    return WanModels(m["dit"], m["vae"], m["text_encoder"], m["clip_vision"])

"""Director nodes: the MLLM Director and the storyline editor."""

from __future__ import annotations

from . import comfy_bridge as bridge
from ._common import NodeWidgets, with_warnings


def director_widgets() -> NodeWidgets:
    from avatar_cascade.stages.director.settings import DirectorSettings

    return NodeWidgets(DirectorSettings, ("seed", "max_new_tokens"))


class AvatarCascadeDirector:
    DESCRIPTION = (
        "Reads the reference image, the audio and your instruction with a local multimodal LLM and writes "
        "the storyline: a global description and one shot per sub-clip (emotion, expression, action, "
        "camera, positive and negative prompt). Qwen2.5-Omni hears the audio itself (up to 30 s per pass); "
        "Qwen2.5-VL / Qwen3-VL read what was measured in it (duration, loudness contour, pauses). Timed "
        "instructions such as 'smile at 0:30' win over the model; without a model, or when its output cannot "
        "be repaired, a rule-based plan fills in."
    )
    CATEGORY = "AvatarCascade/stages"
    RETURN_TYPES = ("AVATAR_STORYLINE", "STRING")
    RETURN_NAMES = ("storyline", "storyline_json")
    OUTPUT_TOOLTIPS = (
        "The validated storyline.",
        "The same storyline as JSON: copy it into a Storyline Edit node to edit and pin it.",
    )
    FUNCTION = "direct"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "The reference image of the avatar."}),
                "timeline": ("AVATAR_TIMELINE", {"tooltip": "From the Audio Aligner."}),
                "instruction": (
                    "STRING",
                    {
                        "multiline": True,
                        "default": "A presenter talks warmly to the camera.",
                        "tooltip": "What should happen. Timed cues with a real time ('smile at 0:30', 'wave at "
                        "45s', 'look left during 0:10-0:20') are applied exactly to the shots at that time; a bare "
                        "number ('look at 2 people') is not a time, and landmarks like 'during the chorus' are not "
                        "located (they stay part of the general instruction).",
                    },
                ),
                **director_widgets().inputs(),
            },
            "optional": {"mllm": ("AVATAR_MLLM", {"tooltip": "Director model; leave empty for the rule-based plan."})},
        }

    @classmethod
    def settings_widgets(cls) -> tuple[NodeWidgets, ...]:
        return (director_widgets(),)

    @classmethod
    def VALIDATE_INPUTS(cls, **widgets):
        return director_widgets().validate(widgets)

    def direct(self, image, timeline, instruction, mllm=None, **widgets):
        from avatar_cascade.media import check_image_tensor
        from avatar_cascade.stages.director.director import direct

        runtime = bridge.make_runtime()
        ref = check_image_tensor(image, "image")
        settings = director_widgets().build(widgets)
        story = direct(mllm, ref, timeline.audio, instruction, timeline.timeline, settings, runtime)
        text = story.to_json()
        return with_warnings(runtime, (story, text), {"text": [text]})


class AvatarCascadeStorylineEdit:
    DESCRIPTION = (
        "Storyline as editable JSON: paste the Director's JSON, change any shot, and the validated "
        "storyline drives the cascade. Errors name the field and the shot."
    )
    CATEGORY = "AvatarCascade/stages"
    RETURN_TYPES = ("AVATAR_STORYLINE", "STRING")
    RETURN_NAMES = ("storyline", "storyline_json")
    OUTPUT_TOOLTIPS = ("The validated storyline.", "The normalised JSON.")
    FUNCTION = "edit"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "timeline": ("AVATAR_TIMELINE", {"tooltip": "The timeline the storyline must cover."}),
                "storyline_json": (
                    "STRING",
                    {
                        "multiline": True,
                        "default": "",
                        "tooltip": "Storyline JSON (from the Director's storyline_json output).",
                    },
                ),
            }
        }

    def edit(self, timeline, storyline_json):
        from avatar_cascade.artefacts.storyline import Storyline

        story = Storyline.from_json(storyline_json, timeline.timeline)
        text = story.to_json()
        return {"ui": {"text": [text]}, "result": (story, text)}


NODE_CLASS_MAPPINGS = {
    "AvatarCascadeDirector": AvatarCascadeDirector,
    "AvatarCascadeStorylineEdit": AvatarCascadeStorylineEdit,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "AvatarCascadeDirector": "Avatar Cascade: MLLM Director",
    "AvatarCascadeStorylineEdit": "Avatar Cascade: Storyline Edit",
}

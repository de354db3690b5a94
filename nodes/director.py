"""Director nodes: the MLLM Director and the storyline editor."""

from __future__ import annotations

from . import comfy_bridge as bridge


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
                "seed": (
                    "INT",
                    {
                        "default": 0,
                        "min": 0,
                        "max": 2**63 - 1,
                        "tooltip": "Director seed (greedy decoding is deterministic).",
                    },
                ),
                "max_new_tokens": (
                    "INT",
                    {
                        "default": 512,
                        "min": 64,
                        "max": 8192,
                        "tooltip": "Tokens the model may write in the global pass. A shot pass (16 shots) may "
                        "write max(this, 96 per shot) = 1536 tokens by default.",
                    },
                ),
            },
            "optional": {"mllm": ("AVATAR_MLLM", {"tooltip": "Director model; leave empty for the rule-based plan."})},
        }

    def direct(self, image, timeline, instruction, seed, max_new_tokens, mllm=None):
        from avatar_cascade.media import check_image_tensor
        from avatar_cascade.stages.director.director import direct

        runtime = bridge.make_runtime()
        ref = check_image_tensor(image, "image")
        a = timeline.audio
        if mllm is None:
            story = direct(None, ref, a.waveform, a.sample_rate, instruction, timeline.timeline, runtime, seed=seed)
        else:
            with runtime.use_models(mllm.model):
                story = direct(
                    mllm,
                    ref,
                    a.waveform,
                    a.sample_rate,
                    instruction,
                    timeline.timeline,
                    runtime,
                    seed=seed,
                    max_new_tokens=max_new_tokens,
                )
        text = story.to_json()
        return {"ui": {"text": [text]}, "result": (story, text)}


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

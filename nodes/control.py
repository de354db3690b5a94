"""Guided refinement nodes: skeletons from keypoints, XDoG line art, control videos, sketch keys and the
Guided Refiner (a Wan VACE DiT under a control video)."""

from __future__ import annotations

from . import comfy_bridge as bridge
from ._common import with_warnings
from .refiner import AvatarCascadeFLFRefiner

STRENGTH = ("FLOAT", {"default": 1.0, "min": 0.0, "max": 10.0, "step": 0.05,
                      "tooltip": "Scale of every VACE hint (ComfyUI WanVaceToVideo 'strength')."})  # fmt: skip


def _image(frames_u8):
    return frames_u8.float().div(255).to(bridge.intermediate_device())


class AvatarCascadePoseSkeletons:
    DESCRIPTION = (
        "Draws OpenPose skeletons (OpenPose colours and limb order: body, hands, face) from keypoint JSON as "
        "ComfyUI's pose preprocessors write it (DWPose / OpenPose POSE_KEYPOINT, or the JSON text). With reference "
        "keypoints, every bone of the driving motion is rescaled to the reference person's length (2D bone-length "
        "retargeting, Champ's shape alignment without SMPL), so the motion fits the reference's proportions."
    )
    CATEGORY = "AvatarCascade/guidance"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("skeletons",)
    OUTPUT_TOOLTIPS = ("One skeleton frame per keypoint frame, on black.",)
    FUNCTION = "render"

    @classmethod
    def INPUT_TYPES(cls):
        size = {"default": 0, "min": 0, "max": 4096, "step": 8, "tooltip": "Frame size in pixels (0 = the canvas)."}
        return {
            "required": {
                "keypoints_json": ("STRING", {"default": "", "multiline": True,
                                              "tooltip": "OpenPose JSON: a frame or a list of frames (ignored "
                                              "when pose_keypoint is connected)."}),
                "width": ("INT", dict(size)),
                "height": ("INT", dict(size)),
            },
            "optional": {
                "pose_keypoint": ("POSE_KEYPOINT", {"tooltip": "Keypoints from a DWPose / OpenPose estimator."}),
                "reference_keypoint": ("POSE_KEYPOINT", {"tooltip": "The reference person's keypoints: retarget "
                                                         "the motion to its bone lengths."}),
                "reference_json": ("STRING", {"default": "", "multiline": True,
                                              "tooltip": "Or the reference keypoints as JSON text (empty = no "
                                              "retargeting)."}),
            },
        }  # fmt: skip

    def render(self, keypoints_json, width, height, pose_keypoint=None, reference_keypoint=None, reference_json=""):
        from avatar_cascade.media.guidance.frames import skeleton_frames

        reference = reference_keypoint if reference_keypoint is not None else (reference_json or None)
        source = pose_keypoint if pose_keypoint is not None else keypoints_json
        return (_image(skeleton_frames(source, width, height, reference)),)


class AvatarCascadeLineArt:
    DESCRIPTION = (
        "Line art with no weights to download: XDoG (extended difference of Gaussians) of every image, white lines "
        "on black like ComfyUI's line-art preprocessors. Use it for sketch guidance or scribble control."
    )
    CATEGORY = "AvatarCascade/guidance"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("lines",)
    OUTPUT_TOOLTIPS = ("Line art of each image.",)
    FUNCTION = "extract"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "Frames to draw lines from."}),
                "sigma": ("FLOAT", {"default": 0.8, "min": 0.1, "max": 10.0, "step": 0.1,
                                    "tooltip": "Line width (inner Gaussian, pixels)."}),
                "epsilon": ("FLOAT", {"default": 0.0, "min": -1.0, "max": 1.0, "step": 0.01,
                                      "tooltip": "Ink threshold: 0 inks edges only; higher also inks dark areas."}),
                "phi": ("FLOAT", {"default": 10.0, "min": 0.1, "max": 200.0, "step": 0.1,
                                  "tooltip": "Line hardness."}),
                "invert": ("BOOLEAN", {"default": True, "tooltip": "White lines on black (off: dark on white)."}),
            }
        }  # fmt: skip

    def extract(self, images, sigma, epsilon, phi, invert):
        from avatar_cascade.media.guidance.frames import lineart_frames

        return (_image(lineart_frames(images, sigma=sigma, epsilon=epsilon, phi=phi, invert=invert)),)


class AvatarCascadeControlVideo:
    DESCRIPTION = (
        "A control video on the timeline for the Guided Refiner: any mix of guidance layers (depth, normal, semantic "
        "map from any preprocessor, skeletons, line art) composited in order, later layers drawn over earlier ones "
        "where they have content, plus optional per-frame masks. Control frame i starts i / fps seconds after "
        "start_frame (fps 0: one control frame per output frame); each sub-clip gets its exact slice."
    )
    CATEGORY = "AvatarCascade/guidance"
    RETURN_TYPES = ("AVATAR_CONTROL",)
    RETURN_NAMES = ("control",)
    OUTPUT_TOOLTIPS = ("The control for the Guided Refiner.",)
    FUNCTION = "build"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "layer_1": ("IMAGE", {"tooltip": "First (background) layer, e.g. depth or normal maps."}),
                "fps": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 120.0, "step": 0.001,
                                  "tooltip": "Rate of the control frames (0 = the output video's rate)."}),
                "start_frame": ("INT", {"default": 0, "min": 0, "max": 10**7,
                                        "tooltip": "Output frame where control frame 0 sits."}),
                "strength": STRENGTH,
            },
            "optional": {
                "layer_2": ("IMAGE", {"tooltip": "Drawn over layer 1 where it is not black (e.g. skeletons)."}),
                "layer_3": ("IMAGE", {"tooltip": "Drawn over layers 1-2 where it is not black (e.g. line art)."}),
                "masks": ("MASK", {"tooltip": "Per control frame: 1 = generate under guidance, 0 = keep pixels."}),
            },
        }  # fmt: skip

    def build(self, layer_1, fps, start_frame, strength, layer_2=None, layer_3=None, masks=None):
        from avatar_cascade.artefacts.control import ControlVideo, control_from_images
        from avatar_cascade.artefacts.timeline import parse_fps
        from avatar_cascade.media.guidance.composite import composite_layers

        layers = [control_from_images(x, f"layer_{i + 1}") for i, x in enumerate((layer_1, layer_2, layer_3))
                  if x is not None]  # fmt: skip
        frames = composite_layers(layers)
        rate = parse_fps(fps) if fps > 0 else None
        m = None if masks is None else masks.float().cpu().expand(len(frames), *frames.shape[1:3]).contiguous()
        return (ControlVideo(frames, fps=rate, masks=m, start_frame=start_frame, strength=strength),)


class AvatarCascadeSketchKeys:
    DESCRIPTION = (
        "Sparse sketch guidance for in-betweening (ToonCrafter's sketch-guided interpolation): each sketch guides "
        "the output frame listed for it, frames between are generated freely, and the drawn keyframes stay anchored. "
        "Sketches drawn dark on white are inverted to white on black (the line-art convention)."
    )
    CATEGORY = "AvatarCascade/guidance"
    RETURN_TYPES = ("AVATAR_CONTROL",)
    RETURN_NAMES = ("control",)
    OUTPUT_TOOLTIPS = ("Sparse control for the Guided Refiner.",)
    FUNCTION = "build"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "sketches": ("IMAGE", {"tooltip": "One sketch per guided frame."}),
                "frames": ("STRING", {"default": "8", "tooltip": "Output frame of each sketch, e.g. '8, 24'."}),
                "strength": STRENGTH,
                "dark_on_white": ("BOOLEAN", {"default": False,
                                              "tooltip": "The sketches are dark lines on white paper: invert them."}),
            }
        }  # fmt: skip

    def build(self, sketches, frames, strength, dark_on_white):
        from avatar_cascade.artefacts.control import ControlVideo, control_from_images
        from avatar_cascade.media.guidance.frames import parse_frame_list

        u8 = control_from_images(sketches, "sketches")
        if dark_on_white:
            u8 = 255 - u8
        return (ControlVideo(u8, keys=parse_frame_list(frames, len(u8)), strength=strength),)


class AvatarCascadeGuidedRefiner(AvatarCascadeFLFRefiner):
    DESCRIPTION = (
        "The First-Last-Frame Refiner on a Wan VACE DiT under a control video (pose, depth, normal, semantic map, "
        "line art or sparse sketches): each sub-clip reads its exact slice of the control, its two keyframes are "
        "anchored through VACE's masks, the lip-sync adapter applies where attached. Without a control input it "
        "renders exactly as unguided VACE. exact_keys writes the keyframes' pixels over the rendered key frames. "
        "vace_reference adds VACE reference images (the avatar's reference) as extra latent frames."
    )

    @classmethod
    def INPUT_TYPES(cls):
        spec = super().INPUT_TYPES()
        tip = "A Wan VACE DiT (wan2.1_vace_1.3B / 14B): the pack's DiT loader or ComfyUI's MODEL (UNETLoader, GGUF...)."
        spec["required"]["dit"] = ("AVATAR_DIT,MODEL", {"tooltip": tip})
        spec["optional"] = {
            "control": ("AVATAR_CONTROL", {"tooltip": "From Control Video or Sketch Keys (none = unguided)."}),
            "exact_keys": ("BOOLEAN", {"default": False, "tooltip": "Paste the keyframes over the rendered keys."}),
            "vace_reference": ("IMAGE", {"tooltip": "Optional VACE reference image(s), e.g. the avatar's reference "
                               "image: fitted on white and read as extra latent frames in front of every clip "
                               "(identity / appearance guidance)."}),
            **spec["optional"],
        }
        return spec

    def refine(self, dit, vae, text_encoder, keyframes, timeline, storyline, cache_folder, reroll="",
               clip_vision=None, control=None, exact_keys=False, vace_reference=None, **widgets):  # fmt: skip
        from avatar_cascade.stages.refiner.refiner import refine_clips

        from ._common import wan_models
        from .refiner import refiner_widgets

        runtime = bridge.make_runtime()
        clips = refine_clips(  # the VAE / text encoder may be ComfyUI's own (VAELoader, CLIPLoader)
            wan_models(dit, vae, text_encoder, clip_vision), keyframes, timeline, storyline,
            refiner_widgets().build(widgets), runtime, cache_dir=bridge.work_dir(cache_folder), reroll=reroll,
            control=control, exact_keys=exact_keys, vace_reference=vace_reference,
        )  # fmt: skip
        return with_warnings(runtime, (clips,))


NODE_CLASS_MAPPINGS = {
    "AvatarCascadePoseSkeletons": AvatarCascadePoseSkeletons,
    "AvatarCascadeLineArt": AvatarCascadeLineArt,
    "AvatarCascadeControlVideo": AvatarCascadeControlVideo,
    "AvatarCascadeSketchKeys": AvatarCascadeSketchKeys,
    "AvatarCascadeGuidedRefiner": AvatarCascadeGuidedRefiner,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "AvatarCascadePoseSkeletons": "Avatar Cascade: Pose Skeletons (OpenPose keypoints)",
    "AvatarCascadeLineArt": "Avatar Cascade: Line Art (XDoG)",
    "AvatarCascadeControlVideo": "Avatar Cascade: Control Video",
    "AvatarCascadeSketchKeys": "Avatar Cascade: Sketch Keys",
    "AvatarCascadeGuidedRefiner": "Avatar Cascade: Guided Refiner (Wan VACE)",
}

"""The guided-refinement workflow graphs (Wan VACE), in ComfyUI's API format.

* ``avatar_cascade_pose_avatar``: reference + audio + a pose sequence -> the cascade, with the
  sub-clips refined by Wan 2.1 VACE 14B under OpenPose skeletons (retargeted to the reference's
  proportions) and the InfiniteTalk lip-sync adapter.
* ``avatar_cascade_sketch_inbetween``: drawn keys + sparse sketches -> sketch-guided in-betweening
  (ToonCrafter's row) on Wan 2.1 VACE 14B, keys reproduced exactly.

The pose graph ships a short sample keypoint sequence in its JSON widget (an arm wave, in the
OpenPose format ComfyUI's DWPose / OpenPose estimators write); connect an estimator's
POSE_KEYPOINT to the Pose Skeletons node for a real driving video.
"""

from __future__ import annotations

import json
import math

from workflow_graphs import (
    clip_stitcher,
    dit_loader,
    flf_refiner,
    inbetween_graph,
    native_graph,
    node,
    wan21_480p_graph,
)
from workflow_models import HF_WAN21, INBETWEEN_MODELS, KEY_IMAGES, NATIVE_MODELS, WAN21_480P_MODELS, model_names

VACE_14B = ("wan2.1_vace_14B_fp16.safetensors", f"{HF_WAN21}/diffusion_models/wan2.1_vace_14B_fp16.safetensors")
POSE_AVATAR_MODELS = {**WAN21_480P_MODELS, "vace_dit": VACE_14B}
POSE_AVATAR_NATIVE_MODELS = {**NATIVE_MODELS, "vace_dit": VACE_14B}
SKETCH_MODELS = {**{k: v for k, v in INBETWEEN_MODELS.items() if k != "clip_vision"}, "dit": VACE_14B}
CANVAS = (832, 480)
# An upper body facing the camera (COCO-18 order, canvas pixels): nose, neck, arms, hips, eyes, ears.
_BODY = [
    (416, 150), (416, 230), (356, 236), (330, 330), (320, 420), (476, 236), (502, 330), (512, 420),
    (380, 440), (380, 470), (380, 479), (452, 440), (452, 470), (452, 479), (404, 138), (428, 138),
    (390, 146), (442, 146),
]  # fmt: skip


def _pose_frame(body, scale: float = 1.0) -> dict:
    flat = [v for x, y in body for v in (round(416 + (x - 416) * scale, 1), round(240 + (y - 240) * scale, 1), 0.9)]
    return {"people": [{"pose_keypoints_2d": flat}], "canvas_width": CANVAS[0], "canvas_height": CANVAS[1]}


def sample_pose_sequence(frames: int = 8) -> str:
    """A deterministic arm wave: the left forearm swings up and down about the elbow (OpenPose JSON list)."""
    out = []
    for i in range(frames):
        body = list(_BODY)
        a = math.radians(-90 + 60 * math.sin(2 * math.pi * i / frames))  # angle of the forearm
        ex, ey = body[6]
        body[7] = (round(ex + 90 * math.cos(a), 1), round(ey + 90 * math.sin(a), 1))
        out.append(_pose_frame(body))
    return json.dumps(out)


def sample_reference_pose() -> str:
    """The reference person's pose (a slightly smaller build than the driver's): one frame."""
    return json.dumps(_pose_frame(_BODY, scale=0.9))


def guided_refiner(dit: list, vae: list, te: list, kf: list, tl: list, sl: list, control: list, **kw) -> dict:
    """The Guided Refiner node: the FLF refiner's inputs plus the control and exact_keys."""
    flf = flf_refiner(dit, vae, te, kf, tl, sl, **{k: v for k, v in kw.items() if k != "exact_keys"})
    inputs = {**flf["inputs"], "control": control, "exact_keys": kw.get("exact_keys", False)}
    return node("AvatarCascadeGuidedRefiner", inputs)


def _pose_guided(g: dict, vace: dict, adapter_name: str, folder: str) -> dict:
    """``g`` (a Wan 2.1 480p cascade) refined by the VACE DiT ``vace`` (a loader node) under pose skeletons: the
    lip-sync adapter on it, the skeletons retargeted to the reference, the reference also VACE's reference."""
    g["16"] = vace
    g["17"] = node(
        "AvatarCascadeAudioAdapterLoader",
        {"dit": ["16", 0], "adapter_name": adapter_name, "strength": 1.0},
        "Lip-sync adapter on the VACE DiT",
    )
    g["18"] = node(
        "AvatarCascadePoseSkeletons",
        {"keypoints_json": sample_pose_sequence(), "width": 0, "height": 0, "reference_json": sample_reference_pose()},
        "Pose skeletons (connect a DWPose POSE_KEYPOINT for a real driving video)",
    )
    g["19"] = node("AvatarCascadeControlVideo", {"layer_1": ["18", 0], "fps": 4.0, "start_frame": 0, "strength": 1.0})
    g["12"] = guided_refiner(
        ["17", 0], ["4", 0], ["5", 0], ["11", 0], ["8", 0], ["9", 0], ["19", 0],
        batch_size=0, cache_folder=f"{folder}_clips",
    )  # fmt: skip
    g["12"]["inputs"]["vace_reference"] = ["1", 0]  # VACE's reference image: the avatar itself (identity under pose)
    g["10"]["inputs"]["work_folder"] = g["11"]["inputs"]["work_folder"] = folder
    g["13"]["inputs"]["filename_prefix"] = f"avatar_cascade/{folder}"
    return g


def pose_avatar_graph() -> dict:
    """Reference + audio + pose sequence: the Wan 2.1 480p cascade refined by VACE 14B under the skeletons."""
    m = model_names(POSE_AVATAR_MODELS)
    return _pose_guided(wan21_480p_graph(), dit_loader(m["vace_dit"]), m["audio_adapter"], "pose_avatar")


def pose_avatar_native_graph() -> dict:
    """The pose avatar on ComfyUI's own loaders: the native graph (UNETLoader FLF2V + LoRA for the blueprint and
    lift, CLIPLoader, VAELoader, CLIPVisionLoader) with a second UNETLoader for VACE 14B refining under the pose."""
    m = model_names(POSE_AVATAR_NATIVE_MODELS)
    vace = node("UNETLoader", {"unet_name": m["vace_dit"], "weight_dtype": "default"}, "Wan VACE DiT (UNETLoader)")
    g = native_graph()
    g["20"] = g.pop("16")  # the native graph's LoRA node: its id goes to the VACE loader
    for nid in ("14", "11"):
        g[nid]["inputs"]["dit"] = ["20", 0]
    return _pose_guided(g, vace, m["audio_adapter"], "pose_avatar_native")


def sketch_inbetween_graph() -> dict:
    """Drawn keys + two sketches (XDoG line art of drawings) at chosen frames -> VACE 14B in-betweening."""
    m = model_names(SKETCH_MODELS)
    g = inbetween_graph()
    del g["9"]  # VACE has no CLIP-vision image embedder
    g["6"] = dit_loader(m["dit"])
    g["13"] = node("LoadImage", {"image": KEY_IMAGES[1]}, "Sketch 1 (a drawing)")
    g["14"] = node("LoadImage", {"image": KEY_IMAGES[2]}, "Sketch 2 (a drawing)")
    g["15"] = node("ImageBatch", {"image1": ["13", 0], "image2": ["14", 0]})
    g["16"] = node("AvatarCascadeLineArt", {"images": ["15", 0], "sigma": 0.8, "epsilon": 0.0, "phi": 10.0,
                                            "invert": True})  # fmt: skip
    g["17"] = node(
        "AvatarCascadeSketchKeys", {"sketches": ["16", 0], "frames": "16, 48", "strength": 1.0, "dark_on_white": False}
    )
    g["11"] = guided_refiner(
        ["6", 0], ["7", 0], ["8", 0], ["10", 0], ["10", 1], ["10", 2], ["17", 0],
        batch_size=0, cache_folder="sketch_inbetween_clips", exact_keys=True,
    )  # fmt: skip
    g["12"] = clip_stitcher(
        ["11", 0], ["10", 1], filename_prefix="avatar_cascade/sketch_inbetween", crf=19, colour_match=0.0
    )
    return g


GUIDED_WORKFLOWS = {
    "avatar_cascade_pose_avatar": (pose_avatar_graph, POSE_AVATAR_MODELS),
    "avatar_cascade_pose_avatar_native": (pose_avatar_native_graph, POSE_AVATAR_NATIVE_MODELS),
    "avatar_cascade_sketch_inbetween": (sketch_inbetween_graph, SKETCH_MODELS),
}

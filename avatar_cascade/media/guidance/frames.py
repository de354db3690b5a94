"""Guidance frames as the nodes and the CLI hand them on: skeleton videos, line art, sketch key lists.

IMAGE batches are ``[N, H, W, 3]`` float in 0..1 (ComfyUI's IMAGE); control frames are uint8.
"""

from __future__ import annotations

import re

import numpy as np
import torch

from avatar_cascade.core.errors import InputError
from avatar_cascade.media.guidance.lineart import xdog
from avatar_cascade.media.guidance.pose import parse_pose_json, render_poses
from avatar_cascade.media.guidance.retarget import retarget_poses


def skeleton_frames(keypoints, width: int = 0, height: int = 0, reference=None) -> torch.Tensor:
    """OpenPose skeletons of keypoint JSON (text, a frame dict or a list of frames: what ComfyUI's
    ``POSE_KEYPOINT`` holds), retargeted to ``reference``'s proportions when given (its first frame):
    ``[N, H, W, 3]`` uint8; width / height 0 = the (reference's) canvas size."""
    frames = parse_pose_json(keypoints)
    if reference is not None:
        frames = retarget_poses(frames, parse_pose_json(reference)[0])
    return torch.from_numpy(render_poses(frames, width or None, height or None))


def lineart_frames(images: torch.Tensor, **xdog_args) -> torch.Tensor:
    """XDoG line art of an IMAGE batch: ``[N, H, W, 3]`` uint8."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[-1] not in (3, 4):
        got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise InputError("image", got, "expected an IMAGE batch [N, H, W, 3]", "connect an IMAGE output")
    u8 = (images[..., :3].float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    return torch.from_numpy(np.stack([xdog(f, **xdog_args) for f in u8]))


def parse_frame_list(text: str, count: int, input_name: str = "sketch_frames") -> tuple[int, ...]:
    """``"8, 20"`` -> ``(8, 20)``: one output frame index per sketch (``count`` of them, distinct)."""
    tokens = [t for t in re.split(r"[,;\s]+", (text or "").strip()) if t]
    if not all(t.isdigit() for t in tokens):
        raise InputError(input_name, text, "is not a list of frame numbers", "write frame indices like '8, 20'")
    keys = tuple(int(t) for t in tokens)
    if len(keys) != count or len(set(keys)) != count:
        raise InputError(
            input_name, text, f"needs {count} distinct frame numbers, one per sketch", f"list {count} frames"
        )
    return keys

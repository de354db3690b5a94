"""Command-line flags of guided refinement (a Wan VACE DiT under a control video), for :mod:`avatar_cascade.cli`."""

from __future__ import annotations

import argparse
from pathlib import Path


def _add_control_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("guided refinement (a Wan VACE DiT under a control video)")
    g.add_argument("--refiner-dit", help="Wan VACE DiT in models/diffusion_models for the refiner (the blueprint "
                   "keeps --dit)")
    g.add_argument("--control", type=Path, help="control video file (depth / normal / semantic / pose / line art)")
    g.add_argument("--pose-json", type=Path, help="OpenPose / DWPose keypoint JSON (list of frames), drawn as "
                   "skeletons over --control")
    g.add_argument("--reference-pose-json", type=Path, help="the reference person's keypoints: retarget the "
                   "--pose-json motion to its bone lengths")
    g.add_argument("--control-fps", help="rate of the control frames (default: the video's own; for --pose-json "
                   "the output rate)")
    g.add_argument("--control-start", type=int, default=0, help="output frame where control frame 0 sits")
    g.add_argument("--control-strength", type=float, default=1.0, help="scale of every VACE hint (default 1)")
    g.add_argument("--control-lineart", action="store_true", help="use the XDoG line art of the control layers")
    g.add_argument("--sketch", action="append", default=[], metavar="IMAGE@FRAME",
                   help="sparse sketch key: IMAGE guides output frame FRAME (repeat for more)")
    g.add_argument("--sketch-dark-on-white", action="store_true", help="the sketches are dark lines on white")
    g.add_argument("--exact-keys", action="store_true", help="write the keyframes' pixels over the rendered keys")
    g.add_argument("--control-blueprint", action="store_true", help="the control guides the blueprint too (--dit "
                   "must then be a Wan VACE DiT)")
    g.add_argument("--vace-reference", action="store_true", help="give the refiner's VACE DiT the --image as a VACE "
                   "reference image (extra latent frames in front of every clip)")


def _control_spec(args):
    from avatar_cascade.core.errors import InputError
    from avatar_cascade.stages.refiner.control_inputs import ControlSpec

    sketches = []
    for text in args.sketch:
        path, _, frame = text.rpartition("@")
        if not path or not frame.isdigit():
            raise InputError("--sketch", text, "is not IMAGE@FRAME", "write e.g. --sketch drawing.png@16")
        sketches.append((Path(path), int(frame)))
    return ControlSpec(
        video=args.control, pose_json=args.pose_json, reference_pose_json=args.reference_pose_json,
        fps=args.control_fps, start_frame=args.control_start, strength=args.control_strength,
        lineart=args.control_lineart, sketches=sketches, sketch_dark_on_white=args.sketch_dark_on_white,
        blueprint=args.control_blueprint,
    )  # fmt: skip

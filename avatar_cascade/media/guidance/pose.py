"""OpenPose / DWPose keypoints: read the JSON ComfyUI's pose preprocessors write, draw OpenPose skeletons.

Format (OpenPose ``--write_json``, what controlnet_aux / ComfyUI "Save Pose Keypoints" write): one
frame is ``{"people": [{"pose_keypoints_2d": [x0, y0, c0, x1, y1, c1, ...], "hand_left_keypoints_2d":
[...], "hand_right_keypoints_2d": [...], "face_keypoints_2d": [...]}], "canvas_width": W,
"canvas_height": H}``; a sequence is a list of frames. Coordinates are pixels of the canvas (values
all in [0, 1] are read as normalised); a point with confidence 0 (or at 0, 0) is missing.

Bodies are the 18-point COCO order OpenPose and DWPose use (0 nose, 1 neck, 2-4 right arm, 5-7 left
arm, 8-10 right leg, 11-13 left leg, 14-17 eyes and ears). The drawing is OpenPose's (controlnet_aux
``draw_bodypose`` / ``draw_handpose``): 17 limbs as filled ellipses (stick width 4) in OpenPose's 18
colours, the limb layer dimmed to 60 %, joints as radius-4 discs in full colour; hand bones in HSV
rainbow colours with blue joints; face points white.
"""

from __future__ import annotations

import colorsys
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from avatar_cascade.core.errors import InputError

NUM_BODY = 18
# OpenPose limbs (1-based joint pairs, as controlnet_aux writes them); the first 17 are drawn.
LIMBS = (
    (2, 3), (2, 6), (3, 4), (4, 5), (6, 7), (7, 8), (2, 9), (9, 10), (10, 11), (2, 12), (12, 13),
    (13, 14), (2, 1), (1, 15), (15, 17), (1, 16), (16, 18), (3, 17), (6, 18),
)  # fmt: skip
COLOURS = (
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0), (0, 255, 0),
    (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255), (0, 0, 255), (85, 0, 255),
    (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85),
)  # fmt: skip
HAND_EDGES = (
    (0, 1), (1, 2), (2, 3), (3, 4), (0, 5), (5, 6), (6, 7), (7, 8), (0, 9), (9, 10), (10, 11), (11, 12),
    (0, 13), (13, 14), (14, 15), (15, 16), (0, 17), (17, 18), (18, 19), (19, 20),
)  # fmt: skip
STICK_WIDTH = 4


@dataclass
class Person:
    """One person's keypoints in canvas pixels: ``[N, 2]`` xy and ``[N]`` visibility per part (None: absent)."""

    body: np.ndarray
    body_ok: np.ndarray
    hands: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    face: tuple[np.ndarray, np.ndarray] | None = None


@dataclass
class PoseFrame:
    width: int
    height: int
    people: list[Person]


def _points(flat, count: int | None, what: str) -> tuple[np.ndarray, np.ndarray]:
    arr = np.asarray(flat, dtype=np.float64)
    if arr.ndim != 1 or arr.size % 3 or (count is not None and arr.size != 3 * count):
        want = f"{3 * count} numbers ({count} points x, y, confidence)" if count else "x, y, confidence triples"
        raise InputError(what, arr.size, f"expected {want}", "connect OpenPose / DWPose keypoint JSON")
    pts = arr.reshape(-1, 3)
    ok = (pts[:, 2] > 0) & ~((pts[:, 0] == 0) & (pts[:, 1] == 0))
    return pts[:, :2].copy(), ok


def _frame(d: dict, index: int) -> PoseFrame:
    if not isinstance(d, dict) or "people" not in d:
        raise InputError(f"pose_keypoints[{index}]", type(d).__name__, "has no 'people' list", "pass OpenPose JSON")
    w, h = int(d.get("canvas_width", 0) or 0), int(d.get("canvas_height", 0) or 0)
    if w <= 0 or h <= 0:
        raise InputError(f"pose_keypoints[{index}]", (w, h), "needs canvas_width and canvas_height", "add them")
    people = []
    for p in d["people"]:
        body, ok = _points(p.get("pose_keypoints_2d", []), NUM_BODY, "pose_keypoints_2d")
        pts = [body]
        hands = [_points(p[k], 21, k) for k in ("hand_left_keypoints_2d", "hand_right_keypoints_2d") if p.get(k)]
        face = _points(p["face_keypoints_2d"], None, "face_keypoints_2d") if p.get("face_keypoints_2d") else None
        pts += [xy for xy, _ in hands] + ([face[0]] if face else [])
        if all(float(np.abs(x).max(initial=0)) <= 1.0 for x in pts):  # normalised coordinates
            for x in pts:
                x *= (w, h)
        people.append(Person(body, ok, hands, face))
    return PoseFrame(w, h, people)


def parse_pose_json(data: str | bytes | dict | list) -> list[PoseFrame]:
    """Pose frames from OpenPose JSON text, a parsed frame dict or a list of frames."""
    if isinstance(data, (str, bytes)):
        try:
            data = json.loads(data)
        except json.JSONDecodeError as err:
            raise InputError("pose_keypoints", str(err), "is not valid JSON", "connect OpenPose JSON") from err
    frames = data if isinstance(data, list) else [data]
    if not frames:
        raise InputError("pose_keypoints", [], "holds no frames", "connect keypoints of at least one frame")
    return [_frame(d, i) for i, d in enumerate(frames)]


def load_pose_json(path: str | Path) -> list[PoseFrame]:
    """Pose frames from a keypoint JSON file."""
    p = Path(path)
    if not p.is_file():
        raise InputError("pose_keypoints", str(p), "is not a file", "give the path of a keypoint JSON file")
    return parse_pose_json(p.read_text(encoding="utf-8"))


def _draw_body(canvas: np.ndarray, person: Person, sx: float, sy: float) -> None:
    import cv2

    xy, ok = person.body * (sx, sy), person.body_ok
    for i, (a, b) in enumerate(LIMBS[:17]):
        a, b = a - 1, b - 1
        if not (ok[a] and ok[b]):
            continue
        (x0, y0), (x1, y1) = xy[a], xy[b]
        length = math.hypot(x0 - x1, y0 - y1)
        angle = math.degrees(math.atan2(y0 - y1, x0 - x1))
        centre = (int((x0 + x1) / 2), int((y0 + y1) / 2))
        poly = cv2.ellipse2Poly(centre, (int(length / 2), STICK_WIDTH), int(angle), 0, 360, 1)
        cv2.fillConvexPoly(canvas, poly, COLOURS[i])


def _draw_joints(canvas: np.ndarray, person: Person, sx: float, sy: float) -> None:
    import cv2

    for i, ((x, y), good) in enumerate(zip(person.body * (sx, sy), person.body_ok)):
        if good:
            cv2.circle(canvas, (int(x), int(y)), 4, COLOURS[i], thickness=-1)


def _draw_extras(canvas: np.ndarray, person: Person, sx: float, sy: float) -> None:
    import cv2

    for xy, ok in person.hands:
        xy = xy * (sx, sy)
        for e, (a, b) in enumerate(HAND_EDGES):
            if ok[a] and ok[b]:
                rgb = tuple(int(255 * c) for c in colorsys.hsv_to_rgb(e / len(HAND_EDGES), 1.0, 1.0))
                cv2.line(canvas, tuple(int(v) for v in xy[a]), tuple(int(v) for v in xy[b]), rgb, thickness=2)
        for (x, y), good in zip(xy, ok):
            if good:
                cv2.circle(canvas, (int(x), int(y)), 4, (0, 0, 255), thickness=-1)
    if person.face is not None:
        for (x, y), good in zip(person.face[0] * (sx, sy), person.face[1]):
            if good:
                cv2.circle(canvas, (int(x), int(y)), 3, (255, 255, 255), thickness=-1)


def render_pose(frame: PoseFrame, width: int | None = None, height: int | None = None) -> np.ndarray:
    """One frame's skeletons on black: ``[H, W, 3]`` uint8 RGB (default: the canvas size)."""
    w, h = width or frame.width, height or frame.height
    sx, sy = w / frame.width, h / frame.height
    canvas = np.zeros((h, w, 3), np.uint8)
    for person in frame.people:
        _draw_body(canvas, person, sx, sy)
    canvas = (canvas * 0.6).astype(np.uint8)  # OpenPose dims the limbs under the joints
    for person in frame.people:
        _draw_joints(canvas, person, sx, sy)
        _draw_extras(canvas, person, sx, sy)
    return canvas


def render_poses(frames: list[PoseFrame], width: int | None = None, height: int | None = None) -> np.ndarray:
    """Every frame's skeletons: ``[N, H, W, 3]`` uint8 (default size: the first frame's canvas)."""
    w, h = width or frames[0].width, height or frames[0].height
    return np.stack([render_pose(f, w, h) for f in frames])

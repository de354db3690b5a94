"""2D bone-length retargeting: a driving skeleton moved with the reference person's proportions.

Champ aligns the driving motion to the reference body by copying the reference's SMPL shape onto
the driving sequence ("parametric shape alignment"). Without a 3D body, the 2D counterpart
(what UniAnimate's and Wan-Animate's pose retargeting do) rescales every bone of the 18-point
OpenPose tree:

* each bone ``parent -> child`` keeps the driving frame's direction and foreshortening, its
  length scaled by ``reference length / driving length in the first driving frame`` (so a bone
  that shortens in the motion, e.g. an arm turning toward the camera, still shortens);
* the root (neck) starts on the reference's neck and moves as the driving neck does, the motion
  scaled by the torso ratio (reference neck-hip / driving neck-hip length);
* hands follow their wrists and the face its nose, scaled by the torso ratio.

A bone missing in the reference or in the first driving frame is scaled by the torso ratio;
a joint missing in a driving frame stays missing.
"""

from __future__ import annotations

import copy
import math

import numpy as np

from avatar_cascade.core.errors import InputError
from avatar_cascade.media.guidance.pose import Person, PoseFrame

ROOT = 1  # neck
# (parent, child) in drawing order from the neck: head, arms, legs (0-based COCO-18 indices).
BONES = (
    (1, 0), (0, 14), (14, 16), (0, 15), (15, 17),
    (1, 2), (2, 3), (3, 4), (1, 5), (5, 6), (6, 7),
    (1, 8), (8, 9), (9, 10), (1, 11), (11, 12), (12, 13),
)  # fmt: skip
WRISTS = (7, 4)  # hand_left -> left wrist (7), hand_right -> right wrist (4)
NOSE = 0


def _length(p: Person, a: int, b: int) -> float | None:
    if not (p.body_ok[a] and p.body_ok[b]):
        return None
    return float(np.hypot(*(p.body[a] - p.body[b])))


def _torso(p: Person) -> float | None:
    """Neck to the middle of the hips (or to the one visible hip)."""
    hips = [p.body[i] for i in (8, 11) if p.body_ok[i]]
    if not p.body_ok[ROOT] or not hips:
        return None
    return float(np.hypot(*(p.body[ROOT] - np.mean(hips, axis=0))))


def bone_ratios(reference: Person, driving: Person) -> tuple[dict[tuple[int, int], float], float]:
    """Per-bone length ratios (reference / driving) and the torso ratio used where a bone is missing."""
    rt, dt = _torso(reference), _torso(driving)
    if rt is None or dt is None or dt == 0:
        raise InputError(
            "pose_keypoints",
            "no neck or hip",
            "retargeting needs the neck and a hip in the reference and the first driving frame",
            "use keypoints where the torso is visible",
        )
    torso = rt / dt
    ratios = {}
    for a, b in BONES:
        ref, drv = _length(reference, a, b), _length(driving, a, b)
        ratios[(a, b)] = ref / drv if ref is not None and drv else torso
    return ratios, torso


def _retarget_person(p: Person, first: Person, reference: Person, ratios, torso: float) -> Person:
    out = copy.deepcopy(p)
    src, ok = p.body, p.body_ok
    new = np.zeros_like(src)
    if ok[ROOT]:
        new[ROOT] = reference.body[ROOT] + (src[ROOT] - first.body[ROOT]) * torso
    placed = {ROOT} if ok[ROOT] else set()
    for a, b in BONES:
        if a in placed and ok[b]:
            new[b] = new[a] + (src[b] - src[a]) * ratios[(a, b)]
            placed.add(b)
    out.body = new
    out.body_ok = np.array([i in placed for i in range(len(src))])
    hands = []
    for (xy, hok), wrist in zip(p.hands, WRISTS):
        anchor_ok = ok[wrist] and wrist in placed
        shifted = new[wrist] + (xy - src[wrist]) * torso if anchor_ok else xy
        hands.append((shifted, hok & anchor_ok))
    out.hands = hands
    if p.face is not None:
        xy, fok = p.face
        good = bool(ok[NOSE] and NOSE in placed)
        out.face = (new[NOSE] + (xy - src[NOSE]) * torso if good else xy, fok & good)
    return out


def retarget_poses(driving: list[PoseFrame], reference: PoseFrame, person: int = 0) -> list[PoseFrame]:
    """``driving`` frames with person ``person``'s bones at the reference's lengths, on the reference's canvas."""
    if not reference.people:
        raise InputError("reference_pose", "no people", "the reference keypoints hold no person", "detect a pose")
    if not driving or not any(len(f.people) > person for f in driving):
        raise InputError("pose_keypoints", person, "no driving frame holds this person", "pick person 0")
    ref = reference.people[0]
    first = next(f.people[person] for f in driving if len(f.people) > person)
    # keypoints in reference canvas pixels: the driving canvas is mapped onto it first
    first_r = _to_canvas(first, driving[0], reference)
    ratios, torso = bone_ratios(ref, first_r)
    out = []
    for f in driving:
        people = []
        if len(f.people) > person:
            people.append(_retarget_person(_to_canvas(f.people[person], f, reference), first_r, ref, ratios, torso))
        out.append(PoseFrame(reference.width, reference.height, people))
    return out


def _to_canvas(p: Person, frame: PoseFrame, reference: PoseFrame) -> Person:
    s = min(reference.width / frame.width, reference.height / frame.height)
    if math.isclose(s, 1.0) and (frame.width, frame.height) == (reference.width, reference.height):
        return p
    out = copy.deepcopy(p)
    out.body = p.body * s
    out.hands = [(xy * s, ok) for xy, ok in p.hands]
    out.face = None if p.face is None else (p.face[0] * s, p.face[1])
    return out

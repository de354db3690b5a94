"""Guidance without weights, on real inputs: OpenPose skeletons drawn from keypoint JSON written here (the
ComfyUI pose preprocessors' format), 2D bone-length retargeting of a driving skeleton to a reference's
proportions, XDoG line art of a real photo, and layer compositing."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from avatar_cascade.core.errors import InputError
from avatar_cascade.media.guidance.composite import composite_layers
from avatar_cascade.media.guidance.lineart import xdog
from avatar_cascade.media.guidance.pose import COLOURS, load_pose_json, parse_pose_json, render_pose
from avatar_cascade.media.guidance.retarget import BONES, retarget_poses

# A standing person on a 256 x 256 canvas, COCO-18 order (x, y): nose, neck, right arm, left arm, right leg,
# left leg, eyes, ears. The subject's right side is on the image's left.
BODY = [
    (128, 40), (128, 70), (100, 72), (90, 110), (85, 150), (156, 72), (166, 110), (171, 150),
    (112, 150), (110, 200), (108, 245), (144, 150), (146, 200), (148, 245), (122, 34), (134, 34),
    (114, 38), (142, 38),
]  # fmt: skip


def _frame(body, w=256, h=256, missing=(), scale=1.0, hand=None):
    flat = []
    for i, (x, y) in enumerate(body):
        flat += [0.0, 0.0, 0.0] if i in missing else [x * scale, y * scale, 0.9]
    person = {"pose_keypoints_2d": flat}
    if hand is not None:
        person["hand_right_keypoints_2d"] = [v for x, y in hand for v in (x, y, 0.8)]
    return {"people": [person], "canvas_width": w, "canvas_height": h}


def _mid(a, b):
    (x0, y0), (x1, y1) = BODY[a], BODY[b]
    return int((y0 + y1) / 2), int((x0 + x1) / 2)


def test_skeleton_is_drawn_in_openpose_colours_and_order():
    img = render_pose(parse_pose_json(json.dumps(_frame(BODY)))[0])
    assert img.shape == (256, 256, 3) and img.dtype == np.uint8
    # limbs at 60 %: limb 0 is neck -> right shoulder (red), limb 6 neck -> right hip, limb 9 neck -> left hip
    for limb, (a, b) in ((0, (1, 2)), (3, (3, 4)), (7, (8, 9)), (12, (1, 0))):
        y, x = _mid(a, b)
        assert tuple(img[y, x]) == tuple(int(c * 0.6) for c in COLOURS[limb]), limb
    # joints at full colour on top of the limbs
    for j in (0, 1, 4, 10, 13):
        x, y = BODY[j]
        assert tuple(img[y, x]) == COLOURS[j], j
    assert tuple(img[5, 5]) == (0, 0, 0) and tuple(img[250, 250]) == (0, 0, 0)


def test_missing_joints_drop_their_limbs_and_normalised_json_is_scaled():
    frames = parse_pose_json([_frame(BODY, missing=(4,)), _frame(BODY, scale=1 / 256)])
    no_wrist = render_pose(frames[0])
    y, x = _mid(3, 4)
    assert tuple(no_wrist[y, x]) == (0, 0, 0)  # the right forearm is gone
    assert tuple(no_wrist[BODY[4][1], BODY[4][0]]) == (0, 0, 0)
    full = render_pose(parse_pose_json(_frame(BODY))[0])
    assert np.array_equal(render_pose(frames[1]), full)  # 0..1 coordinates read as normalised
    half = render_pose(frames[1], 128, 128)  # drawn at another size: joints move with it
    assert tuple(half[BODY[1][1] // 2, BODY[1][0] // 2]) == COLOURS[1]


def test_hands_are_drawn_as_rainbow_bones_with_blue_joints():
    hand = [(60 + 3 * i, 160 + 4 * (i % 5)) for i in range(21)]
    hand[1] = (60, 190)
    img = render_pose(parse_pose_json(_frame(BODY, hand=hand))[0])
    assert tuple(img[hand[5][1], hand[5][0]]) == (0, 0, 255)
    y, x = (hand[0][1] + hand[1][1]) // 2, hand[0][0]
    assert tuple(img[y, x]) == (255, 0, 0)  # edge 0: hue 0


def test_pose_json_file_and_errors(tmp_path):
    path = tmp_path / "pose.json"
    path.write_text(json.dumps([_frame(BODY), _frame(BODY)]))
    assert len(load_pose_json(path)) == 2
    with pytest.raises(InputError, match="not valid JSON"):
        parse_pose_json("{nope")
    with pytest.raises(InputError, match="canvas_width"):
        parse_pose_json({"people": []})
    with pytest.raises(InputError, match="54 numbers"):
        parse_pose_json({"people": [{"pose_keypoints_2d": [1, 2, 3]}], "canvas_width": 8, "canvas_height": 8})


def _length(p, a, b):
    return float(np.hypot(*(p.body[a] - p.body[b])))


def test_retargeting_gives_the_driving_motion_the_references_bone_lengths():
    ref = parse_pose_json(_frame(BODY))[0]
    # the driver: long arms and legs, a shorter torso, on a 512 x 512 canvas, raising its right arm
    centre = np.array(BODY[1], float)
    factor = {3: 1.6, 4: 1.6, 6: 1.6, 7: 1.6, 9: 1.6, 10: 1.6, 12: 1.6, 13: 1.6, 8: 0.8, 11: 0.8}
    shift = np.array([40.0, 6.0])  # the driver stands elsewhere in its frame
    drive_body = [tuple(centre + shift + (np.array(p) - centre) * factor.get(i, 1.0)) for i, p in enumerate(BODY)]
    raised = list(drive_body)
    raised[4] = (raised[3][0], raised[3][1] - 25)  # forearm straight up and foreshortened
    raised[1] = (drive_body[1][0] + 10, drive_body[1][1])  # the driver steps right by 10 px
    frames = parse_pose_json([_frame(drive_body, 512, 512, scale=2), _frame(raised, 512, 512, scale=2)])
    out = retarget_poses(frames, ref)
    assert (out[0].width, out[0].height) == (256, 256)
    first, second = out[0].people[0], out[1].people[0]
    for a, b in BONES:  # frame 0: every bone has the reference's length
        assert _length(first, a, b) == pytest.approx(_length(ref.people[0], a, b), abs=1e-6), (a, b)
    assert np.allclose(first.body[1], ref.people[0].body[1])  # the root starts on the reference's neck
    # frame 1: the forearm points up, foreshortened by the driver's own factor
    drv = frames[1].people[0]
    ratio = _length(drv, 3, 4) / _length(frames[0].people[0], 3, 4)
    assert _length(second, 3, 4) == pytest.approx(ratio * _length(ref.people[0], 3, 4))
    d = second.body[4] - second.body[3]
    assert d[0] == pytest.approx(0, abs=1e-6) and d[1] < 0
    # the root follows the driver's step, scaled by the torso ratio (reference / driver torso = 1 / 0.8)
    assert second.body[1][0] - first.body[1][0] == pytest.approx(10.0 / 0.8, rel=1e-6)
    assert second.body[1][1] == pytest.approx(first.body[1][1])
    img = render_pose(out[1])
    assert tuple(img[int(second.body[4][1]), int(second.body[4][0])]) == COLOURS[4]


def test_retargeting_needs_a_torso():
    ref = parse_pose_json(_frame(BODY, missing=(1,)))[0]
    with pytest.raises(InputError, match="neck and a hip"):
        retarget_poses(parse_pose_json(_frame(BODY)), ref)


def _photo() -> np.ndarray:
    try:
        from skimage import data

        return data.astronaut()
    except ImportError:  # the pack's own portrait
        from avatar_cascade.media import load_image, sample_image_path

        return (load_image(sample_image_path()).numpy() * 255).round().astype(np.uint8)


def test_xdog_inks_the_edges_of_a_real_photo():
    import cv2

    photo = _photo()
    lines = xdog(photo)
    assert lines.shape == photo.shape and lines.dtype == np.uint8
    ink = lines[..., 0] > 128
    assert 0.02 < ink.mean() < 0.25  # line art, not a threshold of the photo
    grey = cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY)
    edges = cv2.dilate(cv2.Canny(grey, 50, 150), np.ones((5, 5), np.uint8)) > 0
    assert (ink & edges).sum() / ink.sum() > 0.6  # most ink sits on the photo's edges
    flat = np.zeros_like(photo)
    flat[:] = 40
    assert xdog(flat).max() == 0  # a flat (dark) image has no lines
    assert np.array_equal(xdog(photo, invert=False), 255 - lines)
    thick = xdog(photo, sigma=2.0)[..., 0] > 128
    assert thick.mean() > ink.mean()


def test_composite_draws_later_layers_over_earlier_ones():
    depth = torch.full((2, 4, 4, 3), 100, dtype=torch.uint8)
    pose = torch.zeros(1, 4, 4, 3, dtype=torch.uint8)
    pose[0, 1, 1] = torch.tensor([255, 0, 0])
    out = composite_layers([depth, pose])
    assert out.shape == (2, 4, 4, 3)
    assert out[:, 1, 1].tolist() == [[255, 0, 0]] * 2
    assert (out[:, 0, 0] == 100).all()
    half = composite_layers([depth, pose], opacity=0.5)
    assert half[0, 1, 1].tolist() == [178, 50, 50]
    with pytest.raises(InputError, match="every layer must be"):
        composite_layers([depth, torch.zeros(3, 4, 4, 3, dtype=torch.uint8)])

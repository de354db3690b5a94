"""Keyframe scores from real detectors on a real face (scikit-image's astronaut photo)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from avatar_cascade.artefacts.blueprint import Blueprint
from avatar_cascade.stages.keyframes.extractor import extract_keyframes
from avatar_cascade.stages.keyframes.settings import KeyframeSettings
from tests import real_media as rm
from tests.helpers import aligned_tone, cpu_runtime

SIZE = 256
SCALE = SIZE / 512


@pytest.fixture(scope="module")
def planted():
    """2 s at 16 fps (seams at 0, 1, 2 s), blueprint at 8 fps: seam 1's candidates are frames 6..10.
    The tone is steady (no speech), so a closed mouth is preferred at the seam."""
    rm.need_face_models()
    ref = rm.astronaut(SIZE)
    frames = np.stack([ref] * 17)
    frames[6] = rm.resize(rm.face_on_background(rm.other_people(1)[0]), SIZE)  # someone else
    frames[7] = rm.occluded(ref, SCALE)  # face hidden
    frames[8] = rm.open_mouth(ref, 24, SCALE)  # right at the seam, mouth wide open in a pause
    frames[9] = rm.blurred(ref, 2.5)
    frames[10] = ref[:, ::-1].copy()  # the same person, sharp, mouth at rest: the farthest candidate
    return Blueprint.from_frames(torch.from_numpy(frames), 8), aligned_tone(2.0), torch.from_numpy(ref).float() / 255


def extract(planted, **kw):
    bp, aligned, ref = planted
    settings = KeyframeSettings(width=SIZE, height=SIZE, search_radius_s=0.25, **kw)
    return extract_keyframes(bp, aligned, ref, settings, cpu_runtime())


def test_detectors_pick_the_sharp_unoccluded_same_person_with_a_closed_mouth(planted):
    kf = extract(planted)
    s = kf.scores[1]
    assert [c[0] for c in s["candidates"]] == [6, 7, 8, 9, 10]
    assert kf.source_indices[1] == 10, s["candidates"]
    assert s["methods"]["identity"] == "face_embedding" and s["identity_method"] == "face_embedding"
    assert s["methods"]["face"] == "dlib_hog" and s["methods"]["sharpness"] == "face_box"
    assert s["methods"]["mouth"].startswith("dark_fraction_5pt+")
    assert s["identity"] > 0.6 and s["occlusion"] < 0.3 and s["mouth_open"] < 0.2


def test_each_detector_score_ranks_its_planted_defect(planted):
    from avatar_cascade.stages.keyframes.extractor import _scorer

    bp, aligned, ref = planted
    rt = cpu_runtime()
    ref_small = (ref * 255).round().to(torch.uint8)
    scorer = _scorer(aligned, ref_small, bp, KeyframeSettings(), rt, None)
    cand = bp.frames(6, 11)
    s = scorer.score(cand, cand, cand, [0.75, 0.875, 1.0, 1.125, 1.25], ref_small)
    assert s["identity"][0] < 0.45 < s["identity"][4]  # another person
    assert s["occlusion"][1] == 1 and s["face"][1] == 0  # the face is not found under the block
    assert s["mouth"][2] < s["mouth"][4]  # open mouth where nobody speaks
    assert s["sharpness"][3] < s["sharpness"][4]  # the blurred face


def test_sharpness_is_measured_inside_the_face_box(planted):
    """Only the face blurred, the background sharp: the face-box sharpness drops, the whole frame's barely."""
    from avatar_cascade.media.image_metrics import sharpness
    from avatar_cascade.stages.keyframes.extractor import _scorer

    bp, aligned, ref = planted
    img = rm.astronaut(SIZE)
    soft = img.copy()
    box = (slice(35, 90), slice(85, 135))  # the face at 256 px
    soft[box] = rm.blurred(img, 1.2)[box]
    ref_small = (ref * 255).round().to(torch.uint8)
    scorer = _scorer(aligned, ref_small, bp, KeyframeSettings(), cpu_runtime(), None)
    cand = torch.from_numpy(np.stack([img, soft]))
    s = scorer.score(cand, cand, cand, [1.0, 1.0], ref_small)
    whole = sharpness(cand)
    assert s["occlusion"][1] < 1  # the softened face is still found
    assert s["sharpness"][1] < 0.8 * s["sharpness"][0], s["sharpness"]
    assert whole[1] > 0.95 * whole[0]  # the frame as a whole hardly changes


def test_without_detectors_the_proxies_are_used_and_labelled(planted):
    kf = extract(planted, face_detectors=False)
    s = kf.scores[1]
    assert s["identity_method"] == "proxy" and s["methods"]["face"] == "proxy_skin_box"
    assert "occlusion" not in s


def test_landmarks_68_warn_in_graph_and_change_the_key(planted):
    bp, aligned, ref = planted
    rt = cpu_runtime()
    kf = extract_keyframes(bp, aligned, ref, KeyframeSettings(width=SIZE, height=SIZE, landmarks_68=True), rt)
    assert kf.scores[1]["methods"]["mouth"].startswith("landmarks_68+")
    assert any("commercial" in w for w in rt.warnings)
    assert kf.key != extract(planted).key

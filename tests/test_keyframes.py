"""Keyframe Extractor: seams and windows, scores on planted candidates, lift, contact sheet, reuse."""

from fractions import Fraction

import pytest
import torch

from avatar_cascade.artefacts.blueprint import Blueprint
from avatar_cascade.artefacts.keyframes import Keyframes
from avatar_cascade.core.errors import InputError
from avatar_cascade.sampling.settings import SamplerSettings
from avatar_cascade.stages.keyframes.extractor import extract_keyframes
from avatar_cascade.stages.keyframes.scores import AudioEnergy, diversity_score, face_score, identity_proxy, sharpness
from avatar_cascade.stages.keyframes.settings import KeyframeSettings, LiftSettings
from tests.helpers import aligned_tone
from tests.helpers import cpu_runtime as _runtime


def extract(bp, aligned, reference, width, height, rt, *, lift=None, **kw):
    """``extract_keyframes`` with ``KeyframeSettings(width, height, lift, **settings)``; the models,
    storyline, CLIP vision and work folder in ``kw`` go to the call."""
    inputs = {k: kw.pop(k) for k in ("models", "clip_vision", "storyline", "work_dir") if k in kw}
    settings = KeyframeSettings(width=width, height=height, **kw, **({"lift": lift} if lift else {}))
    return extract_keyframes(bp, aligned, reference, settings, rt, **inputs)


SR = 16000
SIZE = 64


def face(
    skin=(224, 172, 140), bg=(70, 100, 150), hair=(60, 40, 25), dx=0, dy=0, width=15, mouth=2, hand=False
) -> torch.Tensor:
    """A synthetic portrait drawn with PIL: ``[SIZE, SIZE, 3]`` uint8."""
    import numpy as np
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (SIZE, SIZE), bg)
    d = ImageDraw.Draw(img)
    cx, cy = SIZE // 2 + dx, 29 + dy
    d.rectangle([cx - 22, 52 + dy, cx + 22, SIZE], fill=(40, 40, 90))  # shoulders
    d.ellipse([cx - width - 3, cy - 24, cx + width + 3, cy + 6], fill=hair)
    d.ellipse([cx - width, cy - 18, cx + width, cy + 19], fill=skin)
    for ex in (-6, 6):
        d.ellipse([cx + ex - 3, cy - 6, cx + ex + 3, cy - 2], fill=(250, 250, 250))
        d.ellipse([cx + ex - 1, cy - 5, cx + ex + 1, cy - 3], fill=(20, 20, 20))
    d.line([cx, cy - 2, cx - 1, cy + 4], fill=(170, 110, 90), width=1)
    d.ellipse([cx - 5, cy + 8, cx + 5, cy + 8 + mouth], fill=(150, 40, 50))
    if hand:
        d.rectangle([cx - 12, cy - 10, cx + 12, cy + 16], fill=(90, 160, 90))
    return torch.from_numpy(np.asarray(img).copy())


def blurred(x: torch.Tensor, radius: float = 2.0) -> torch.Tensor:
    import numpy as np
    from PIL import Image, ImageFilter

    return torch.from_numpy(np.asarray(Image.fromarray(x.numpy()).filter(ImageFilter.GaussianBlur(radius))).copy())


def shifted(x: torch.Tensor) -> torch.Tensor:
    return (x.int() + torch.tensor([45, -35, 30])).clamp(0, 255).to(torch.uint8)


OTHER = dict(skin=(120, 80, 60), bg=(150, 150, 60), hair=(230, 220, 200), dx=5, width=11)


@pytest.fixture(scope="module")
def reference_image():
    return face().float() / 255


@pytest.fixture(scope="module")
def planted():
    """2 s at 16 fps (seams at 0, 1, 2 s); blueprint at 8 fps; seam 1's candidates are frames 6..10."""
    good = face(dx=1, mouth=3)
    frames = torch.stack([face(dy=0)] * 17)
    frames[6] = good  # sharp, on identity, but the farthest candidate from the seam
    frames[7] = blurred(face())
    frames[8] = face(**OTHER)  # a different person, right at the seam
    frames[9] = shifted(face())
    frames[10] = face(hand=True)  # the face hidden by a hand
    return Blueprint.from_frames(frames, 8), aligned_tone(2.0)


def test_scores_rank_the_planted_defects(reference_image):
    ref = face()
    good, blur, other, colour, hand = (
        face(dx=1, mouth=3),
        blurred(face()),
        face(**OTHER),
        shifted(face()),
        face(hand=True),
    )
    cands = torch.stack([good, blur, other, colour, hand])
    sh = sharpness(cands)
    assert sh[0] > sh[1]
    ident = identity_proxy(cands, ref)
    assert ident[0] > ident[2] and ident[0] > ident[3]
    fa = face_score(cands, ref)
    assert fa[0] > fa[4] and fa[0] > fa[1]
    div = diversity_score(torch.stack([ref, other]), ref)
    assert div[0] == 0 and div[1] > 0.5


def test_the_sharp_on_identity_frame_wins(planted, reference_image):
    bp, aligned = planted
    kf = extract(bp, aligned, reference_image, SIZE, SIZE, _runtime(), search_radius_s=0.25)
    s = kf.scores[1]
    assert s["window"] == [6, 10] and [c[0] for c in s["candidates"]] == [6, 7, 8, 9, 10]
    assert kf.source_indices[1] == 6, s["candidates"]
    totals = dict((i, t) for i, t in s["candidates"])
    assert all(totals[6] > totals[i] for i in (7, 8, 9, 10))
    for name in ("identity", "sharpness", "face", "mouth", "colour", "centre", "diversity", "total"):
        assert 0.0 <= s[name] <= 1.0
    assert s["identity_method"] == "proxy" and kf.weights["identity"] == 1.0


def test_weights_are_configurable(planted, reference_image):
    bp, aligned = planted
    only_centre = {k: 0.0 for k in ("identity", "sharpness", "face", "mouth", "colour", "diversity")}
    kf = extract(bp, aligned, reference_image, SIZE, SIZE, _runtime(), weights=only_centre)
    assert kf.source_indices[1] == 8  # the frame at the seam, whatever it shows
    with pytest.raises(InputError, match="weights"):
        extract(bp, aligned, reference_image, SIZE, SIZE, _runtime(), weights={"beauty": 1.0})


def test_one_keyframe_per_seam_inside_its_window():
    aligned = aligned_tone(20.0, fps=25, clip_frames=33, snap_seams_frames=8)
    tl = aligned.timeline
    g = torch.Generator().manual_seed(0)
    bp_fps = Fraction(8)
    n = int(Fraction(tl.padded_frames - 1) / tl.fps * bp_fps) + 1
    bp = Blueprint.from_frames(torch.randint(0, 256, (n, 32, 32, 3), generator=g, dtype=torch.uint8), bp_fps)
    radius = 0.5
    kf = extract(bp, aligned, torch.rand(40, 40, 3), 48, 32, _runtime(), search_radius_s=radius, framing="crop")
    assert len(kf.images) == len(tl.clips) + 1 == len(kf.source_indices) == len(kf.scores)
    assert kf.images.shape[1:] == (32, 48, 3) and kf.frame_indices == tl.seams
    assert kf.source_indices[0] is None and kf.scores[0]["source"] == "reference"
    times = [Fraction(f) / tl.fps for f in tl.seams]
    for k in range(1, len(tl.seams)):
        src = kf.source_indices[k]
        lo, hi = kf.scores[k]["window"]
        assert lo <= src <= hi
        t = Fraction(src) / bp_fps
        assert abs(t - times[k]) <= max(Fraction(radius), Fraction(1, 2) / bp_fps)
        assert times[k - 1] < t and (k + 1 == len(times) or t < times[k + 1])


def test_mouth_prefers_quiet_moments():
    wave = torch.zeros(1, 2 * SR)
    wave[0, SR:] = 0.5 * torch.sin(2 * torch.pi * 200 * torch.arange(SR) / SR)
    energy = AudioEnergy(wave, SR)
    quiet, loud = energy.score([0.5, 1.5]).tolist()
    assert quiet == pytest.approx(1.0) and loud < 0.2


def test_contact_sheet_and_reuse_from_the_work_folder(planted, reference_image, tmp_path):
    from PIL import Image

    bp, aligned = planted
    kf = extract(bp, aligned, reference_image, SIZE, SIZE, _runtime(), work_dir=tmp_path)
    sheet = tmp_path / "keyframes" / "contact_sheet.png"
    assert sheet.is_file() and Image.open(sheet).size[0] >= 3 * SIZE
    assert len(list((tmp_path / "keyframes").glob("keyframe_*.png"))) == 3
    again = extract(bp, aligned, reference_image, SIZE, SIZE, _runtime(), work_dir=tmp_path)
    assert again.reused and not kf.reused
    assert again.key == kf.key and torch.equal(again.images, kf.images) and again.scores == kf.scores
    loaded = Keyframes.load(tmp_path)
    assert loaded.source_indices == kf.source_indices
    # a changed input (here the colour matching) is recomputed
    other = extract(bp, aligned, reference_image, SIZE, SIZE, _runtime(), colour_match=0.0, work_dir=tmp_path)
    assert other.key != kf.key


# ``wan_models`` (the tiny demo DiT, VAE, text encoder) and ``counter`` (DiT forwards) come from conftest.py.


def test_lift_refines_deterministically_and_is_reused_without_a_dit_forward(
    planted, reference_image, wan_models, counter, tmp_path
):
    from avatar_cascade.stages.director.rules import rule_based_storyline

    bp, aligned = planted
    story = rule_based_storyline("talk", aligned.timeline, None)

    def run(denoise, seed=0, work_dir=None):
        sampler = SamplerSettings(steps=4, guidance=1.0, shift=3.0)
        lift = LiftSettings(denoise=denoise, sampler=sampler, seed=seed, batch_size=2)
        return extract(
            bp, aligned, reference_image, SIZE, SIZE, _runtime(),
            lift=lift, storyline=story, models=wan_models, work_dir=work_dir,
        )  # fmt: skip

    plain = run(0.0)
    assert counter.take() == 0
    a = run(0.5, work_dir=tmp_path)
    assert counter.take() == 2 * 1 and not a.reused  # 2 of 4 steps, one batch of the 2 seams, no CFG
    b = run(0.5)
    c = run(0.5, seed=1)
    counter.take()
    reused = run(0.5, work_dir=tmp_path)
    assert counter.take() == 0 and reused.reused
    assert torch.equal(a.images[0], plain.images[0])  # seam 0 stays the reference
    assert (a.images[1:].float() - plain.images[1:].float()).abs().mean() > 1.0
    assert torch.equal(a.images, b.images) and not torch.equal(a.images, c.images)
    assert torch.equal(reused.images, a.images) and all(s["lifted"] for s in a.scores[1:])
    # no DiT connected: not lifted, and the artist is told (not an error: the lift is on by default)
    rt = _runtime()
    unlifted = extract(bp, aligned, reference_image, SIZE, SIZE, rt, lift=LiftSettings(denoise=0.5))
    assert not any(s["lifted"] for s in unlifted.scores[1:]) and any("not lifted" in w for w in rt.warnings)


def test_clip_vision_identity_prefers_the_reference_person(reference_image, wan_models, tmp_path):
    import dataclasses
    import json

    from safetensors.torch import save_file
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from avatar_cascade.models.clip_vision import CONFIG_DIR, load_clip_vision

    cfg = json.loads((CONFIG_DIR / "avatar-cascade-tiny-clip-vision" / "config.json").read_text())
    torch.manual_seed(0)
    model = CLIPVisionModelWithProjection(CLIPVisionConfig(**{k: v for k, v in cfg.items() if not k.startswith("_")}))
    path = tmp_path / "tiny_clip_vision.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items() if "position_ids" not in k}, str(path))
    clip = load_clip_vision(path)

    frames = torch.stack([face()] * 17)
    frames[7] = face()  # the reference person, off the seam
    frames[8] = face(**OTHER)
    frames[9] = face(**OTHER)
    bp = Blueprint.from_frames(frames, 8)
    weights = {
        "identity": 1.0,
        "centre": 0.1,
        **{k: 0.0 for k in ("sharpness", "face", "mouth", "colour", "diversity")},
    }
    off = LiftSettings(denoise=0.0)  # no lift: the keys must depend on the identity encoder alone
    kf = extract(bp, aligned_tone(2.0), reference_image, SIZE, SIZE, _runtime(), search_radius_s=0.125,
                           weights=weights, clip_vision=clip, lift=off)  # fmt: skip
    s = kf.scores[1]
    assert s["identity_method"] == "clip_vision" and kf.source_indices[1] == 7
    assert s["identity"] == pytest.approx(1.0, abs=1e-4)
    # without clip_vision, the models' image encoder scores identity: the same keyframes, the same key
    bundled = extract(bp, aligned_tone(2.0), reference_image, SIZE, SIZE, _runtime(), search_radius_s=0.125,
                      weights=weights, models=dataclasses.replace(wan_models, image_encoder=clip),
                      lift=off)  # fmt: skip
    assert bundled.key == kf.key and bundled.scores[1]["identity_method"] == "clip_vision"
    assert bundled.source_indices == kf.source_indices


def test_node_weights_widget_is_validated():
    from nodes.blueprint import AvatarCascadeKeyframeExtractor

    assert AvatarCascadeKeyframeExtractor.VALIDATE_INPUTS(width=64, height=64, weights="") is True
    assert AvatarCascadeKeyframeExtractor.VALIDATE_INPUTS(weights='{"identity": 2}') is True
    msg = AvatarCascadeKeyframeExtractor.VALIDATE_INPUTS(weights='{"identity": -1}')
    assert isinstance(msg, str) and "weights" in msg
    msg = AvatarCascadeKeyframeExtractor.VALIDATE_INPUTS(weights="identity=1")
    assert isinstance(msg, str) and "JSON" in msg

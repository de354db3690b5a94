"""Real detectors on real media: Silero VAD (ported network, the package's weights), dlib faces,
landmarks and embeddings, and the aligner's VAD seams in planted pauses of real speech."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from avatar_cascade.models.detectors import vad
from tests import real_media as rm
from tests.helpers import cpu_runtime


def align(wave, sr, detector, **kw):
    from avatar_cascade.media import AudioTrack
    from avatar_cascade.stages.aligner.aligner import align_audio
    from avatar_cascade.stages.aligner.settings import AlignerSettings

    settings = AlignerSettings(
        fps=25, clip_frames=65, snap_seams_frames=16, max_clip_frames=97, seam_detector=detector, **kw
    )
    return align_audio(AudioTrack(wave, sr), settings, cpu_runtime())


# ----------------------------------------------------------------------------------------------- VAD


def _torchscript_reference():
    """The package's TorchScript model and its weights under the port's names (only the tests open this file,
    as a reference: the pack never runs TorchScript)."""
    ref = torch.jit.load(str(vad.silero_weights().parent / "silero_vad.jit"))
    names = {"stft.forward_basis_buffer": "stft_conv.weight", "decoder.decoder.2.weight": "final_conv.weight"}
    names["decoder.decoder.2.bias"] = "final_conv.bias"
    for t in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
        names[f"decoder.rnn.{t}"] = f"lstm_cell.{t}"
    for i in range(4):
        for t in ("weight", "bias"):
            names[f"encoder.{i}.reparam_conv.{t}"] = f"conv{i + 1}.{t}"
    state = {names[k]: v for k, v in ref._model.state_dict().items()}
    return ref, state


def _run_reference(ref, x: torch.Tensor, chunks: int) -> torch.Tensor:
    padded = torch.nn.functional.pad(x, (0, chunks * vad.CHUNK - x.numel()))
    return torch.stack([ref(c[None], vad.SAMPLE_RATE)[0, 0] for c in padded.split(vad.CHUNK)])


def test_silero_port_is_the_torchscript_network_and_loads_the_package_safetensors():
    """With the TorchScript file's own weights the torch port reproduces its probabilities chunk by chunk
    (same network, same context and state handling). The pack loads the package's safetensors file, strictly;
    it is an earlier training than the TorchScript file, so its probabilities differ, but its speech /
    non-speech decisions per 32 ms chunk agree on real speech."""
    rm.need_silero()
    a, b, sr = rm.speech_phrases()
    x = torch.cat([a, torch.zeros(sr // 2), b])
    ref, state = _torchscript_reference()
    port = vad.SileroVAD()
    port.load_state_dict(state, strict=True)
    same_weights = port.eval()(x)
    expected = _run_reference(ref, x, same_weights.numel())
    assert torch.allclose(same_weights, expected, atol=1e-4), (same_weights - expected).abs().max()
    model = vad.load_silero_vad()
    assert model is not None and sum(p.numel() for p in model.parameters()) == 309633
    ours = model(x)
    agree = ((ours > 0.5) == (expected > 0.5)).float().mean()
    assert agree >= 0.9, agree
    silence = slice(int(a.numel() / vad.CHUNK) + 3, int((a.numel() + sr // 2) / vad.CHUNK) - 3)
    assert ours[silence].max() < 0.35 and ours[: silence.start].max() > 0.9


def test_speech_regions_cover_phrases_and_leave_the_planted_pauses():
    rm.need_silero()
    wave, sr, pauses = rm.speech_with_pauses(pauses=3)
    act = vad.speech_activity(wave[0], sr)
    assert act.method == "silero_vad"
    for a, b in pauses:  # nobody speaks in a planted pause, and speech resumes after it
        assert act.mean_over(a + 0.1, b - 0.1) < 0.2
        assert any(s <= b + 0.3 < e for s, e in act.regions)
        assert not any(s < b - 0.15 and e > a + 0.15 for s, e in act.regions)


def test_energy_fallback_is_labelled_and_unknown_methods_are_refused():
    from avatar_cascade.core.errors import InputError

    wave, sr, pauses = rm.speech_with_pauses(pauses=2)
    act = vad.speech_activity(wave[0], sr, "energy")
    assert act.method == "energy"
    assert act.mean_over(pauses[0][0] + 0.1, pauses[0][1] - 0.1) < 0.05
    with pytest.raises(InputError, match="vad"):
        vad.speech_activity(wave[0], sr, "webrtc")


def test_vad_seams_land_in_the_planted_pauses_of_real_speech(tmp_path):
    rm.need_silero()
    wave, sr, pauses = rm.speech_with_pauses(pauses=4)
    tl = align(wave, sr, "silero_vad").timeline
    assert tl.meta["seam_detector"] == "silero_vad" and tl.meta["speech"]["method"] == "silero_vad"
    interior = [s / 25 for s in tl.seams[1:-1]]
    assert len(interior) == len(pauses)
    for t, (a, b) in zip(interior, pauses):
        assert a <= t and t + 1 / 25 <= b, (interior, pauses)
    assert max(tl.meta["seam_speech"]) < 0.2


def test_vad_finds_the_pauses_where_loudness_cuts_soft_words():
    """Each pause is room noise louder than the soft phrase before it: loudness puts the seams into the soft
    words, Silero VAD into the pauses."""
    rm.need_silero()
    wave, sr, pauses = rm.speech_with_pauses(pauses=4, soft_gain=0.1, noise=0.2)

    def in_pause(tl):
        return [any(a <= s / 25 <= b for a, b in pauses) for s in tl.seams[1:-1]]

    assert all(in_pause(align(wave, sr, "silero_vad").timeline))
    assert not any(in_pause(align(wave, sr, "loudness").timeline))


def test_timeline_picture_shows_speech_and_pauses(tmp_path):
    rm.need_silero()
    from avatar_cascade.media.timeline_plot import PAUSE, SPEECH, render_timeline

    wave, sr, pauses = rm.speech_with_pauses(pauses=2)
    aligned = align(wave, sr, "auto")
    img = np.asarray(render_timeline(aligned, width=800).convert("RGB"))
    tl = aligned.timeline
    pad = max(2, int(8 * 0.5) + 2)
    plot_w = 800 - 2 * pad

    def column(t):
        return pad + int(round(t * 25 / tl.padded_frames * plot_w))

    rows_speech = [
        (img[:, column(0.5)] == SPEECH).all(1).sum(),
        (img[:, column(pauses[0][0] + 0.3)] == PAUSE).all(1).sum(),
    ]
    assert rows_speech[0] >= 3 and rows_speech[1] >= 3, rows_speech
    plain = np.asarray(render_timeline(align(wave, sr, "loudness"), width=800).convert("RGB"))
    assert not (plain == SPEECH).all(2).any()


def test_silero_is_required_when_asked_for(monkeypatch):
    from avatar_cascade.core.errors import InputError

    monkeypatch.setattr(vad, "load_silero_vad", lambda: None)
    wave, sr, _ = rm.speech_with_pauses(pauses=1)
    with pytest.raises(InputError, match="silero-vad"):
        align(wave, sr, "silero_vad")
    tl = align(wave, sr, "auto").timeline  # auto falls back to loudness, labelled
    assert tl.meta["seam_detector"] == "loudness" and "speech" not in tl.meta


# --------------------------------------------------------------------------------------------- faces


@pytest.fixture(scope="module")
def faces():
    rm.need_face_models()
    from avatar_cascade.models.detectors.face import face_models

    return face_models()


def test_face_box_and_landmarks_are_found_on_a_real_photo(faces):
    img = rm.astronaut()
    found = faces.detect(img)
    assert len(found) == 1
    f = found[0]
    left, top, right, bottom = f.box
    assert 150 <= left < 200 and 60 <= top < 110 and 240 < right <= 290 and 150 < bottom <= 200, f.box
    assert f.landmarks.shape == (5, 2)
    inside = (f.landmarks[:, 0] > left) & (f.landmarks[:, 0] < right) & (f.landmarks[:, 1] > top)
    assert inside.all()
    eyes, nose = f.landmarks[:4, 1].mean(), f.landmarks[4, 1]
    assert nose > eyes + 10  # the nose is below the eyes
    for name in ("coffee", "chelsea"):  # a cup and a cat: no human face
        assert faces.detect(getattr(rm.skimage_data(), name)()) == []


def test_68_point_landmarks_are_optional_and_labelled():
    rm.need_face_models()
    from avatar_cascade.models.detectors.face import LANDMARKS_68_NOTICE, face_models

    assert face_models().shape68 is None and face_models().landmark_method == "dlib_5"
    f68 = face_models(landmarks_68=True)
    pts = f68.detect(rm.astronaut())[0].landmarks
    assert pts.shape == (68, 2) and f68.landmark_method == "dlib_68"
    mouth = pts[48:68].mean(0)
    assert abs(mouth[0] - rm.MOUTH[0]) < 10 and abs(mouth[1] - rm.MOUTH[1]) < 10
    assert "commercial" in LANDMARKS_68_NOTICE


def test_identity_score_separates_the_same_person_from_other_people():
    rm.need_face_models()
    from avatar_cascade.models.detectors.measures import FaceJudge

    ref = rm.astronaut()
    judge = FaceJudge(torch.from_numpy(ref))
    assert judge.methods["identity"] == "face_embedding"
    same = [rm.open_mouth(ref, 12), ref[:, ::-1].copy(), rm.blurred(ref, 1.5), (ref * 0.7).astype(np.uint8)]
    others = [rm.face_on_background(f) for f in rm.other_people(8)]
    s_same = judge.observe(torch.from_numpy(np.stack(same)))["identity"]
    o = judge.observe(torch.from_numpy(np.stack(others)))
    found = torch.tensor([f is not None for f in o["faces"]])
    assert found.sum() >= 5
    s_other = o["identity"][found]
    assert s_same.min() > 0.6 and s_other.max() < 0.45, (s_same, s_other)
    assert s_same.min() - s_other.max() > 0.2


def test_mouth_openness_follows_a_mouth_drawn_open_on_a_real_face():
    rm.need_face_models()
    from avatar_cascade.models.detectors.measures import FaceJudge

    ref = rm.astronaut()
    frames = torch.from_numpy(np.stack([ref, rm.open_mouth(ref, 6), rm.open_mouth(ref, 12), rm.open_mouth(ref, 20)]))
    for l68, method in ((False, "dark_fraction_5pt"), (True, "landmarks_68")):
        judge = FaceJudge(torch.from_numpy(ref), landmarks_68=l68)
        assert judge.methods["mouth"] == method
        m = judge.observe(frames, embed=False)["mouth"]
        # wider drawn mouths read as more open, and the widest is more open than her own smile (teeth showing)
        assert m[3] >= m[2] > m[1] and m[3] - m[0] > 0.1, (method, m)


def test_occlusion_and_a_lost_face_are_measured():
    rm.need_face_models()
    from avatar_cascade.models.detectors.measures import FaceJudge

    ref = rm.astronaut()
    judge = FaceJudge(torch.from_numpy(ref))
    o = judge.observe(torch.from_numpy(np.stack([ref, rm.occluded(ref), rm.blurred(ref, 4)])))
    assert o["occlusion"][0] == 0 and o["face"][0] == pytest.approx(1.0)
    assert o["faces"][1] is None and o["occlusion"][1] == 1 and o["identity"][1] == 0
    assert o["face"][2] < 0.5 * o["face"][0]  # a blurred face has lost its clarity


def test_a_stylised_reference_falls_back_to_labelled_proxies():
    from avatar_cascade.media import load_image, sample_image_path
    from avatar_cascade.models.detectors.measures import FaceJudge

    cartoon = (load_image(sample_image_path()) * 255).round().to(torch.uint8)
    judge = FaceJudge(cartoon)
    assert not judge.has_face
    assert judge.methods == {"identity": "proxy", "face": "proxy", "mouth": "proxy", "occlusion": "proxy"}
    assert FaceJudge(cartoon, use_detectors=False).models is None

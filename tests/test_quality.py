"""Quality report on a real-face test clip and on the demo output: JSON + PNG, each measure doing its job."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from avatar_cascade.stages.quality.report import quality_report, write_report
from avatar_cascade.stages.quality.settings import QualitySettings
from tests import real_media as rm
from tests.helpers import cpu_runtime

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def synced(tmp_path_factory):
    rm.need_face_models()
    rm.need_silero()
    return rm.talking_clip(tmp_path_factory.mktemp("q") / "synced.mp4", cut_at_s=4.0)


def report_of(clip, seams_s=None, **kw):
    path, *_, ref = clip
    return quality_report(path, ref, QualitySettings(**kw), cpu_runtime(), seams_s=seams_s)


def test_report_on_a_real_face_clip_writes_json_and_png_with_detector_methods(synced, tmp_path):
    rep = report_of(synced, seams_s=[2.0, 4.0])
    js, png = write_report(rep, tmp_path / "out")
    data = json.loads(js.read_text())
    assert data["methods"]["identity"] == "face_embedding" and data["methods"]["mouth"] == "dark_fraction_5pt"
    assert data["methods"]["speech"] == "silero_vad" and "_series" not in data
    assert data["identity"]["face_found_fraction"] == 1.0
    assert min(v for _, v in data["identity"]["per_second"]) > 0.6
    from PIL import Image

    img = Image.open(png)
    assert img.size[0] == 1000 and img.size[1] > 500


def test_lipsync_proxy_follows_the_mouth_and_finds_its_lag(synced, tmp_path):
    rep = report_of(synced)
    assert rep["lipsync_proxy"]["correlation"] > 0.5, rep["lipsync_proxy"]
    late = report_of(rm.talking_clip(tmp_path / "late.mp4", lag_frames=4))["lipsync_proxy"]
    assert late["best_lag_frames"] in (3, 4, 5) and late["best_correlation"] > late["correlation"] + 0.1, late
    frozen = report_of(rm.talking_clip(tmp_path / "mute.mp4", lag_frames=10_000))["lipsync_proxy"]
    assert frozen["correlation"] is None or frozen["correlation"] < 0.2  # a mouth that never moves


def test_seam_ratio_flags_the_hard_cut_not_the_smooth_boundary(synced):
    seams = report_of(synced, seams_s=[2.0, 4.0])["seams"]
    smooth, cut = seams["boundaries"]
    assert cut["frame"] == 100 and cut["ratio"] > 5 * max(smooth["ratio"], 1.0), seams
    assert seams["max_ratio"] == cut["ratio"] and seams["largest_jumps"][0]["frame"] == 100


def test_identity_drift_and_colour_drift_are_measured(tmp_path):
    rm.need_face_models()
    clip = rm.talking_clip(tmp_path / "drift.mp4", other_from_s=4.0, tint_from_s=2.0)
    rep = report_of(clip)
    per = dict((round(t), v) for t, v in rep["identity"]["per_second"])
    assert per[1] > 0.6 and per[5] < 0.45, per
    assert rep["identity"]["drift_per_minute"] < -2
    de = rep["colour"]["delta_e_per_second"]
    assert de[0] < 1.5 and de[3] > 5 * max(de[0], 0.5), de


def test_without_detectors_the_report_uses_labelled_proxies(synced):
    rep = report_of(synced, face_detectors=False, vad="energy")
    assert rep["methods"] == {
        **rep["methods"],
        "identity": "proxy",
        "mouth": "proxy_lower_face_motion",
        "speech": "energy",
    }
    assert rep["identity"]["mean"] > 0.5


@pytest.mark.slow
def test_quality_command_runs_on_the_demo_output(tmp_path):
    """``demo`` then ``quality`` on its mp4: the seams come from the demo's timeline.json automatically."""
    env = {**__import__("os").environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    run = [sys.executable, "-m", "avatar_cascade"]
    subprocess.run([*run, "demo", "--out", str(tmp_path / "demo.mp4")], check=True, env=env, cwd=tmp_path, timeout=900)
    ref = ROOT / "avatar_cascade" / "assets" / "sample_portrait.png"
    out = subprocess.run(
        [*run, "quality", "--video", str(tmp_path / "demo.mp4"), "--reference", str(ref), "--out", str(tmp_path / "q")],
        check=True, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    data = json.loads((tmp_path / "q" / "quality.json").read_text())
    timeline = json.loads((tmp_path / "demo_work" / "timeline.json").read_text())
    assert data["seams"]["source"] == "timeline" and len(data["seams"]["boundaries"]) == len(timeline["clips"]) - 1
    assert data["methods"]["identity"] == "proxy"  # the demo portrait is a drawing: no face for dlib
    assert (tmp_path / "q" / "quality.png").stat().st_size > 1000 and "wrote" in out.stdout
    assert np.isfinite(data["colour"]["mean"])


def test_quality_command_errors_are_one_line(tmp_path):
    from avatar_cascade.cli import main

    assert main(["quality", "--video", str(tmp_path / "none.mp4"), "--reference", "x.png", "--out", str(tmp_path)]) == 2


def test_node_writes_the_report_and_shows_the_plot(synced, tmp_path, monkeypatch):
    from nodes.quality import AvatarCascadeQualityReport, quality_widgets

    monkeypatch.setenv("AVATAR_CASCADE_OUTPUT", str(tmp_path))
    path, wave, sr, ref = synced
    node = AvatarCascadeQualityReport()
    widgets = {name: leaf.value for name, leaf in quality_widgets().leaves.items()}
    assert AvatarCascadeQualityReport.VALIDATE_INPUTS(**widgets) is True
    assert AvatarCascadeQualityReport.VALIDATE_INPUTS(vad="webrtc") is not True
    audio = {"waveform": wave[None], "sample_rate": sr}
    out = node.report(str(path), ref[None], "avatar_cascade/quality", audio=audio, **widgets)
    text, plot = out["result"]
    shown = out["ui"]["images"][0]
    png = tmp_path / shown["subfolder"] / shown["filename"]
    assert png.is_file() and png.with_suffix(".json").is_file() and shown["type"] == "output"
    assert plot.shape[0] == 1 and plot.shape[-1] == 3 and 0 <= float(plot.min()) and float(plot.max()) <= 1
    assert json.loads(text)["methods"]["identity"] == "face_embedding"


def test_timeline_seams_are_the_interior_clip_boundaries(tmp_path):
    from avatar_cascade.stages.quality.run import default_timeline, seams_from_timeline
    from tests.helpers import aligned_tone

    tl = aligned_tone(3.0).timeline  # 16 fps, clips of 17 frames: boundaries at 1 s and 2 s
    (tmp_path / "v_work").mkdir()
    (tmp_path / "v_work" / "timeline.json").write_text(tl.to_json())
    assert default_timeline(tmp_path / "v.mp4") == tmp_path / "v_work" / "timeline.json"
    assert seams_from_timeline(tmp_path / "v_work" / "timeline.json") == [1.0, 2.0]
    from avatar_cascade.core.errors import InputError

    with pytest.raises(InputError, match="--timeline"):
        seams_from_timeline(tmp_path / "missing.json")

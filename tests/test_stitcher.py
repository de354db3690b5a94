"""Clip stitcher: seams kept once, exact frame/sample counts, streaming, clean interrupts."""

from __future__ import annotations

import dataclasses
import weakref
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from avatar_cascade.artefacts.timeline import plan_timeline
from avatar_cascade.core.errors import InputError, Interrupted
from avatar_cascade.core.runtime import Runtime
from avatar_cascade.media import probe_media
from avatar_cascade.stages.stitcher.settings import StitcherSettings
from avatar_cascade.stages.stitcher.stitcher import StitchResult, stitch_clips
from tests.helpers import cpu_runtime as quiet_runtime
from tests.helpers import tone_track as speech

SR = 16000
SIZE = 64
BITS = 8  # frame index encoded as 8 vertical black/white stripes (survives H.264)


def stitch(clips, timeline, audio, out, rt, *, metadata=None, keyframes=None, collect_frames=0, **kw):
    """``stitch_clips`` with ``StitcherSettings(**kw)``, colour matching off unless ``colour_match`` is given."""
    settings = StitcherSettings(**{"colour_match": 0.0, **kw})
    return stitch_clips(
        clips, timeline, audio, out, settings, rt, metadata=metadata, keyframes=keyframes, collect_frames=collect_frames
    )


def marked_frame(index: int) -> np.ndarray:
    frame = np.zeros((SIZE, SIZE, 3), np.uint8)
    width = SIZE // BITS
    for b in range(BITS):
        if index >> b & 1:
            frame[:, b * width : (b + 1) * width] = 255
    return frame


def read_marks(path) -> list[int]:
    width = SIZE // BITS
    marks = []
    with av.open(str(path)) as c:
        for f in c.decode(video=0):
            img = f.to_ndarray(format="rgb24").astype(np.float32)
            bits = [img[8:-8, b * width + 2 : (b + 1) * width - 2].mean() > 127 for b in range(BITS)]
            marks.append(sum(1 << b for b, on in enumerate(bits) if on))
    return marks


def clip_frames(timeline, k: int) -> np.ndarray:
    sub = timeline.clips[k]
    return np.stack([marked_frame(i) for i in range(sub.frame_start, sub.frame_end + 1)])


# ``timeline`` (1.23 s at 25 fps -> 31 frames; clips of 9 frames: 0-8, 8-16, 16-24, 24-32, 2 frames past the
# audio end) comes from conftest.py; speech(n) is n samples of a 220 Hz tone.


def test_stitch_dedups_seams_and_trims(tmp_path, timeline):
    updates = []

    class Recorder:
        def __init__(self, total, desc):
            updates.append((total, desc))

        def update(self, n=1, preview=None):
            updates.append(n)

        def close(self):
            updates.append("closed")

    runtime = quiet_runtime(progress_factory=Recorder)
    clips = (torch.from_numpy(clip_frames(timeline, k)) for k in range(len(timeline.clips)))
    out = tmp_path / "avatar.mp4"
    result = stitch(clips, timeline, speech(timeline.num_samples), out, runtime, metadata={"comment": "wf"})
    assert isinstance(result, StitchResult)
    assert (result.path, result.num_frames, result.width, result.height) == (out, 31, SIZE, SIZE)
    assert result.fps == Fraction(25) and result.audio_samples == timeline.num_samples
    assert read_marks(out) == list(range(timeline.num_frames))  # no duplicated seam, none missing, in order
    info = probe_media(out)
    assert info["video"]["frames"] == timeline.num_frames and info["video"]["fps"] == timeline.fps
    assert info["audio"]["samples"] == timeline.num_samples and info["audio"]["sample_rate"] == SR
    assert (info["video_frames"], info["fps"], info["audio_samples"]) == (31, Fraction(25), timeline.num_samples)
    assert info["metadata"]["comment"] == "wf"
    assert updates == [(4, "stitch"), 1, 1, 1, 1, "closed"]
    assert [p.name for p in tmp_path.iterdir()] == ["avatar.mp4"]


def test_stitch_holds_one_clip_at_a_time(tmp_path, timeline):
    alive = []

    def clips():
        for k in range(len(timeline.clips)):
            assert all(ref() is None for ref in alive), f"clip {k - 1} still held when clip {k} is made"
            arr = clip_frames(timeline, k)
            alive.append(weakref.ref(arr))
            yield arr
            del arr

    stitch(clips(), timeline, speech(timeline.num_samples), tmp_path / "v.mp4", quiet_runtime())
    assert len(alive) == 4


def test_stitch_resamples_matching_audio(tmp_path, timeline):
    audio_48k = speech(timeline.num_samples * 3, sr=48000)  # same duration at another rate
    clips = (clip_frames(timeline, k) for k in range(len(timeline.clips)))
    result = stitch(clips, timeline, audio_48k, tmp_path / "v.mp4", quiet_runtime())
    info = probe_media(result.path)
    assert info["audio"]["sample_rate"] == SR and info["audio"]["samples"] == timeline.num_samples


def test_interrupt_leaves_no_file(tmp_path, timeline):
    calls = []
    made = []

    def interrupt_check():
        calls.append(1)
        if len(calls) == 3:  # before clip 2
            raise Interrupted("stop")

    def clips():
        for k in range(len(timeline.clips)):
            made.append(k)
            yield clip_frames(timeline, k)

    out = tmp_path / "v.mp4"
    with pytest.raises(Interrupted):
        stitch(clips(), timeline, speech(timeline.num_samples), out, quiet_runtime(interrupt_check=interrupt_check))
    assert made == [0, 1]  # clip 2 was never requested
    assert list(tmp_path.iterdir()) == []


def test_interrupt_keeps_existing_file(tmp_path, timeline):
    out = tmp_path / "v.mp4"
    out.write_bytes(b"previous render")

    def boom():
        raise KeyboardInterrupt

    clips = (clip_frames(timeline, k) for k in range(len(timeline.clips)))
    with pytest.raises(KeyboardInterrupt):
        stitch(clips, timeline, speech(timeline.num_samples), out, quiet_runtime(interrupt_check=boom))
    assert out.read_bytes() == b"previous render" and [p.name for p in tmp_path.iterdir()] == ["v.mp4"]


def _bad_clips(timeline, k_bad, bad):
    for k in range(len(timeline.clips)):
        yield bad if k == k_bad else clip_frames(timeline, k)


@pytest.mark.parametrize(
    ("k_bad", "make_bad", "message"),
    [
        (1, lambda tl: clip_frames(tl, 1)[:-1], r"clips\[1\].*has 9 frames"),
        (2, lambda tl: np.zeros((9, 32, 32, 3), np.uint8), r"differs from the first clip's size"),
        (0, lambda tl: clip_frames(tl, 0).astype(np.float32), r"uint8"),
    ],
    ids=["short-clip", "other-size", "float-frames"],
)
def test_bad_clips_refused(tmp_path, timeline, k_bad, make_bad, message):
    clips = _bad_clips(timeline, k_bad, make_bad(timeline))
    with pytest.raises(InputError, match=message):
        stitch(clips, timeline, speech(timeline.num_samples), tmp_path / "v.mp4", quiet_runtime())
    assert list(tmp_path.iterdir()) == []


def test_wrong_clip_count_and_audio_refused(tmp_path, timeline):
    audio = speech(timeline.num_samples)
    few = (clip_frames(timeline, k) for k in range(3))
    with pytest.raises(InputError, match="the timeline has 4 clips"):
        stitch(few, timeline, audio, tmp_path / "v.mp4", quiet_runtime())
    many = (clip_frames(timeline, k % 4) for k in range(5))
    with pytest.raises(InputError, match="more than 4 clips"):
        stitch(many, timeline, audio, tmp_path / "v.mp4", quiet_runtime())
    other = speech(timeline.num_samples * 2)
    with pytest.raises(InputError, match="does not match the timeline"):
        stitch(iter([]), timeline, other, tmp_path / "v.mp4", quiet_runtime())
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- overlap, crossfade, 2x fps


def overlap_timeline():
    # 25 frames at 25 fps, clips of 9 frames with 4 frames of blending overlap past every interior seam
    tl = plan_timeline(16000, SR, 25, clip_frames=9, overlap_frames=4)
    assert [(c.render_start, c.render_end) for c in tl.clips] == [(0, 12), (4, 20), (12, 24)]
    return tl


def rendered(timeline, k: int, fill=None) -> np.ndarray:
    """Clip ``k``'s rendered frames: index markers, or a flat grey ``fill``."""
    c = timeline.clips[k]
    if fill is not None:
        return np.full((c.render_frames, SIZE, SIZE, 3), fill, np.uint8)
    return np.stack([marked_frame(i) for i in range(c.render_start, c.render_end + 1)])


def test_overlapping_clips_are_joined_without_duplicated_or_missing_frames(tmp_path):
    tl = overlap_timeline()
    clips = (rendered(tl, k) for k in range(3))
    result = stitch(clips, tl, speech(tl.num_samples), tmp_path / "o.mp4", quiet_runtime(), crf=0)
    assert read_marks(result.path) == list(range(tl.num_frames)) and result.num_frames == 25
    info = probe_media(result.path)
    assert (info["video_frames"], info["audio_samples"]) == (25, tl.num_samples)


@pytest.mark.parametrize("crossfade", [True, False])
def test_overlap_frames_are_crossfaded_linearly_or_cut_after_the_seam(tmp_path, crossfade):
    tl = overlap_timeline()
    fills = (40, 120, 200)
    clips = (rendered(tl, k, fills[k]) for k in range(3))
    result = stitch(
        clips, tl, speech(tl.num_samples), tmp_path / "o.mp4", quiet_runtime(), crossfade=crossfade, collect_frames=100
    )
    level = result.frames[:, 0, 0, 0].tolist()
    # frames 4..12 are rendered by clips 0 and 1 (seam at 8), frames 12..20 by clips 1 and 2 (seam at 16)
    if crossfade:
        ramp = [round(40 + 80 * i / 8) for i in range(9)]
        assert level[4:13] == ramp and level[12:21] == [round(120 + 80 * i / 8) for i in range(9)]
        assert level[8] == 80  # the seam keyframe: the mean of the two clips' renderings
    else:
        assert level == [40] * 9 + [120] * 8 + [200] * 8  # cut just after each seam keyframe
    assert level[:4] == [40] * 4 and level[21:] == [200] * 4


def test_double_fps_inserts_midpoints_and_keeps_audio_exact(tmp_path, timeline):
    clips = (clip_frames(timeline, k) for k in range(len(timeline.clips)))
    result = stitch(
        clips,
        timeline,
        speech(timeline.num_samples),
        tmp_path / "d.mp4",
        quiet_runtime(),
        double_fps=True,
        collect_frames=1000,
        crf=0,
    )
    n = timeline.num_frames  # 31 frames at 25 fps for 1.23 s -> 61 at 50 fps (ceil(1.23 * 50) = 62: one held)
    assert result.fps == Fraction(50) and result.num_frames == 62 == -(-timeline.num_samples * 50 // SR)
    f = result.frames.numpy().astype(int)
    originals = np.stack([marked_frame(i) for i in range(n)]).astype(int)
    assert np.array_equal(f[0 : 2 * n : 2], originals)
    assert np.array_equal(f[1 : 2 * n - 1 : 2], (originals[:-1] + originals[1:] + 1) // 2)
    assert np.array_equal(f[-1], originals[-1])  # the held last frame
    info = probe_media(result.path)
    assert info["video_frames"] == 62 and info["fps"] == Fraction(50)
    assert info["audio_samples"] == timeline.num_samples and info["sample_rate"] == SR
    assert read_marks(result.path)[0::2][:n] == list(range(n))


def test_double_fps_frame_count_follows_the_audio(tmp_path):
    # 2N - 1 frames (every pair gets a midpoint) when the audio ends in the first half of the last frame,
    # plus the last frame held when it ends later: frames = ceil(duration * 2 fps), as the timeline rule.
    for samples, want in ((24 * 640 + 100, 49), (SR, 50)):  # 24.16 and 25 frames at 25 fps
        tl = plan_timeline(samples, SR, 25, clip_frames=9)
        assert tl.num_frames == 25
        clips = (clip_frames(tl, k) for k in range(len(tl.clips)))
        result = stitch(clips, tl, speech(samples), tmp_path / "d.mp4", quiet_runtime(), double_fps=True)
        info = probe_media(result.path)
        assert result.num_frames == want == info["video_frames"] and info["audio_samples"] == samples


def test_gapped_timeline_is_refused(tmp_path, timeline):
    bad = dataclasses.replace(timeline.clips[2], frame_start=18)  # frame 17 rendered by no clip
    tl = dataclasses.replace(timeline, clips=[*timeline.clips[:2], bad, *timeline.clips[3:]])
    with pytest.raises(InputError, match="timeline.*does not follow"):
        stitch(iter([]), tl, speech(tl.num_samples), tmp_path / "v.mp4", quiet_runtime())


# ----------------------------------------------------------------------------- codecs, collected frames


def test_h265_and_pixel_formats(tmp_path, timeline):
    clips = (clip_frames(timeline, k) for k in range(len(timeline.clips)))
    out = tmp_path / "v.mp4"
    stitch(clips, timeline, speech(timeline.num_samples), out, quiet_runtime(), codec="h265", pix_fmt="yuv444p")
    with av.open(str(out)) as c:
        v = c.streams.video[0]
        assert (v.codec_context.name, v.codec_tag, v.format.name) == ("hevc", "hvc1", "yuv444p")
    assert read_marks(out) == list(range(timeline.num_frames))
    with pytest.raises(InputError, match="codec"):
        stitch(iter([]), timeline, speech(timeline.num_samples), out, quiet_runtime(), codec="nope")
    with pytest.raises(InputError, match="pix_fmt"):
        stitch(iter([]), timeline, speech(timeline.num_samples), out, quiet_runtime(), pix_fmt="rgb48")


def test_frames_are_collected_only_up_to_the_cap(tmp_path, timeline):
    def run(cap):
        clips = (clip_frames(timeline, k) for k in range(len(timeline.clips)))
        return stitch(
            clips, timeline, speech(timeline.num_samples), tmp_path / "v.mp4", quiet_runtime(), collect_frames=cap
        ).frames

    assert run(0) is None and run(30) is None
    frames = run(31)
    assert frames.shape == (31, SIZE, SIZE, 3) and frames.dtype == torch.uint8
    assert torch.equal(frames[7], torch.from_numpy(marked_frame(7)))


# ----------------------------------------------------------------------------- colour drift


def scene(shift: float) -> torch.Tensor:
    """A colourful frame whose two patches move with ``shift`` (pixels): content changes, colours do not."""
    yy, xx = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
    img = torch.stack([40 + 2 * xx, 60 + 2 * yy, 150 - xx - yy // 2], -1).float()
    s = int(round(shift))
    img[16 + s : 36 + s, 20:40] = torch.tensor([200.0, 120.0, 90.0])
    img[6:14, 40 - s : 58 - s] = torch.tensor([40.0, 160.0, 70.0])
    return img.clamp(0, 255).to(torch.uint8)


def drift(frame: torch.Tensor, d: float) -> torch.Tensor:
    """Colour drift of amount ``d`` (0..1): saturation up, per-channel gain and a warm cast."""
    x = frame.float() / 255
    luma = (x * torch.tensor([0.299, 0.587, 0.114])).sum(-1, keepdim=True)
    x = luma + (1 + 0.5 * d) * (x - luma)
    x = x * (1 + d * torch.tensor([0.2, 0.05, -0.15])) + d * torch.tensor([0.08, 0.02, -0.06])
    return (x * 255).round().clamp(0, 255).to(torch.uint8)


def moving_clip(a: float, b: float, n: int, drifted: bool = True) -> torch.Tensor:
    """``n`` frames moving the scene from shift ``a`` to ``b``, drift peaking mid-clip (0 at both ends)."""
    frames = [scene(a + (b - a) * t / (n - 1)) for t in range(n)]
    if drifted:
        frames = [drift(f, float(np.sin(np.pi * t / (n - 1)))) for t, f in enumerate(frames)]
    return torch.stack(frames)


def test_colour_matching_removes_injected_drift():
    from avatar_cascade.stages.stitcher.colour import delta_e, match_clip_colour

    clip, clean = moving_clip(0, 6, 17), moving_clip(0, 6, 17, drifted=False)
    before = delta_e(clip, clean)
    after = delta_e(match_clip_colour(clip, clean[0], clean[-1]), clean)
    assert before.max() > 10 and before.mean() > 5, before
    assert after.max() < 3 and after.mean() < 2, after
    assert after[0] < 0.5 and after[-1] < 0.5  # frames equal to a keyframe stay (almost) untouched


def test_stitcher_colour_matches_each_clip_to_its_keyframes(tmp_path, timeline):
    from avatar_cascade.stages.stitcher.colour import delta_e

    n = len(timeline.clips)
    keys = torch.stack([scene(2 * k) for k in range(n + 1)])
    clips = [moving_clip(2 * k, 2 * k + 2, c.num_frames) for k, c in enumerate(timeline.clips)]
    clean = torch.cat(
        [moving_clip(2 * k, 2 * k + 2, c.num_frames, False)[k > 0 :] for k, c in enumerate(timeline.clips)]
    )
    audio = speech(timeline.num_samples)

    def stitched(strength):
        return stitch(
            iter(clips),
            timeline,
            audio,
            tmp_path / "c.mp4",
            quiet_runtime(),
            keyframes=keys,
            colour_match=strength,
            collect_frames=100,
        ).frames

    n_out = timeline.num_frames
    before, after = delta_e(stitched(0.0), clean[:n_out]), delta_e(stitched(1.0), clean[:n_out])
    assert before.max() > 10 and after.max() < 3, (before, after)
    seams = [c.frame_start for c in timeline.clips]
    assert after[seams].max() < 0.5  # the keyframes themselves are left alone
    with pytest.raises(InputError, match="keyframes"):
        stitch(iter(clips), timeline, audio, tmp_path / "c.mp4", quiet_runtime(), colour_match=1.0)


# ----------------------------------------------------------------------------- constant memory


def rss_run(seconds: float, out: str) -> None:
    """Subprocess body: stitch ``seconds`` of 720p synthetic frames; print RSS (MB) after every clip as JSON."""
    import json
    import resource

    h, w = 720, 1280
    tl = plan_timeline(int(seconds * SR), SR, 25, clip_frames=81)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 // w, yy * 255 // h, (xx + yy) % 256], -1).astype(np.uint8)
    rss: list[float] = []

    class Meter:
        def __init__(self, total, desc):
            pass

        def update(self, n=1, preview=None):
            with open("/proc/self/statm") as f:
                rss.append(int(f.read().split()[1]) * resource.getpagesize() / 2**20)

        def close(self):
            pass

    def clips():
        for c in tl.clips:
            frames = np.empty((c.num_frames, h, w, 3), np.uint8)
            for i in range(c.num_frames):
                frames[i] = np.roll(base, 8 * (c.frame_start + i), axis=1)
            yield frames

    rt = Runtime(device=torch.device("cpu"), progress_factory=Meter)
    result = stitch(clips(), tl, speech(tl.num_samples), out, rt, preset="ultrafast", crf=30)
    print(json.dumps({"rss_mb": rss, "frames": result.num_frames}))


@pytest.mark.slow  # 500 frames of 720p encoded in a fresh process
def test_stitching_long_720p_keeps_memory_flat(tmp_path):
    """20 s of 720p (500 frames, 1.4 GB of raw pixels) in a fresh process: after the first clips the RSS
    must not grow by more than 64 MB. Holding frames would show as ~2.8 MB per frame (~1.1 GB here); the
    benchmark (benchmarks/bench_refine_stitch.py) runs the same up to 10 minutes."""
    import json
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    code = (
        f"import sys; sys.path[:0] = [{str(root)!r}, {str(root / 'tests')!r}]; import test_stitcher as t; "
        f"t.rss_run(20.0, {str(tmp_path / 'long.mp4')!r})"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    rss = data["rss_mb"]
    assert data["frames"] == 500 and len(rss) == 7
    assert max(rss[2:]) - rss[1] < 64, rss


# ----------------------------------------------------------------------------- the node


def test_stitcher_node_outputs_video_path_images_and_embeds_the_workflow(tmp_path, timeline, monkeypatch):
    import json

    from avatar_cascade.artefacts.aligned_audio import AlignedAudio
    from avatar_cascade.artefacts.clips import ClipRecord, Clips
    from avatar_cascade.core.cache import atomic_save_tensors
    from nodes import NODE_CLASS_MAPPINGS

    monkeypatch.setenv("AVATAR_CASCADE_OUTPUT", str(tmp_path / "output"))
    records = []
    for k, c in enumerate(timeline.clips):
        path = tmp_path / "clips" / f"clip_{k}.safetensors"
        atomic_save_tensors(path, {"frames": torch.from_numpy(clip_frames(timeline, k))})
        records.append(ClipRecord(k, path, c.num_frames, f"key{k}"))
    clips = Clips(records, SIZE, SIZE, keyframes=None)
    aligned = AlignedAudio(timeline, speech(timeline.num_samples))
    node = NODE_CLASS_MAPPINGS["AvatarCascadeClipStitcher"]()
    workflow = {"nodes": [{"id": 13}]}
    out = node.stitch(
        clips,
        aligned,
        "avatar_cascade/test",
        20,
        max_image_frames=100,
        prompt={"13": {}},
        extra_pnginfo={"workflow": workflow},
    )
    video, path, images = out["result"]
    assert Path(path).name == "test_00001.mp4" and video == path
    assert images.shape == (31, SIZE, SIZE, 3) and images.dtype == torch.float32 and images.max() <= 1
    meta = probe_media(path)["metadata"]
    assert json.loads(meta["workflow"]) == workflow and json.loads(meta["prompt"]) == {"13": {}}
    assert out["ui"]["images"][0]["filename"] == "test_00001.mp4"

    out = node.stitch(clips, aligned, "avatar_cascade/test", 20, max_image_frames=30, double_fps=True)
    _, path, images = out["result"]
    assert Path(path).name == "test_00002.mp4" and probe_media(path)["video_frames"] == 62
    assert images.shape == (1, SIZE, SIZE, 3) and images.abs().max() == 0
    assert "max_image_frames (30)" in out["ui"]["text"][0]

"""Clip stitcher, what it writes: H.265 and pixel formats, frames collected up to a cap, colour drift
matched to the keyframes, flat memory on long 720p runs, and the Clip Stitcher node. (Seams, counts,
interrupts, overlap and 2x fps: ``test_stitcher_joins.py``.)"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import torch

from avatar_cascade.artefacts.timeline import plan_timeline
from avatar_cascade.core.errors import InputError
from avatar_cascade.core.runtime import Runtime
from avatar_cascade.media import probe_media
from tests.helpers import SR, clip_frames, marked_frame, read_marks, stitch
from tests.helpers import STITCH_SIZE as SIZE
from tests.helpers import cpu_runtime as quiet_runtime
from tests.helpers import tone_track as speech

# ``timeline`` (1.23 s at 25 fps -> 31 frames; clips of 9 frames: 0-8, 8-16, 16-24, 24-32, 2 frames past the
# audio end) comes from conftest.py; speech(n) is n samples of a 220 Hz tone.


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
        f"import sys; sys.path[:0] = [{str(root)!r}, {str(root / 'tests')!r}]; import test_stitcher_output as t; "
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

    out = node.stitch(clips, aligned, "avatar_cascade/test", 20, max_image_frames=30, interpolate=2)
    _, path, images = out["result"]
    assert Path(path).name == "test_00002.mp4" and probe_media(path)["video_frames"] == 62
    assert images.shape == (1, SIZE, SIZE, 3) and images.abs().max() == 0
    assert "max_image_frames (30)" in out["ui"]["text"][0]

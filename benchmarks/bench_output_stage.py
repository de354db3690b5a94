"""The stitcher's output stage (issue 18): frame interpolation, upscaling, and 1080p / 48 fps streams.

Cases (each in a fresh process; ``wall_s`` and ``peak_rss_mb`` come from the harness):

* ``interp_<method>_1080p``: in-between frames per second at 1920x1080 (CPU), as the stream makes
  them: flow measured on the 854x480 frames as rendered, warping at 1080p (``flow``), or flow
  measured on 1080p frames themselves (``flow_on_1080p``: luma downscaled to 1024 px wide), or the
  midpoint ``blend``; ``ms_per_frame`` includes both DIS flows, occlusion and the two warps.
* ``interp_rife_<size>[_scale<s>]``: RIFE 4.7's IFNet at its full released size (rife47 / rife49 shape:
  widths 192 / 128 / 96 / 64, 5.3 M parameters) with random weights, in-between frames per second through
  the stream's ``LearnedInterpolator`` (uint8 frames in and out, padding to 64) on CPU, at 1920x1080 and at
  854x480, RIFE ``scale`` 1.0 (and 0.5); the cost does not depend on the weights' values.
* ``upscale_resize_480_1080``: Lanczos resize 854x480 -> 1920x1080 only (no model).
* ``upscale_<arch>_480_1080``: a spandrel model with random weights in a real architecture's
  published shape, 854x480 -> x4 -> 1920x1080 (area resize) in 512 px tiles, on CPU:
  ``compact`` = Real-ESRGAN Compact (realesr-general-x4v3: 64 features, 32 convs), ``esrgan`` =
  RRDBNet (RealESRGAN_x4plus: 64 filters, 23 blocks); frames per second.
* ``stream_1080p48_<n>s``: ``stitch_clips`` on a 480p / 24 fps clip stream (81-frame clips of a
  moving texture made on the fly, 16 kHz audio) to a 1080p / 48 fps H.264 mp4 (preset ultrafast,
  CRF 23), interpolation by flow, resize to 1080 (no model): ``rss_first_clip_mb``, ``rss_end_mb``,
  ``rss_max_mb`` (resident set after each clip, ``/proc/self/statm``), ``growth_pct`` (end vs first
  clip), ``fps`` (output frames per second of wall time). ``--only stream_1080p48_600s`` is the
  10-minute run (28,800 output frames; about an hour on 2 shared cores).

``load_avg_1m`` is the machine's load at the end of each case: the project's 2-core machines are shared,
and figures taken at a load well above 2 are slower than the code is.

Run: ``python -m benchmarks.bench_output_stage [--only NAME]``.
"""

from __future__ import annotations

import os
import time

from benchmarks.harness import Case, main

SR = 16000
LO, HI = (480, 854), (1080, 1920)


def _texture(h: int, w: int, seed: int = 0):
    import cv2
    import numpy as np

    rng = np.random.default_rng(seed)
    img = np.zeros((h, w, 3), np.float32)
    for s in (4, 16, 64):
        img += cv2.resize(rng.random((h // s + 1, w // s + 1, 3)).astype(np.float32), (w, h), cv2.INTER_CUBIC)
    return (img / 3 * 255).clip(0, 255).astype(np.uint8)


def _rss_mb() -> float:
    import resource

    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def interp(method: str, flow_on: tuple[int, int] = LO, pairs: int = 12) -> dict:
    import cv2
    import numpy as np

    from avatar_cascade.stages.stitcher.interpolate import FrameInterpolator

    tex = _texture(HI[0] + 64, HI[1] + 64)
    hi = [np.ascontiguousarray(tex[2 * i : 2 * i + HI[0], 3 * i : 3 * i + HI[1]]) for i in range(pairs + 1)]
    lo = [cv2.resize(f, flow_on[::-1], interpolation=cv2.INTER_AREA) if flow_on != HI else f for f in hi]
    ip = FrameInterpolator(method)
    ip.between(lo[0], lo[1], [0.5], hi[0], hi[1])  # warm-up
    t0 = time.perf_counter()
    for i in range(pairs):
        ip.between(lo[i], lo[i + 1], [0.5], hi[i], hi[i + 1])
    dt = (time.perf_counter() - t0) / pairs
    return {"frames": pairs, "ms_per_frame": 1000 * dt, "fps": 1 / dt, "load_avg_1m": os.getloadavg()[0]}


def interp_rife(size: tuple[int, int] = HI, scale: float = 1.0, pairs: int = 3) -> dict:
    import numpy as np
    import torch

    from avatar_cascade.models.rife import IFNet, RifeConfig
    from avatar_cascade.stages.stitcher.learned import LearnedInterpolator

    torch.manual_seed(0)
    ip = LearnedInterpolator(IFNet(RifeConfig(version="4.7")).eval(), scale=scale)
    tex = _texture(size[0] + 64, size[1] + 64)
    frames = [np.ascontiguousarray(tex[2 * i : 2 * i + size[0], 3 * i : 3 * i + size[1]]) for i in range(pairs + 2)]
    ip.between(frames[0], frames[1], [0.5])  # warm-up
    t0 = time.perf_counter()
    for i in range(1, pairs + 1):
        (mid,) = ip.between(frames[i], frames[i + 1], [0.5])
    dt = (time.perf_counter() - t0) / pairs
    assert mid.shape == (*size, 3)
    return {
        "frames": pairs,
        "ms_per_frame": 1000 * dt,
        "fps": 1 / dt,
        "threads": torch.get_num_threads(),
        "load_avg_1m": os.getloadavg()[0],
    }


def upscale(arch: str | None, frames: int = 2) -> dict:
    import numpy as np
    import torch

    from avatar_cascade.stages.stitcher.upscale import FrameScaler

    model = None
    if arch is not None:
        import spandrel
        from spandrel.architectures.Compact import Compact
        from spandrel.architectures.ESRGAN import ESRGAN

        if arch == "compact":
            net = Compact(num_feat=64, num_conv=32, upscale=4)
        else:
            net = ESRGAN(num_filters=64, num_blocks=23)
        model = spandrel.ModelLoader().load_from_state_dict(net.state_dict()).eval()
    scaler = FrameScaler(LO, HI[0], model, 512)
    frame = _texture(*LO)
    FrameScaler((64, 64), 144, model)(frame[:64, :64])  # warm-up (small: a real model takes minutes a frame)
    t0 = time.perf_counter()
    for _ in range(frames):
        out = scaler(frame)
    dt = (time.perf_counter() - t0) / frames
    assert out.shape[:2] == HI and out.dtype == np.uint8
    threads = torch.get_num_threads()
    return {
        "frames": frames,
        "ms_per_frame": 1000 * dt,
        "fps": 1 / dt,
        "threads": threads,
        "load_avg_1m": os.getloadavg()[0],
    }


def stream(seconds: float, fps: int = 24, output_height: int = 1080, interpolate: int = 2) -> dict:
    import tempfile
    from pathlib import Path

    import numpy as np
    import torch

    from avatar_cascade.artefacts.timeline import plan_timeline
    from avatar_cascade.core.runtime import Runtime
    from avatar_cascade.media import AudioTrack, probe_media
    from avatar_cascade.stages.stitcher.settings import StitcherSettings
    from avatar_cascade.stages.stitcher.stitcher import stitch_clips

    tl = plan_timeline(int(seconds * SR), SR, fps, clip_frames=81)
    tex = _texture(LO[0] + 256, LO[1] + 256)
    rss: list[float] = []
    trace: list[tuple[float, float]] = []  # (seconds of video written, RSS MB) every ~10 s of video
    trace_file = os.environ.get("AVATAR_CASCADE_BENCH_TRACE")  # the same, as it goes (long runs)
    t_start = time.perf_counter()

    class Meter:
        def __init__(self, total, desc):
            pass

        def update(self, n=1, preview=None):
            rss.append(_rss_mb())
            video_s = tl.clips[len(rss) - 1].frame_end / fps
            if not trace or video_s - trace[-1][0] >= 10 or len(rss) == len(tl.clips):
                trace.append((round(video_s, 1), round(rss[-1], 1)))
                if trace_file:
                    with open(trace_file, "a") as f:
                        f.write(f"{video_s:.1f} {rss[-1]:.1f} {time.perf_counter() - t_start:.0f}\n")

        def close(self):
            pass

    def clips():
        for c in tl.clips:
            frames = np.empty((c.num_frames, *LO, 3), np.uint8)
            for i in range(c.num_frames):
                f = c.frame_start + i  # a slow circular pan: 3 px right, 1 px down per frame
                y, x = (f % 256), (3 * f) % 256
                frames[i] = tex[y : y + LO[0], x : x + LO[1]]
            yield frames

    wave = torch.arange(tl.num_samples, dtype=torch.float32).mul_(2 * torch.pi * 220 / SR).sin_().mul_(0.2)
    audio = AudioTrack(wave[None], SR)  # 16 kHz mono float32: 3.7 MB per minute, held by the caller
    settings = StitcherSettings(
        preset="ultrafast", crf=23, colour_match=0.0, interpolate=interpolate, output_height=output_height
    )
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        result = stitch_clips(clips(), tl, audio, Path(d) / "out.mp4", settings, Runtime(progress_factory=Meter))
        wall = time.perf_counter() - t0
        info = probe_media(result.path) if seconds <= 60 else {}
        size_mb = result.path.stat().st_size / 2**20
    video_s = result.num_frames / result.fps
    return {
        "out_frames": result.num_frames,
        "out_fps": str(result.fps),
        "size": f"{result.width}x{result.height}",
        "video_s": float(video_s),
        "audio_s": result.audio_samples / SR,
        "probed_frames": info.get("video_frames"),
        "file_mb": size_mb,
        "fps": result.num_frames / wall,
        "rss_first_clip_mb": rss[0],
        "rss_end_mb": rss[-1],
        "rss_max_mb": max(rss),
        "growth_pct": 100 * (rss[-1] - rss[0]) / rss[0],
        "rss_trace": trace,
        "load_avg_1m": os.getloadavg()[0],
    }


CASES = [
    Case("interp_flow_1080p", interp, {"method": "flow"}),
    Case("interp_flow_on_1080p_1080p", interp, {"method": "flow", "flow_on": HI}),
    Case("interp_blend_1080p", interp, {"method": "blend"}),
    Case("interp_rife_1080p", interp_rife, {"size": HI}),
    Case("interp_rife_1080p_scale0.5", interp_rife, {"size": HI, "scale": 0.5}),
    Case("interp_rife_480p", interp_rife, {"size": LO}),
    Case("upscale_resize_480_1080", upscale, {"arch": None, "frames": 20}),
    Case("upscale_compact_480_1080", upscale, {"arch": "compact", "frames": 1}),
    Case("upscale_esrgan_480_1080", upscale, {"arch": "esrgan", "frames": 1}),
    *[Case(f"stream_1080p48_{s}s", stream, {"seconds": s}) for s in (10, 60, 600)],
]

if __name__ == "__main__":
    main(__name__, CASES)

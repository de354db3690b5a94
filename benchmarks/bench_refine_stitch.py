"""First-last-frame refiner and clip stitcher: throughput and memory.

Cases (each in a fresh process; ``wall_s`` and ``peak_rss_mb`` come from the harness):

* ``stitch_720p`` / ``stitch_1080p``: 10 s of synthetic 25 fps frames (81-frame clips made on
  the fly, a moving gradient) streamed to H.264 (preset medium, CRF 19) with AAC audio;
  ``fps`` is output frames per second of wall time, clip generation included.
  ``stitch_720p_colour`` adds colour matching to the keyframes (CPU), ``stitch_720p_h265``
  H.265 (preset medium), ``stitch_720p_2x`` the frame-rate doubling.
* ``rss_720p_<n>s``: the same at 720p with preset ultrafast / CRF 30 for 10 s, 60 s and
  600 s (10 minutes, 15,000 frames): ``rss_first_clip_mb`` / ``rss_end_mb`` are the resident
  set after the first clip and at the end (``/proc/self/statm``); ``growth_mb`` their difference.
* ``refine_tiny_bs<b>``: the tiny demo models on CPU (one intra-op thread), 8 clips of
  17 frames at 64x64, 4 steps, CFG: clips/s against clips per forward pass.
* ``refine_wan1.3b_shape_bs<b>``: a Wan 2.1 1.3B-shaped I2V DiT (width 1536, 30 blocks, 36
  input channels, random bf16 weights), a random Wan 2.1 VAE and random text embeddings
  (stand-in encoder: the benchmark measures the DiT and VAE), 4 clips of 33 frames at 480x832,
  4 steps. Skipped without CUDA.
* ``cascade_tiny`` vs ``sequential_tiny``: the same tiny model, 8 clips / 129 frames in
  all: the cascade's independent first-last-frame clips (batched 4 per pass) against the
  sequential "extend from the previous clip's last frame" baseline (image-to-video, one
  clip after the other: it cannot be batched since each clip needs the previous one).

Run: ``python -m benchmarks.bench_refine_stitch [--only NAME]``.
"""

from __future__ import annotations

import time

from benchmarks.harness import Case, main

SR = 16000
FPS = 25


def _frames(h: int, w: int):
    import numpy as np

    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([xx * 255 // w, yy * 255 // h, (xx + yy) % 256], -1).astype(np.uint8)


def _rss_mb() -> float:
    import resource

    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def stitch(
    seconds: float,
    height: int,
    width: int,
    preset: str | None = None,
    crf: int = 19,
    codec: str = "h264",
    colour: float = 0.0,
    double_fps: bool = False,
) -> dict:
    import tempfile
    from pathlib import Path

    import numpy as np
    import torch

    from avatar_cascade.artefacts.timeline import plan_timeline
    from avatar_cascade.core.runtime import Runtime
    from avatar_cascade.media import AudioTrack
    from avatar_cascade.stages.stitcher.settings import StitcherSettings
    from avatar_cascade.stages.stitcher.stitcher import stitch_clips

    tl = plan_timeline(int(seconds * SR), SR, FPS, clip_frames=81)
    base = _frames(height, width)
    rss: list[float] = []

    class Meter:
        def __init__(self, total, desc):
            pass

        def update(self, n=1, preview=None):
            rss.append(_rss_mb())

        def close(self):
            pass

    def clips():
        for c in tl.clips:
            frames = np.empty((c.num_frames, height, width, 3), np.uint8)
            for i in range(c.num_frames):
                frames[i] = np.roll(base, 8 * (c.frame_start + i), axis=1)
            yield frames

    keys = None
    if colour:
        keys = torch.stack([torch.from_numpy(np.roll(base, 8 * s, axis=1)) for s in tl.seams])
    t = torch.arange(tl.num_samples) / SR
    audio = AudioTrack((0.2 * torch.sin(2 * torch.pi * 220 * t))[None], SR)
    rt = Runtime(device=torch.device("cpu"), progress_factory=Meter)
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        result = stitch_clips(
            clips(),
            tl,
            audio,
            Path(d) / "out.mp4",
            StitcherSettings(
                codec=codec,
                crf=crf,
                preset=preset,
                colour_match=colour,
                interpolate=2 if double_fps else 1,
                interpolation="blend",  # the 2x rows measured the midpoint blend; flow: bench_output_stage.py
            ),
            rt,
            keyframes=keys,
        )
        wall = time.perf_counter() - t0
        size_mb = result.path.stat().st_size / 2**20
    return {
        "frames": result.num_frames,
        "fps": result.num_frames / wall,
        "file_mb": size_mb,
        "rss_first_clip_mb": rss[0],
        "rss_end_mb": rss[-1],
        "growth_mb": rss[-1] - rss[0],
    }


def _tiny_models():
    import tempfile
    from pathlib import Path

    from avatar_cascade.demo.models import DIT_FILE, TEXT_ENCODER_FILE, VAE_FILE, write_demo_models
    from avatar_cascade.models.text_encoder import load_text_encoder
    from avatar_cascade.models.wan_dit import load_wan_dit
    from avatar_cascade.models.wan_vae import load_wan_vae

    d = Path(tempfile.mkdtemp())
    write_demo_models(d)
    return (
        load_wan_dit(d / "diffusion_models" / DIT_FILE),
        load_wan_vae(d / "vae" / VAE_FILE),
        load_text_encoder(d / "text_encoders" / TEXT_ENCODER_FILE),
    )


def _inputs(clips: int, frames: int, size: tuple[int, int]):
    from fractions import Fraction

    import torch

    from avatar_cascade.artefacts.aligned_audio import AlignedAudio
    from avatar_cascade.artefacts.keyframes import Keyframes
    from avatar_cascade.artefacts.timeline import frame_to_sample, plan_timeline
    from avatar_cascade.media import AudioTrack
    from avatar_cascade.stages.inbetween.inbetween import inbetween_storyline

    n = clips * (frames - 1) + 1
    tl = plan_timeline(frame_to_sample(n, Fraction(16), SR), SR, 16, clip_frames=frames)
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (clips + 1, *size, 3), generator=g, dtype=torch.uint8)
    kf = Keyframes(images, tl.seams, [None] * (clips + 1))
    aligned = AlignedAudio(tl, AudioTrack(torch.zeros(1, tl.num_samples), SR))
    return kf, aligned, inbetween_storyline(tl, "a person talks to the camera")


def refine_tiny(batch_size: int, clips: int = 8, frames: int = 17, size: int = 64) -> dict:
    import tempfile
    from pathlib import Path

    import torch

    from avatar_cascade.core.runtime import Runtime
    from avatar_cascade.models.handle import WanModels
    from avatar_cascade.sampling.settings import SamplerSettings
    from avatar_cascade.stages.refiner.refiner import RefinerSettings, refine_clips

    torch.set_num_threads(1)
    models = WanModels(*_tiny_models())
    kf, aligned, story = _inputs(clips, frames, (size, size))
    settings = RefinerSettings(seed=0, batch_size=batch_size, sampler=SamplerSettings(steps=4, guidance=3.0))
    rt = Runtime(device=torch.device("cpu"), show_progress=False)
    with tempfile.TemporaryDirectory() as d:
        refine_clips(models, kf, aligned, story, settings, rt, cache_dir=Path(d) / "warm", reroll="0")  # warm-up
        t0 = time.perf_counter()
        refine_clips(models, kf, aligned, story, settings, rt, cache_dir=Path(d) / "clips")
        wall = time.perf_counter() - t0
    return {"clips": clips, "refine_s": wall, "clips_per_s": clips / wall}


def refine_wan13b_shape(batch_size: int, clips: int = 4, frames: int = 33) -> dict:
    import tempfile
    from pathlib import Path

    import torch
    from diffusers import AutoencoderKLWan, WanTransformer3DModel

    from avatar_cascade.core.runtime import Runtime
    from avatar_cascade.models.handle import WanModels
    from avatar_cascade.models.wan_dit import WanDiT, load_bundled_config
    from avatar_cascade.models.wan_vae import WanVAE
    from avatar_cascade.models.wan_vae import load_bundled_config as vae_config
    from avatar_cascade.sampling.settings import SamplerSettings
    from avatar_cascade.stages.refiner.refiner import RefinerSettings, refine_clips

    cfg = load_bundled_config("wan2.1-t2v-1.3b")
    cfg.update(in_channels=36)
    cfg.pop("_class_name", None)
    dev = torch.device("cuda")
    dit = WanDiT(WanTransformer3DModel.from_config(cfg).to(dev, torch.bfloat16).eval(), "wan1.3b-shape", "bench", None)
    vcfg = vae_config("wan2.1-vae")
    vcfg.pop("_class_name", None)
    vae = WanVAE(AutoencoderKLWan.from_config(vcfg).to(dev, torch.bfloat16).eval(), "bench-vae", None)

    class RandomText:  # stand-in: random UMT5-sized embeddings (the benchmark times the DiT and VAE)
        model = torch.nn.Identity()
        identity = "random-text"

        def modules(self):
            return [self.model]

        def cache_identity(self):
            return self.identity

        def encode(self, prompts):
            return torch.randn(len(prompts), 512, 4096)

    kf, aligned, story = _inputs(clips, frames, (480, 832))
    settings = RefinerSettings(seed=0, batch_size=batch_size, sampler=SamplerSettings(steps=4, guidance=5.0))
    rt = Runtime(device=dev, show_progress=False)
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        refine_clips(WanModels(dit, vae, RandomText()), kf, aligned, story, settings, rt, cache_dir=Path(d) / "clips")
        torch.cuda.synchronize()
        wall = time.perf_counter() - t0
    return {"clips": clips, "refine_s": wall, "clips_per_s": clips / wall}


def cascade_tiny(clips: int = 8, frames: int = 17, size: int = 64) -> dict:
    out = refine_tiny(4, clips, frames, size)
    return {"clips": clips, "total_frames": clips * (frames - 1) + 1, "wall_clips_s": out["refine_s"]}


def sequential_tiny(clips: int = 8, frames: int = 17, size: int = 64) -> dict:
    """Each clip continues from the previous clip's last frame (image-to-video), one after the other."""
    import torch

    from avatar_cascade.core.runtime import Runtime
    from avatar_cascade.core.seeds import derive_seed
    from avatar_cascade.sampling.conditioning import ClipRequest, decode_to_uint8, encode_condition
    from avatar_cascade.sampling.loop import sample_clips
    from avatar_cascade.sampling.prompts import PromptBank
    from avatar_cascade.sampling.settings import SamplerSettings

    torch.set_num_threads(1)
    dit, vae, te = _tiny_models()
    kf, aligned, story = _inputs(clips, frames, (size, size))
    rt = Runtime(device=torch.device("cpu"), show_progress=False)
    sampler = SamplerSettings(steps=4, guidance=3.0)
    bank = PromptBank(te, rt)
    bank.encode_all([story.shot_prompt(k) for k in range(clips)] + [story.shot_negative(0)])

    def run() -> None:
        first = kf.as_model_frames()[0]
        for k in range(clips):
            req = ClipRequest.first_last(
                frames, first, None, bank.get(story.shot_prompt(k)), bank.get(story.shot_negative(k)), derive_seed(0, k)
            )
            video = decode_to_uint8(
                vae, sample_clips(dit, encode_condition(vae, [req], size, size), [req], sampler, rt)
            )
            first = video[0, -1].permute(2, 0, 1).float() / 127.5 - 1  # the next clip starts where this one ended

    run()  # warm-up
    t0 = time.perf_counter()
    run()
    wall = time.perf_counter() - t0
    return {"clips": clips, "total_frames": clips * (frames - 1) + 1, "wall_clips_s": wall}


CASES = [
    Case("stitch_720p", stitch, {"seconds": 10, "height": 720, "width": 1280}),
    Case("stitch_1080p", stitch, {"seconds": 10, "height": 1080, "width": 1920}),
    Case("stitch_720p_h265", stitch, {"seconds": 10, "height": 720, "width": 1280, "codec": "h265"}),
    Case("stitch_720p_colour", stitch, {"seconds": 10, "height": 720, "width": 1280, "colour": 1.0}),
    Case("stitch_720p_2x", stitch, {"seconds": 10, "height": 720, "width": 1280, "double_fps": True}),
    *[
        Case(f"rss_720p_{s}s", stitch, {"seconds": s, "height": 720, "width": 1280, "preset": "ultrafast", "crf": 30})
        for s in (10, 60, 600)
    ],
    *[Case(f"refine_tiny_bs{b}", refine_tiny, {"batch_size": b}) for b in (1, 2, 4, 8)],
    *[Case(f"refine_wan1.3b_shape_bs{b}", refine_wan13b_shape, {"batch_size": b}, needs_gpu=True) for b in (1, 2, 4)],
    Case("cascade_tiny", cascade_tiny),
    Case("sequential_tiny", sequential_tiny),
]

if __name__ == "__main__":
    main(__name__, CASES)

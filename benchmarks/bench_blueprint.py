"""Blueprint DiT Sampler (+ Keyframe Extractor): cost and memory against video duration.

Cases (each in a fresh process; ``wall_s`` and ``peak_rss_mb`` come from the harness):

* ``blueprint_tiny_<m>min``: the tiny demo models (real loaders) on CPU, one intra-op thread,
  a synthetic speech-like track of ``m`` minutes at 25 fps (clips of 81 frames), blueprint
  32x32 at 8 fps in windows of 33 frames (each from the reference, lead 8), 2 steps without CFG; then keyframes at
  64x64. Figures: ``blueprint_s`` (render only), ``s_per_output_s`` (blueprint seconds per
  second of video), ``windows``, ``frames``, ``store_mb`` (chunks on disk),
  ``rss_window5_mb`` / ``rss_end_mb`` (resident set after window 5 and after the last
  window, ``/proc/self/statm``) and ``keyframes_s``.
* ``blueprint_wan1.3b_shape_320p_<m>min``: a Wan 2.1 1.3B-shaped I2V DiT (width 1536, 30
  blocks, 36 input channels, random bf16 weights), a random Wan 2.1 VAE and random text
  embeddings (stand-in encoder: the benchmark times the DiT and VAE) at 576x320, 8 fps,
  windows of 33 frames, 20 steps with CFG. Skipped without CUDA.

Run: ``python -m benchmarks.bench_blueprint [--only NAME]``.
"""

from __future__ import annotations

import time

from benchmarks.harness import Case, main

SR = 16000


def _rss_mb() -> float:
    import resource

    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def _aligned(minutes: float):
    import torch

    from avatar_cascade.core.runtime import Runtime
    from avatar_cascade.media import AudioTrack
    from avatar_cascade.stages.aligner.aligner import align_audio
    from avatar_cascade.stages.aligner.settings import AlignerSettings

    t = torch.arange(int(minutes * 60 * SR)) / SR
    voiced = torch.sin(2 * torch.pi * 0.4 * t) > -0.3  # ~60 % speech, pauses in between
    wave = (0.3 * torch.sin(2 * torch.pi * 180 * t) * voiced).float()[None]
    settings = AlignerSettings(fps=25, clip_frames=81, snap_seams_frames=0)
    return align_audio(AudioTrack(wave, SR), settings, Runtime(device=torch.device("cpu"), show_progress=False))


def _tiny_models():
    import tempfile
    from pathlib import Path

    from avatar_cascade.demo.models import DIT_FILE, TEXT_ENCODER_FILE, VAE_FILE, write_demo_models
    from avatar_cascade.models.handle import WanModels
    from avatar_cascade.models.text_encoder import load_text_encoder
    from avatar_cascade.models.wan_dit import load_wan_dit
    from avatar_cascade.models.wan_vae import load_wan_vae

    d = Path(tempfile.mkdtemp())
    write_demo_models(d)
    return WanModels(
        load_wan_dit(d / "diffusion_models" / DIT_FILE),
        load_wan_vae(d / "vae" / VAE_FILE),
        load_text_encoder(d / "text_encoders" / TEXT_ENCODER_FILE),
    )


def _run(models, minutes: float, settings, device, keyframe_size: tuple[int, int]) -> dict:
    import tempfile
    from pathlib import Path

    import torch

    from avatar_cascade.core.runtime import Runtime
    from avatar_cascade.stages.blueprint.sampler import render_blueprint
    from avatar_cascade.stages.director.rules import rule_based_storyline
    from avatar_cascade.stages.keyframes.extractor import extract_keyframes
    from avatar_cascade.stages.keyframes.settings import KeyframeSettings

    aligned = _aligned(minutes)
    story = rule_based_storyline("a calm presenter", aligned.timeline, None)
    reference = torch.rand(256, 256, 3, generator=torch.Generator().manual_seed(0))
    rss: list[float] = []
    rt = Runtime(
        device=device, show_progress=False, preview=lambda k, _: rss.append(_rss_mb()) if k == "blueprint" else 0
    )
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        bp = render_blueprint(models, reference, aligned, story, settings, rt, work_dir=Path(d))
        if device.type == "cuda":
            torch.cuda.synchronize()
        bp_s = time.perf_counter() - t0
        store = sum(p.stat().st_size for p in bp.folder.glob("window_*.safetensors")) / 2**20
        t0 = time.perf_counter()
        width, height = keyframe_size
        kf = extract_keyframes(bp, aligned, reference, KeyframeSettings(width=width, height=height), rt)
        kf_s = time.perf_counter() - t0
        video_s = aligned.timeline.duration_s
        return {
            "video_s": video_s,
            "frames": len(bp),
            "windows": len(bp.window_starts),
            "blueprint_s": bp_s,
            "s_per_output_s": bp_s / video_s,
            "store_mb": store,
            "rss_window5_mb": rss[min(5, len(rss) - 1)],
            "rss_end_mb": rss[-1],
            "keyframes": len(kf.images),
            "keyframes_s": kf_s,
        }


def blueprint_tiny(minutes: float) -> dict:
    import torch

    from avatar_cascade.sampling.settings import SamplerSettings
    from avatar_cascade.stages.blueprint.sampler import BlueprintSettings

    torch.set_num_threads(1)
    settings = BlueprintSettings(
        width=32, height=32, fps=8, window_frames=33, sampler=SamplerSettings(steps=2, guidance=1.0, shift=3.0)
    )
    out = _run(_tiny_models(), minutes, settings, torch.device("cpu"), (64, 64))
    return {"threads": 1, **out}


def blueprint_wan13b_shape(minutes: float) -> dict:
    import torch
    from diffusers import AutoencoderKLWan, WanTransformer3DModel

    from avatar_cascade.models.handle import WanModels
    from avatar_cascade.models.wan_dit import WanDiT, load_bundled_config
    from avatar_cascade.models.wan_vae import WanVAE
    from avatar_cascade.models.wan_vae import load_bundled_config as vae_config
    from avatar_cascade.sampling.settings import SamplerSettings
    from avatar_cascade.stages.blueprint.sampler import BlueprintSettings

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

    settings = BlueprintSettings(
        width=576, height=320, fps=8, window_frames=33, sampler=SamplerSettings(steps=20, guidance=5.0, shift=3.0)
    )
    return _run(WanModels(dit, vae, RandomText()), minutes, settings, dev, (832, 480))


CASES = [
    *[Case(f"blueprint_tiny_{m}min", blueprint_tiny, {"minutes": m}) for m in (1, 5, 10)],
    Case("blueprint_wan1.3b_shape_320p_1min", blueprint_wan13b_shape, {"minutes": 1}, needs_gpu=True),
]

if __name__ == "__main__":
    main(__name__, CASES)

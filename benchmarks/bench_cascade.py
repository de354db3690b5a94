"""Whole-cascade benchmark on CPU with the tiny demo models.

Per-stage wall time and peak RSS for 1, 5, 10 and 30-minute timelines; the share of wall time
spent outside the DiT and VAE (orchestration overhead); and the cascade against an honest
sequential baseline on the same model and total frames (each chunk conditioned on the previous
chunk's last frame, one chunk at a time — the InfiniteTalk / S2V way).

    python -m benchmarks.bench_cascade [--only 1min]
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from benchmarks.harness import Case, main

FPS = "16"
CLIP_FRAMES = 33
SIZE = 32
STEPS = 2


def _long_audio(seconds: float, path: Path) -> Path:
    """The bundled sample speech repeated to ``seconds`` (16 kHz mono FLAC)."""
    import torch

    from avatar_cascade.media import load_audio, sample_audio_path

    src = load_audio(sample_audio_path())
    n = int(seconds * src.sample_rate)
    reps = n // src.num_samples + 1
    wave = src.waveform.repeat(1, reps)[:, :n]
    import av
    import numpy as np

    with av.open(str(path), "w") as c:
        st = c.add_stream("flac", rate=src.sample_rate, layout="mono")
        frame = av.AudioFrame.from_ndarray(
            (wave.clamp(-1, 1) * 32767).to(torch.int16).numpy().astype(np.int16), format="s16", layout="mono"
        )
        frame.sample_rate = src.sample_rate
        for p in st.encode(frame):
            c.mux(p)
        for p in st.encode(None):
            c.mux(p)
    return path


def _timed_modules(timings: dict):
    """Forward hooks adding DiT / VAE compute seconds into ``timings``."""
    import torch

    def attach(module: torch.nn.Module, key: str) -> None:
        def pre(*_):
            module._bench_t0 = time.perf_counter()

        def post(*_):
            timings[key] = timings.get(key, 0.0) + time.perf_counter() - module._bench_t0

        module.register_forward_pre_hook(pre)
        module.register_forward_hook(post)

    return attach


def cascade(minutes: float) -> dict:
    import torch

    from avatar_cascade import cascade as cascade_mod
    from avatar_cascade.core.runtime import Runtime
    from avatar_cascade.demo.models import write_demo_models
    from avatar_cascade.media import sample_image_path
    from avatar_cascade.sampling.settings import SamplerSettings
    from avatar_cascade.stages.aligner.settings import AlignerSettings
    from avatar_cascade.stages.blueprint.sampler import BlueprintSettings
    from avatar_cascade.stages.keyframes.settings import KeyframeSettings
    from avatar_cascade.stages.refiner.refiner import RefinerSettings

    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="bench_cascade_"))
    models = tmp / "models"
    write_demo_models(models)
    audio = _long_audio(minutes * 60, tmp / "speech.flac")
    fast = SamplerSettings(steps=STEPS, guidance=3.0, shift=3.0)
    cfg = cascade_mod.CascadeConfig(
        image=sample_image_path(),
        audio=audio,
        prompt="A presenter talks.",
        models_dir=models,
        out=tmp / "out.mp4",
        workdir=tmp / "work",
        aligner=AlignerSettings(fps=FPS, clip_frames=CLIP_FRAMES),
        keyframes=KeyframeSettings(width=SIZE, height=SIZE),
        blueprint=BlueprintSettings(width=SIZE, height=SIZE, fps=8, window_frames=CLIP_FRAMES, sampler=fast),
        refiner=RefinerSettings(batch_size=4, sampler=fast),
    )
    compute: dict[str, float] = {}
    attach = _timed_modules(compute)
    from avatar_cascade.models import wan_dit, wan_vae

    orig_dit, orig_vae = wan_dit.load_wan_dit, wan_vae.load_wan_vae

    def load_dit(*a, **k):
        d = orig_dit(*a, **k)
        attach(d.transformer, "dit_s")
        return d

    def load_vae(*a, **k):
        v = orig_vae(*a, **k)
        attach(v.vae, "vae_s")  # encode/decode go through submodules; hook both
        attach(v.vae.encoder, "vae_enc_s")
        attach(v.vae.decoder, "vae_dec_s")
        return v

    wan_dit.load_wan_dit, wan_vae.load_wan_vae = load_dit, load_vae
    stages: dict[str, float] = {}
    t0 = time.perf_counter()
    cascade_mod.run_cascade(cfg, Runtime(show_progress=False), timings=stages)
    wall = time.perf_counter() - t0
    model_s = compute.get("dit_s", 0.0) + compute.get("vae_enc_s", 0.0) + compute.get("vae_dec_s", 0.0)
    return {
        "video_s": minutes * 60,
        **{f"{k}_s": round(v, 2) for k, v in stages.items()},
        "dit_s": round(compute.get("dit_s", 0.0), 2),
        "vae_s": round(compute.get("vae_enc_s", 0.0) + compute.get("vae_dec_s", 0.0), 2),
        "outside_dit_vae_share": round(1 - model_s / wall, 3),
        "s_per_video_s": round(wall / (minutes * 60), 3),
    }


def sequential_baseline(minutes: float) -> dict:
    """Same model, same total frames and size: chunk k starts from chunk k-1's last frame, one at a time."""
    import torch

    from avatar_cascade.artefacts.timeline import plan_timeline
    from avatar_cascade.core.runtime import Runtime
    from avatar_cascade.core.seeds import derive_seed
    from avatar_cascade.demo.models import write_demo_models
    from avatar_cascade.media import load_image, sample_image_path
    from avatar_cascade.media.frames import image_to_model_space
    from avatar_cascade.models.text_encoder import load_text_encoder
    from avatar_cascade.models.wan_dit import load_wan_dit
    from avatar_cascade.models.wan_vae import load_wan_vae
    from avatar_cascade.sampling.conditioning import ClipRequest, decode_to_uint8, encode_condition
    from avatar_cascade.sampling.loop import sample_clips
    from avatar_cascade.sampling.settings import SamplerSettings

    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="bench_seq_"))
    names = write_demo_models(tmp)
    dit = load_wan_dit(tmp / "diffusion_models" / names["dit"])
    vae = load_wan_vae(tmp / "vae" / names["vae"])
    te = load_text_encoder(tmp / "text_encoders" / names["text_encoder"])
    rt = Runtime(show_progress=False)
    tl = plan_timeline(int(minutes * 60 * 16000), 16000, FPS, CLIP_FRAMES)
    emb = te.encode(["A presenter talks.", ""])
    settings = SamplerSettings(steps=STEPS, guidance=3.0, shift=3.0)
    prev = image_to_model_space(load_image(sample_image_path()), SIZE, SIZE)
    t0 = time.perf_counter()
    for c in tl.clips:
        req = ClipRequest.first_last(c.num_frames, prev, None, emb[0], emb[1], derive_seed(0, c.index))
        cond = encode_condition(vae, [req], SIZE, SIZE)
        frames = decode_to_uint8(vae, sample_clips(dit.transformer, cond, [req], settings, rt))[0]
        prev = frames[-1].float().div(127.5).sub(1).permute(2, 0, 1)
    wall = time.perf_counter() - t0
    return {
        "video_s": minutes * 60,
        "clips": len(tl.clips),
        "sequential_s": round(wall, 2),
        "s_per_video_s": round(wall / (minutes * 60), 3),
    }


CASES = [Case(f"cascade_{m}min", cascade, {"minutes": m}) for m in (1, 5, 10, 30)] + [
    Case(f"sequential_{m}min", sequential_baseline, {"minutes": m}) for m in (1, 5)
]

if __name__ == "__main__":
    main(__name__, CASES)

"""First-Last-Frame Refiner: every sub-clip at full resolution between two keyframes.

Sub-clip ``k`` is generated with its first frame fixed to keyframe ``k`` and its
last frame to keyframe ``k+1`` (Wan FLF/I2V concat conditioning), its shot's
local prompt and negative prompt, its time-aligned audio window (when the DiT
carries an audio adapter), both keyframes through the image encoder (when the
DiT has an image embedder and one is given) and its own seed derived from the
run seed and ``k``.

Parallel: clips of one length are sampled ``batch_size`` per forward pass;
with several local CUDA devices one worker thread per device takes batches
from a shared queue, each with its **own replica of the DiT and VAE** (memory:
one full copy of the models per device, e.g. ~33 GB for Wan 2.1 14B in bf16 +
VAE; text embeddings are computed once). A CUDA out-of-memory error halves the
worker's batch and retries; a single clip that does not fit is reported.

Resumable: every finished clip is written atomically to the clip cache under a
key of everything that determines it (model + LoRA identities, keyframes,
prompts, audio window, seed, settings). A killed run recomputes only missing
clips; an edited shot recomputes only its clip. ``reroll`` ("3, 7-9") gives
the listed clips new seeds (seed offset 1 per mention); the offset is part of
the seed, hence of the key, so a later run with the same string reuses them.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import queue
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import negative_frames as nf
from .audio_aligner import AlignedAudio
from .cache import atomic_save_tensors, atomic_write_text, content_key, load_tensors, tensor_file_ok
from .clip_workers import OOM, Worker, make_workers, render_resilient
from .errors import InputError
from .keyframes import Keyframes
from .runtime import Runtime
from .sampling import ClipRequest, SamplerSettings, check_seed, decode_to_uint8, derive_seed, encode_condition, sample_clips
from .text_prompts import PromptBank

log = logging.getLogger(__name__)

CACHE_FORMAT = "2"
MAX_NEGATIVE_FRAME_STRENGTH = 10.0
_REROLL_TOKEN = re.compile(r"^(\d+)(?:\s*-\s*(\d+))?$")


@dataclass(frozen=True)
class RefinerSettings:
    """Refiner sampling, batching and guidance.

    Attributes:
        seed: run seed; clip ``k`` uses ``derive_seed(seed, k, reroll offset)``.
        batch_size: clips per forward pass (0 = automatic from free memory).
        sampler: steps / guidance / shift / scheduler.
        negative_frame_strength: ``s`` of negative-frame guidance (0 = off, exact
            plain sampling); see :mod:`avatar_cascade.negative_frames`.
        devices: devices to spread clips over, e.g. ``("cuda:0", "cuda:1")``;
            empty = the runtime device plus every other local CUDA device.
    """

    seed: int = 0
    batch_size: int = 0
    sampler: SamplerSettings = field(default_factory=lambda: SamplerSettings(steps=30, guidance=5.0, shift=5.0))
    negative_frame_strength: float = 0.0
    devices: tuple[str, ...] = ()

    def check(self) -> RefinerSettings:
        check_seed(self.seed)
        if not 0 <= self.batch_size <= 64:
            raise InputError("batch_size", self.batch_size, "must be 0 (automatic) to 64", "use 0")
        s = self.negative_frame_strength
        if not 0.0 <= s <= MAX_NEGATIVE_FRAME_STRENGTH:
            raise InputError(
                "negative_frame_strength", s, f"must be between 0 and {MAX_NEGATIVE_FRAME_STRENGTH:g}", "use 0 or 0.5-2"
            )
        for d in self.devices:
            try:
                torch.device(d)
            except (RuntimeError, TypeError) as exc:
                raise InputError("devices", d, "is not a torch device", "use names like cuda:0, cuda:1") from exc
        self.sampler.check()
        return self


@dataclass
class ClipRecord:
    """One sub-clip's cache entry: ``num_frames`` frames at ``path`` under ``key``."""

    index: int
    path: Path
    num_frames: int
    key: str
    cached: bool = False
    seed: int = 0
    seed_offset: int = 0


@dataclass
class Clips:
    """The ``AVATAR_CLIPS`` artefact: one cached file per finished sub-clip (not one giant tensor).

    ``keyframes`` is the refiner's keyframe tensor ``[S, H, W, 3]`` uint8 (a
    reference, not a copy), used by the stitcher's colour matching.
    """

    records: list[ClipRecord]
    width: int
    height: int
    keyframes: torch.Tensor | None = None

    def frames(self, index: int) -> torch.Tensor:
        """Frames of clip ``index`` as ``[T,H,W,3]`` uint8."""
        data = load_tensors(self.records[index].path)
        if data is None:
            raise FileNotFoundError(f"clip {index} is missing from the clip cache: {self.records[index].path}")
        return data["frames"]

    def iter_frames(self):
        for r in self.records:
            yield self.frames(r.index)

    @property
    def computed(self) -> int:
        return sum(not r.cached for r in self.records)


def parse_reroll(text: str | None, num_clips: int | None = None) -> dict[int, int]:
    """``"3, 7-9"`` -> ``{3: 1, 7: 1, 8: 1, 9: 1}``: clip index (0-based) -> seed offset.

    Every mention adds one to a clip's offset, so ``"3, 3"`` is clip 3's second re-roll.
    """
    out: dict[int, int] = {}
    for token in re.split(r"[,;\s]+", re.sub(r"\s*-\s*", "-", (text or "").strip())):
        if not token:
            continue
        m = _REROLL_TOKEN.match(token)
        if m is None:
            raise InputError("reroll", text, f"cannot read {token!r}", "list clip numbers like '3, 7-9'")
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) is not None else lo
        if hi < lo:
            raise InputError("reroll", text, f"range {token!r} runs backwards", f"write {hi}-{lo}")
        if num_clips is not None and hi >= num_clips:
            raise InputError(
                "reroll", text, f"clip {hi} does not exist (clips are 0-{num_clips - 1})", "use clip numbers in range"
            )
        for k in range(lo, hi + 1):
            out[k] = out.get(k, 0) + 1
    return out


def model_identity(handle: Any) -> str | None:
    """Identity of a loaded model for cache keys: ``cache_identity()`` (model + LoRAs) if it has one."""
    if handle is None:
        return None
    fn = getattr(handle, "cache_identity", None)
    return fn() if callable(fn) else getattr(handle, "identity", None)


def auto_batch_size(runtime: Runtime, num_clips: int) -> int:
    """Clips per forward pass when not given: 2 on CPU; on CUDA, by free memory (coarse; OOM halves it)."""
    if runtime.device.type != "cuda":
        return max(1, min(2, num_clips))
    free, _ = torch.cuda.mem_get_info(runtime.device)
    return max(1, min(num_clips, 8, int(free // (6 * 1024**3))))


@dataclass
class _Job:
    rec: ClipRecord
    prompt: str
    negative: str
    audio: Any = None


@dataclass
class _Context:
    """What every batch needs, shared by the workers (read-only)."""

    kf: torch.Tensor
    prompts: PromptBank
    settings: RefinerSettings
    height: int
    width: int
    pass_image_encoder: dict[str, bool]


def _accepts(fn, name: str) -> bool:
    return name in inspect.signature(fn).parameters


def _audio_window(dit, aligned: AlignedAudio, index: int):
    """Clip ``index``'s audio window when the DiT is audio-conditioned and the sampler takes audio, else None."""
    if getattr(dit, "audio_adapter", None) is None:
        return None
    if not hasattr(aligned, "clip_windows") or "audio" not in {f.name for f in dataclasses.fields(ClipRequest)}:
        log.warning("refiner: the DiT has an audio adapter but this version cannot pass audio windows to it")
        return None
    return aligned.clip_windows(index)


def refine_clips(
    dit,
    vae,
    text_encoder,
    keyframes: Keyframes,
    aligned: AlignedAudio,
    storyline,
    settings: RefinerSettings,
    runtime: Runtime,
    cache_dir: Path,
    reroll: dict[int, int] | str | None = None,
    image_encoder=None,
) -> Clips:
    """Render every sub-clip (or reuse it from ``cache_dir``).

    Args:
        dit / vae / text_encoder: loaded model handles.
        keyframes: one keyframe per seam (``len == clips + 1``) at the refine resolution.
        aligned: timeline, audio and (optionally) audio features.
        storyline: shot prompts (one shot per clip).
        settings: seed, batch size, sampler, negative-frame strength, devices.
        runtime: device and hooks; one ``"clip"`` preview per finished clip.
        cache_dir: folder of finished clips (``clip_<index>_<key>.safetensors``
            plus ``refiner_manifest.json``).
        reroll: ``{clip index: seed offset}`` or a string like ``"3, 7-9"``.
        image_encoder: CLIP-vision encoder for DiTs with an image embedder, or None.
    """
    settings.check()
    tl = aligned.timeline
    if len(keyframes.images) != len(tl.clips) + 1:
        raise InputError(
            "keyframes",
            len(keyframes.images),
            f"the timeline has {len(tl.clips)} clips and needs {len(tl.clips) + 1} keyframes",
            "connect the keyframes made from this timeline",
        )
    if dit.in_channels != 36:
        raise InputError(
            "dit",
            dit.variant,
            "the refiner needs a first-last-frame capable DiT (36 input channels)",
            "load a Wan 2.1 FLF2V / I2V or Wan 2.2 I2V checkpoint",
        )
    if isinstance(reroll, str) or reroll is None:
        reroll = parse_reroll(reroll, len(tl.clips))
    use_ie = image_encoder is not None and getattr(dit, "has_image_embedder", False)
    records, todo = _plan(dit, vae, text_encoder, image_encoder if use_ie else None, keyframes, aligned, storyline,
                          settings, cache_dir, reroll)
    log.info("refiner: %d clips, %d cached, %d to render", len(records), len(records) - len(todo), len(todo))

    bar = runtime.progress(len(records), "refine clips")
    bar.update(len(records) - len(todo))
    try:
        if todo:
            _render(todo, dit, vae, image_encoder if use_ie else None, text_encoder, keyframes, settings, runtime, bar)
    finally:
        bar.close()
    _write_manifest(cache_dir, records, settings)
    return Clips(records=records, width=keyframes.width, height=keyframes.height, keyframes=keyframes.images)


def _plan(dit, vae, text_encoder, image_encoder, keyframes, aligned, storyline, settings, cache_dir, reroll):
    h, w = keyframes.height, keyframes.width
    strength = settings.negative_frame_strength
    model_ids = {
        "dit": model_identity(dit),
        "vae": model_identity(vae),
        "te": model_identity(text_encoder),
        "image_encoder": model_identity(image_encoder),
    }
    records: list[ClipRecord] = []
    todo: list[_Job] = []
    for c in aligned.timeline.clips:
        offset = reroll.get(c.index, 0)
        seed = derive_seed(settings.seed, c.index, salt=offset)
        prompt, negative = storyline.shot_prompt(c.index), storyline.shot_negative(c.index)
        audio = _audio_window(dit, aligned, c.index)
        key = content_key(
            {
                "format": CACHE_FORMAT,
                "models": model_ids,
                "first": keyframes.images[c.index],
                "last": keyframes.images[c.index + 1],
                "prompt": prompt,
                "negative": negative,
                "audio": audio,
                "seed": seed,
                "frames": c.num_frames,
                "sampler": vars(settings.sampler),
                "size": [w, h],
                "negative_frames": [strength, nf.BLUR_FRACTION, nf.SATURATION, nf.CONTRAST, nf.WARM_CAST]
                if strength > 0
                else 0.0,
            }
        )
        path = cache_dir / f"clip_{c.index:05d}_{key}.safetensors"
        rec = ClipRecord(c.index, path, c.num_frames, key, seed=seed, seed_offset=offset)
        records.append(rec)
        if tensor_file_ok(path, ("frames",)):
            rec.cached = True
        else:
            todo.append(_Job(rec, prompt, negative, audio))
    return records, todo


def _render(todo, dit, vae, image_encoder, text_encoder, keyframes, settings, runtime, bar) -> None:
    prompts = PromptBank(text_encoder, runtime)
    prompts.encode_all([j.prompt for j in todo] + [j.negative for j in todo])
    ctx = _Context(
        kf=keyframes.as_model_frames(),
        prompts=prompts,
        settings=settings,
        height=keyframes.height,
        width=keyframes.width,
        pass_image_encoder={
            "encode_condition": image_encoder is not None and _accepts(encode_condition, "image_encoder"),
            "sample_clips": image_encoder is not None and _accepts(sample_clips, "image_encoder"),
        },
    )
    if image_encoder is not None and not any(ctx.pass_image_encoder.values()):
        log.warning("refiner: this sampler version does not take an image encoder; clip_vision is ignored")
    bs = settings.batch_size or auto_batch_size(runtime, len(todo))
    groups: dict[int, list[_Job]] = {}
    for job in todo:
        groups.setdefault(job.rec.num_frames, []).append(job)
    batches = [items[i : i + bs] for items in groups.values() for i in range(0, len(items), bs)]

    def finish(jobs: list[_Job], frames: torch.Tensor) -> None:
        for job, fr in zip(jobs, frames):
            rec = job.rec
            meta = {
                "index": str(rec.index),
                "seed": str(rec.seed),
                "seed_offset": str(rec.seed_offset),
                "key": rec.key,
                "prompt": job.prompt[:500],
            }
            atomic_save_tensors(rec.path, {"frames": fr.contiguous()}, meta)
            runtime.emit_preview("clip", fr)
            bar.update(1)

    modules = [m for h in (dit, vae, image_encoder) for m in _modules_of(h)]
    with runtime.use_models(*modules):
        workers = make_workers(runtime, settings.devices, (dit, vae, image_encoder), bs)
        _run_workers(workers, batches, ctx, finish, runtime)


def _modules_of(handle) -> list[torch.nn.Module]:
    if handle is None:
        return []
    return [v for v in vars(handle).values() if isinstance(v, torch.nn.Module)]


def _run_workers(workers: list[Worker], batches, ctx: _Context, finish, runtime: Runtime) -> None:
    """Single worker: inline. Several: one thread per device, results saved on this thread."""
    if len(workers) == 1:
        for batch in batches:
            runtime.check_interrupt()
            render_resilient(batch, workers[0], lambda b, wk: _render_batch(b, wk, ctx), finish)
        return
    work: queue.Queue = queue.Queue()
    for b in batches:
        work.put(b)
    done: queue.Queue = queue.Queue()
    stop = workers[0].stop

    def loop(worker: Worker) -> None:
        try:
            while not stop.is_set():
                try:
                    batch = work.get_nowait()
                except queue.Empty:
                    break
                render_resilient(batch, worker, lambda b, wk: _render_batch(b, wk, ctx), lambda j, f: done.put(("ok", j, f)))
        except BaseException as exc:  # forwarded to the main thread, which re-raises it
            done.put(("error", exc, None))
        finally:
            done.put(("exit", None, None))

    threads = [threading.Thread(target=loop, args=(wk,), name=f"refiner-{wk.runtime.device}") for wk in workers]
    for t in threads:
        t.start()
    running, error = len(threads), None
    try:
        while running:
            try:
                kind, a, b = done.get(timeout=0.2)
            except queue.Empty:
                runtime.check_interrupt()
                continue
            if kind == "ok":
                finish(a, b)
            elif kind == "error":
                error = error or a
                stop.set()
            else:
                running -= 1
        if error is not None:
            raise error
    finally:
        stop.set()
        for t in threads:
            t.join()


def _render_batch(batch: list[_Job], worker: Worker, ctx: _Context) -> torch.Tensor:
    """Sample and decode one batch on ``worker``: ``[B, T, H, W, 3]`` uint8 on CPU."""
    reqs = []
    for job in batch:
        extra = {"audio": job.audio} if job.audio is not None else {}
        reqs.append(
            ClipRequest(
                num_frames=job.rec.num_frames,
                first_frame=ctx.kf[job.rec.index],
                last_frame=ctx.kf[job.rec.index + 1],
                prompt_embeds=ctx.prompts.get(job.prompt),
                negative_embeds=ctx.prompts.get(job.negative),
                seed=job.rec.seed,
                **extra,
            )
        )
    dit, vae, ie = worker.handles
    rt = worker.runtime
    enc_kw = {"image_encoder": ie} if ctx.pass_image_encoder["encode_condition"] else {}
    cond = encode_condition(vae, reqs, ctx.height, ctx.width, rt, **enc_kw)
    transformer = dit.transformer
    strength = ctx.settings.negative_frame_strength
    if strength > 0:
        drifted = [
            dataclasses.replace(
                r,
                first_frame=nf.drift_degrade(r.first_frame[None])[0],
                last_frame=nf.drift_degrade(r.last_frame[None])[0],
            )
            for r in reqs
        ]
        negative_condition = encode_condition(vae, drifted, ctx.height, ctx.width, rt, **enc_kw)
        transformer = nf.NegativeFrameGuidance(transformer, negative_condition, strength)
    idx = ",".join(str(j.rec.index) for j in batch)
    kw = {"image_encoder": ie} if ctx.pass_image_encoder["sample_clips"] else {}
    lat = sample_clips(transformer, cond, reqs, ctx.settings.sampler, rt, desc=f"clips {idx}", **kw)
    return decode_to_uint8(vae, lat)


def _write_manifest(cache_dir: Path, records: list[ClipRecord], settings: RefinerSettings) -> None:
    import json

    rows = [
        {
            "index": r.index,
            "file": r.path.name,
            "key": r.key,
            "seed": r.seed,
            "seed_offset": r.seed_offset,
            "reused": r.cached,
        }
        for r in records
    ]
    data = {"format": CACHE_FORMAT, "run_seed": settings.seed, "clips": rows}
    atomic_write_text(cache_dir / "refiner_manifest.json", json.dumps(data, indent=1))


__all__ = ["OOM", "ClipRecord", "Clips", "RefinerSettings", "auto_batch_size", "parse_reroll", "refine_clips"]

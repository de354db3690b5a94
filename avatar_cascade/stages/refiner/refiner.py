"""First-Last-Frame Refiner: every sub-clip at full resolution between two keyframes.

Sub-clip ``k`` is generated with its keyframes ``k`` and ``k+1`` fixed (Wan
FLF/I2V concat conditioning; at the clip's first and last frame, or at its
``keyframe_offsets`` when the timeline declares blending overlap), its shot's
local prompt and negative prompt, its time-aligned audio window (when the DiT
carries an audio adapter and the timeline has audio features), both keyframes
through the image encoder (Wan 2.1 I2V/FLF2V DiTs) and its own seed derived
from the run seed and ``k``. Optional negative-frame guidance
(:mod:`.negative_frames`) pushes each clip away from a drifted version of its
keyframes.

Parallel: clips of one length are sampled ``batch_size`` per forward pass;
with several local CUDA devices, one worker thread per device with its own
model replica takes batches from a shared queue (:mod:`.workers`; memory:
one full DiT + VAE per device). An out-of-memory error halves the batch. With
``backend="ray"`` the same batches go to Ray actors on a cluster
(:mod:`.ray_backend`), which load the same model files and return finished
clips; this process writes them into the clip cache.

Resumable: every finished clip is written atomically to the clip cache under a
key of everything that determines it (model + LoRA + adapter identities,
keyframes, prompts, audio window, seed, settings). A killed run recomputes only
missing clips; an edited shot recomputes only its clip. ``reroll`` ("3, 7-9")
gives the listed clips new seeds (offset +1 per mention); the offset is part of
the seed, hence of the key, so a later run with the same string reuses them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from avatar_cascade.artefacts.aligned_audio import AlignedAudio
from avatar_cascade.artefacts.clips import ClipRecord, Clips
from avatar_cascade.artefacts.keyframes import Keyframes
from avatar_cascade.core.cache import (
    atomic_save_tensors,
    atomic_write_text,
    content_key,
    model_identity,
    tensor_file_ok,
)
from avatar_cascade.core.errors import InputError
from avatar_cascade.core.runtime import Runtime
from avatar_cascade.core.seeds import derive_seed
from avatar_cascade.models.handle import WanModels, modules_of
from avatar_cascade.models.presets import preset_for, regime_warnings
from avatar_cascade.sampling.conditioning import ClipRequest, decode_to_uint8, encode_condition
from avatar_cascade.sampling.loop import sample_clips
from avatar_cascade.sampling.memory import auto_batch_size
from avatar_cascade.sampling.prompts import PromptBank
from avatar_cascade.sampling.settings import resolve_sampler, with_negative
from avatar_cascade.stages.refiner import control as vc
from avatar_cascade.stages.refiner import negative_frames as nf
from avatar_cascade.stages.refiner.reroll import parse_reroll
from avatar_cascade.stages.refiner.resolution import at_refine_size
from avatar_cascade.stages.refiner.settings import RefinerSettings
from avatar_cascade.stages.refiner.workers import Worker, make_workers, release_workers, run_batches

log = logging.getLogger(__name__)

CACHE_FORMAT = "3"
__all__ = ["CACHE_FORMAT", "parse_reroll", "refine_clips", "render_requests", "resolve_settings"]
@dataclass
class _Job:
    rec: ClipRecord
    prompt: str
    negative: str
    audio: torch.Tensor | None = None
    control: vc.ClipControl | None = None  # VACE DiTs: the clip's control slice


@dataclass
class _Context:
    """What every batch needs, shared read-only by the workers."""

    kf: torch.Tensor
    prompts: PromptBank
    settings: RefinerSettings
    height: int
    width: int


def refine_clips(
    models: WanModels,
    keyframes: Keyframes,
    aligned: AlignedAudio,
    storyline,
    settings: RefinerSettings,
    runtime: Runtime,
    *,
    cache_dir: Path,
    reroll: dict[int, int] | str | None = None,
    control=None,
    exact_keys: bool = False,
    vace_reference: torch.Tensor | None = None,
) -> Clips:
    """Render every sub-clip (or reuse it from ``cache_dir``).

    Args:
        models: the DiT (36 input channels; it may carry LoRAs and an audio adapter), VAE, text
            encoder and optional image encoder (CLIP vision: needed by DiTs with an image embedder,
            Wan 2.1 I2V/FLF2V; ignored, also by the cache key, for other DiTs).
        keyframes: one keyframe per seam (``len == clips + 1``); the sub-clips render at their size, or at
            ``settings.height`` (the keyframes resized to the refiner's bucket, :mod:`.resolution`).
        aligned: timeline, audio and (optionally) per-frame audio features.
        storyline: shot prompts (one shot per clip).
        settings: seed, batch size, sampler, negative-frame strength, devices.
        runtime: device and hooks; one ``"clip"`` preview per finished clip.
        cache_dir: folder of finished clips (``clip_<index>_<key>.safetensors``
            and ``refiner_manifest.json``).
        reroll: ``{clip index: seed offset}`` or a string like ``"3, 7-9"``.
        control: a ``ControlVideo`` (pose / depth / line art... on the timeline) for a Wan VACE DiT, which
            renders each clip under its exact control slice with its keyframes anchored (:mod:`.control`).
        exact_keys: VACE DiTs: paste the keyframes' pixels over the decoded frames at their offsets.
        vace_reference: VACE DiTs: reference image(s) (IMAGE or ``[H,W,3]``) as VACE reference frames.
    """
    settings.check()
    dit = models.dit
    tl = aligned.timeline
    if len(keyframes.images) != len(tl.clips) + 1:
        raise InputError(
            "keyframes",
            len(keyframes.images),
            f"the timeline has {len(tl.clips)} clips and needs {len(tl.clips) + 1} keyframes",
            "connect the keyframes made from this timeline",
        )
    vc.check_control(dit, control, settings.backend, vace_reference)
    if dit.in_channels != 36 and not vc.is_vace(dit):
        raise InputError(
            "dit",
            dit.variant,
            "the refiner needs a first-last-frame capable DiT (36 input channels)",
            "load a Wan 2.1 FLF2V / I2V or Wan 2.2 I2V checkpoint",
        )
    if not isinstance(reroll, dict):
        reroll = parse_reroll(reroll, len(tl.clips))
    if not dit.has_image_embedder:
        models = dataclasses.replace(models, image_encoder=None)  # its tokens would not be read: not in the key
    keyframes = at_refine_size(keyframes, settings.height, dit, runtime)  # settings.height: 720p from 480p
    settings = resolve_settings(settings, dit, keyframes.width, keyframes.height)
    _warn_regime(dit, aligned, runtime, (keyframes.width, keyframes.height))
    if vc.is_vace(dit) and settings.negative_frame_strength > 0:  # VACE: no negative frames
        settings = _without_negative_frames(settings, runtime)
    refs = vc.fit_references(vace_reference, keyframes.height, keyframes.width)  # in every clip's key
    guided = (control, exact_keys, refs) if vc.is_vace(dit) else None
    records, todo, jobs = _plan(models, keyframes, aligned, storyline, settings, cache_dir, reroll, guided)
    log.info("refiner: %d clips, %d cached, %d to render", len(records), len(records) - len(todo), len(todo))

    bar = runtime.progress(len(records), "refine clips")
    bar.update(len(records) - len(todo))
    rendered_by: dict[int, str] = {}
    gate_rows = None
    try:
        if todo:
            _render(todo, models, keyframes, settings, runtime, bar, rendered_by)
        if settings.gate.enabled:  # score every clip, re-roll the failing ones (gate.py)
            gate_rows = _gate(records, jobs, models, keyframes, aligned, settings, runtime, cache_dir, rendered_by)
    finally:
        bar.close()
    _write_manifest(cache_dir, records, settings, rendered_by, preset_for(dit).name, gate_rows)
    return Clips(records=records, width=keyframes.width, height=keyframes.height, keyframes=keyframes.images)


def _without_negative_frames(settings: RefinerSettings, runtime: Runtime) -> RefinerSettings:
    runtime.warn("refiner", "negative-frame guidance is not applied with a Wan VACE DiT")
    return dataclasses.replace(settings, negative_frame_strength=0.0)


def resolve_settings(settings: RefinerSettings, dit, width: int, height: int):
    """``settings`` with the sampler's ``auto`` values taken from the DiT's preset (InfiniteTalk's when an
    audio adapter is attached) at the clips' size."""
    return dataclasses.replace(settings, sampler=resolve_sampler(settings.sampler, dit, width, height))


def _warn_regime(dit, aligned: AlignedAudio, runtime: Runtime, size: tuple[int, int] | None = None) -> None:
    """Tell the artist about a missing lip-sync and every way this run leaves the DiT's trained regime."""
    tl = aligned.timeline
    if dit.audio_adapter is None:
        unused = " (the audio features are computed but unused)" if aligned.features is not None else ""
        runtime.warn(
            "refiner",
            f"no lip-sync: the DiT has no audio adapter{unused}; attach InfiniteTalk with the Lip-Sync Adapter node",
        )
    longest = max(c.render_frames for c in tl.clips)
    for line in regime_warnings(dit, fps=tl.fps, clip_frames=longest, last_frame=True, size=size):
        runtime.warn("refiner", line)


def _audio_window(dit, aligned: AlignedAudio, index: int) -> torch.Tensor | None:
    """Clip ``index``'s audio feature windows when the DiT has an audio adapter (the aligner says what
    to connect when the timeline has no features), else None."""
    return None if dit.audio_adapter is None else aligned.clip_windows(index, pad="edge")


def _plan(models: WanModels, keyframes, aligned, storyline, settings, cache_dir, reroll, guided=None):
    """Cache records of every clip, and the jobs of those not in the cache (each model's identity in the key)."""
    h, w = keyframes.height, keyframes.width
    s = settings.negative_frame_strength
    dit = models.dit
    named = (("dit", dit), ("vae", models.vae), ("te", models.text_encoder), ("image_encoder", models.image_encoder))
    identities = {k: model_identity(m) for k, m in named}
    records: list[ClipRecord] = []
    todo: list[_Job] = []
    jobs: list[_Job] = []
    for c in aligned.timeline.clips:
        offset = reroll.get(c.index, 0)
        seed = derive_seed(settings.seed, c.index, salt=offset)
        prompt = storyline.shot_prompt(c.index)
        negative = with_negative(storyline.shot_negative(c.index), settings.sampler)
        audio = _audio_window(dit, aligned, c.index)
        kf_offsets = c.keyframe_offsets
        n = c.render_frames
        parts = {
            "format": CACHE_FORMAT,
            "models": identities,
            "first": keyframes.images[c.index],
            "last": keyframes.images[c.index + 1],
            "keyframe_offsets": list(kf_offsets),
            "prompt": prompt,
            "negative": negative,
            "audio": audio,
            "seed": seed,
            "frames": n,
            "sampler": settings.sampler.key_parts(),
            "size": [w, h],
            "negative_frames": [s, *nf.DEGRADE_PARAMS] if s > 0 else 0.0,
        }
        ctl = None if guided is None else vc.clip_control(guided[0], c, aligned.timeline.fps, h, w, *guided[1:])
        if ctl is not None:  # only VACE DiTs: plain runs keep their keys
            parts["vace"] = ctl.key_parts()
        key = content_key(parts)
        path = cache_dir / f"clip_{c.index:05d}_{key}.safetensors"
        rec = ClipRecord(c.index, path, n, key, seed=seed, seed_offset=offset, keyframe_offsets=kf_offsets)
        records.append(rec)
        jobs.append(_Job(rec, prompt, negative, audio, ctl))
        if tensor_file_ok(path, ("frames",), {"frames": (n, h, w, 3)}):  # a clip of the wrong length is redone
            rec.cached = True
        else:
            todo.append(jobs[-1])
    return records, todo, jobs


def _render(todo: list[_Job], models: WanModels, keyframes, settings, runtime, bar, rendered_by) -> None:
    prompts = PromptBank(models.text_encoder, runtime)
    prompts.encode_all([j.prompt for j in todo] + [j.negative for j in todo])
    ctx = _Context(keyframes.as_model_frames(), prompts, settings, keyframes.height, keyframes.width)
    handles = (models.dit, models.vae, models.image_encoder)  # what every worker (replica) runs
    dit = models.dit
    rows = 2 if settings.sampler.guidance != 1.0 else 1
    rows += 1 if any(j.audio is not None for j in todo) else 0
    n0 = todo[0].rec.num_frames
    bs = settings.batch_size or auto_batch_size(runtime, len(todo), dit, n0, ctx.height, ctx.width, rows)
    groups: dict[tuple, list[_Job]] = {}
    for job in todo:  # one length (and one VACE strength) per batch
        groups.setdefault((job.rec.num_frames, job.control and job.control.strength), []).append(job)
    batches = [items[i : i + bs] for items in groups.values() for i in range(0, len(items), bs)]

    def finish(jobs: list[_Job], frames: torch.Tensor, worker: str) -> None:
        for job, fr in zip(jobs, frames):
            r = job.rec
            meta = {
                "index": str(r.index),
                "seed": str(r.seed),
                "seed_offset": str(r.seed_offset),
                "key": r.key,
                "prompt": job.prompt[:500],
            }
            atomic_save_tensors(r.path, {"frames": fr.contiguous()}, meta)
            rendered_by[r.index] = worker
            runtime.emit_preview("clip", fr)
            bar.update(1)

    if settings.backend == "ray":  # the same batches on Ray actors; this process keeps the cache
        from avatar_cascade.stages.refiner.ray_backend import run_on_ray

        render = (render_requests, settings, ctx.height, ctx.width)
        run_on_ray(batches, lambda b: _requests(b, ctx), finish, handles, settings, runtime, bs, render)
        return
    devices = settings.devices
    if dit.offload != "none" and not devices:
        devices = (str(runtime.device),)  # group-offloaded DiTs are not replicated
    with runtime.use_models(*modules_of(*handles)):
        workers = make_workers(runtime, devices, handles, bs)
        try:
            if len(workers) > 1:  # set attention kernels / LoRAs once per replica, not racing inside the threads
                from avatar_cascade.models.dit_runtime import prepare_dit

                for w in workers:
                    prepare_dit(w.handles[0], w.runtime.device)
            run_batches(workers, batches, lambda b, wk: _render_batch(b, wk, ctx), finish, runtime)
        finally:
            release_workers(runtime, workers)


def _render_batch(batch: list[_Job], worker: Worker, ctx: _Context) -> torch.Tensor:
    """Sample and decode one batch on ``worker``: ``[B, T, H, W, 3]`` uint8 on CPU."""
    desc = "clips " + ",".join(str(j.rec.index) for j in batch)
    return render_requests(_requests(batch, ctx), worker, ctx.settings, ctx.height, ctx.width, desc)


def _requests(batch: list[_Job], ctx: _Context) -> list[ClipRequest]:
    """What the DiT samples for each job of ``batch`` (keyframes, prompt embeddings, seed, audio)."""
    reqs = [
        ClipRequest(
            num_frames=j.rec.num_frames,
            known=_keyframes_at_offsets(j.rec, ctx.kf),
            prompt_embeds=ctx.prompts.get(j.prompt),
            negative_embeds=ctx.prompts.get(j.negative),
            seed=j.rec.seed,
            **({"audio": j.audio} if j.audio is not None else {}),
        )
        for j in batch
    ]
    return [r if j.control is None else vc.with_control(r, j.control) for r, j in zip(reqs, batch)]


def render_requests(
    reqs: list[ClipRequest], worker: Worker, settings: RefinerSettings, height: int, width: int, desc: str = "clips"
) -> torch.Tensor:
    """Sample and decode one batch of clips on ``worker`` (a local device's, or a Ray actor's):
    ``[B, T, H, W, 3]`` uint8 on CPU."""
    dit, vae, image_encoder = worker.handles
    rt = worker.runtime

    def sample(cond: torch.Tensor, reference_frames: int = 0) -> torch.Tensor:
        return sample_clips(dit, cond, reqs, settings.sampler, rt, desc=desc, image_encoder=image_encoder,
                            reference_frames=reference_frames)  # fmt: skip

    if isinstance(reqs[0], vc.VaceRequest):
        return vc.sample_vace_batch(dit, vae, reqs, height, width, sample)
    cond, guidance = encode_condition(vae, reqs, height, width), contextlib.nullcontext()
    if (s := settings.negative_frame_strength) > 0:
        drifted = [
            dataclasses.replace(r, known={p: nf.drift_degrade(f[None])[0] for p, f in r.known.items()}) for r in reqs
        ]
        experts = [m for _, m in dit.experts()]
        guidance = nf.negative_frame_guidance(experts, encode_condition(vae, drifted, height, width), s)
    with guidance:
        lat = sample(cond)
    return decode_to_uint8(vae, lat)


def _keyframes_at_offsets(rec: ClipRecord, kf: torch.Tensor) -> dict[int, torch.Tensor]:
    """Clip ``rec``'s known frames: keyframes ``index`` and ``index + 1`` at its ``keyframe_offsets`` (a, z)."""
    a, z = rec.keyframe_offsets
    return {a: kf[rec.index], z: kf[rec.index + 1]}


class _NoBar:
    """Progress of gate re-rolls: not counted in the clip bar (which already reached its total)."""

    def update(self, n: int = 1, preview=None) -> None:
        pass


def _gate(records, jobs, models, keyframes, aligned, settings, runtime, cache_dir, rendered_by) -> dict[int, dict]:
    """The quality gate over every clip; its re-rolls render like any clip (keyframe 0 is the reference)."""
    from avatar_cascade.stages.refiner.gate import run_gate

    def rerender(batch: list[_Job]) -> None:
        _render(batch, models, keyframes, settings, runtime, _NoBar(), rendered_by)

    size = (keyframes.height, keyframes.width)
    return run_gate(records, jobs, keyframes.images[0], aligned, settings.gate, runtime, cache_dir, rerender, size)


def _write_manifest(
    cache_dir: Path, records: list[ClipRecord], settings: RefinerSettings, rendered_by: dict[int, str], preset: str,
    gate_rows: dict[int, dict] | None = None,
) -> None:
    rows = [
        {
            "index": r.index,
            "file": r.path.name,
            "key": r.key,
            "seed": r.seed,
            "seed_offset": r.seed_offset,
            "reused": r.cached,
            "worker": rendered_by.get(r.index),  # host:pid/device of the worker that rendered it (this run)
            **({"gate": gate_rows[r.index]} if gate_rows else {}),
        }
        for r in records
    ]
    data = {
        "format": CACHE_FORMAT,
        "run_seed": settings.seed,
        "preset": preset,
        "sampler": settings.sampler.key_parts(),
        "clips": rows,
    }
    atomic_write_text(cache_dir / "refiner_manifest.json", json.dumps(data, indent=1))

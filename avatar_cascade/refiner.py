"""First-Last-Frame Refiner: every sub-clip at full resolution between two keyframes.

Sub-clip ``k`` is generated with its first frame fixed to keyframe ``k`` and its
last frame to keyframe ``k+1`` (Wan FLF/I2V concat conditioning), its shot's
local prompt and negative prompt, and its own seed derived from the run seed
and ``k``. Clips of the same length are sampled together, ``batch_size`` per
forward pass. Every finished clip is written atomically to the clip cache
under a key of everything that determines it, so an interrupted run resumes
and an edited shot recomputes only its clip.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .audio_aligner import AlignedAudio
from .cache import atomic_save_tensors, content_key, load_tensors
from .errors import InputError
from .keyframes import Keyframes
from .runtime import Runtime
from .sampling import (
    ClipRequest,
    SamplerSettings,
    check_seed,
    decode_to_uint8,
    derive_seed,
    encode_condition,
    sample_clips,
)
from .text_prompts import PromptBank

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RefinerSettings:
    """Refiner sampling and batching."""

    seed: int = 0
    batch_size: int = 0  # 0 = automatic
    sampler: SamplerSettings = field(default_factory=lambda: SamplerSettings(steps=30, guidance=5.0, shift=5.0))

    def check(self) -> RefinerSettings:
        check_seed(self.seed)
        if not 0 <= self.batch_size <= 64:
            raise InputError("batch_size", self.batch_size, "must be 0 (automatic) to 64", "use 0")
        self.sampler.check()
        return self


@dataclass
class ClipRecord:
    index: int
    path: Path
    num_frames: int
    key: str
    cached: bool = False


@dataclass
class Clips:
    """The ``AVATAR_CLIPS`` artefact: one cached file per finished sub-clip (not one giant tensor)."""

    records: list[ClipRecord]
    width: int
    height: int

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


def auto_batch_size(runtime: Runtime, num_clips: int) -> int:
    """Clips per forward pass when not given: 1 on CPU; on CUDA, by free memory (coarse)."""
    if runtime.device.type != "cuda":
        return min(2, num_clips)
    free, _ = torch.cuda.mem_get_info(runtime.device)
    return max(1, min(num_clips, 8, int(free // (6 * 1024**3))))


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
    reroll: dict[int, int] | None = None,
) -> Clips:
    """Render every sub-clip (or reuse it from ``cache_dir``).

    Args:
        dit / vae / text_encoder: loaded model handles.
        keyframes: one keyframe per seam (``len == clips + 1``) at the refine resolution.
        aligned: timeline and audio.
        storyline: shot prompts (one shot per clip).
        settings: seed, batch size, sampler.
        runtime: device and hooks.
        cache_dir: folder of finished clips.
        reroll: ``{clip index: seed offset}`` to regenerate listed clips with new seeds.
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
    reroll = reroll or {}
    h, w = keyframes.height, keyframes.width
    kf = keyframes.as_model_frames()
    model_ids = {"dit": dit.identity, "vae": vae.identity, "te": text_encoder.identity}

    records: list[ClipRecord] = []
    todo: list[tuple[ClipRecord, int, str, str]] = []
    for c in tl.clips:
        seed = derive_seed(settings.seed, c.index, salt=reroll.get(c.index, 0))
        prompt, negative = storyline.shot_prompt(c.index), storyline.shot_negative(c.index)
        key = content_key(
            {
                "models": model_ids,
                "first": keyframes.images[c.index],
                "last": keyframes.images[c.index + 1],
                "prompt": prompt,
                "negative": negative,
                "seed": seed,
                "frames": c.num_frames,
                "sampler": vars(settings.sampler),
                "size": [w, h],
            }
        )
        rec = ClipRecord(c.index, cache_dir / f"clip_{c.index:05d}_{key}.safetensors", c.num_frames, key)
        records.append(rec)
        if rec.path.is_file() and load_tensors(rec.path) is not None:
            rec.cached = True
        else:
            todo.append((rec, seed, prompt, negative))
    log.info("refiner: %d clips, %d cached, %d to render", len(records), len(records) - len(todo), len(todo))

    bar = runtime.progress(len(records), "refine clips")
    bar.update(len(records) - len(todo))
    try:
        if todo:
            prompts = PromptBank(text_encoder, runtime)
            prompts.encode_all([p for _, _, p, n in todo] + [n for _, _, p, n in todo])
            bs = settings.batch_size or auto_batch_size(runtime, len(todo))
            groups: dict[int, list] = {}
            for item in todo:
                groups.setdefault(item[0].num_frames, []).append(item)
            with runtime.use_models(dit.transformer, vae.vae):
                for items in groups.values():
                    for i in range(0, len(items), bs):
                        batch = items[i : i + bs]
                        runtime.check_interrupt()
                        _render_batch(batch, kf, prompts, dit, vae, settings, runtime, h, w)
                        bar.update(len(batch))
    finally:
        bar.close()
    return Clips(records=records, width=w, height=h)


def _render_batch(batch, kf, prompts, dit, vae, settings, runtime, h, w) -> None:
    reqs = [
        ClipRequest(
            num_frames=rec.num_frames,
            first_frame=kf[rec.index],
            last_frame=kf[rec.index + 1],
            prompt_embeds=prompts.get(p),
            negative_embeds=prompts.get(n),
            seed=seed,
        )
        for rec, seed, p, n in batch
    ]
    cond = encode_condition(vae, reqs, h, w, runtime)
    idx = ",".join(str(rec.index) for rec, *_ in batch)
    lat = sample_clips(dit.transformer, cond, reqs, settings.sampler, runtime, desc=f"clips {idx}")
    frames = decode_to_uint8(vae, lat)
    for (rec, seed, p, _), fr in zip(batch, frames):
        atomic_save_tensors(rec.path, {"frames": fr}, {"index": str(rec.index), "seed": str(seed), "prompt": p[:500]})
        runtime.emit_preview("clip", fr)

"""Blueprint DiT Sampler: the whole performance drafted at low resolution and frame rate.

check inputs -> frame the reference (never stretched: :mod:`avatar_cascade.media.framing`) ->
resolve the sampler from the DiT's preset -> plan the windows (:mod:`.plan`) -> reuse a
finished store with the same content key, or render the missing windows -> a lazy
:class:`~avatar_cascade.artefacts.blueprint.Blueprint` over frames on disk.

No drift chain. Every window is an image-to-video generation from the *reference* (Wan I2V
concat conditioning: the framed reference known at frame 0, mask 1; with a Wan 2.1 I2V/FLF2V
DiT and CLIP vision also the reference's image tokens), never from another window's frames.
Window 0 starts at time 0; every later window starts ``lead_frames`` before its chunk and
drops those frames (they carry the reference's pose into the window's motion). So every
blueprint frame is one DiT generation from the reference (anchor depth 1, recorded per
chunk in the store's index) at any duration, and windows are independent: they are sampled
``batch_size`` at a time like refiner clips, and a resumed run renders any missing ones.
Trade-off: the blueprint is not one continuous take (each chunk is its own take from the
reference); it only supplies keyframes, and the refiner makes the motion between them.

Text: the storyline's shot prompt(s) of each window (see ``prompt_mode``) and the sampler's
negative prompt (Wan's default with ``auto``). Audio: when the DiT carries an audio adapter
and the timeline has features, each window gets the audio windows at its frame times.

Control (Wan VACE DiTs only, :mod:`.control`): each window renders under its exact slice of a control
video over its blueprint frames, through the refiner's VACE machinery (:mod:`avatar_cascade.sampling.vace_requests`).

Frames go to disk as they are made (one chunk per window, see
:mod:`avatar_cascade.artefacts.blueprint`); RAM holds one batch of windows. With ``work_dir``
the store is ``work_dir/blueprint/<key>``: a finished one with the same key is reused without
loading the DiT, an interrupted one renders only its missing windows.
"""

from __future__ import annotations

import logging
import tempfile
from fractions import Fraction
from pathlib import Path

import torch

from avatar_cascade.artefacts.aligned_audio import AlignedAudio
from avatar_cascade.artefacts.blueprint import Blueprint, BlueprintStore, prune_stores
from avatar_cascade.artefacts.blueprint_reuse import reuse_store
from avatar_cascade.artefacts.control import ControlVideo
from avatar_cascade.artefacts.timeline import parse_fps
from avatar_cascade.core.cache import content_key, model_identity
from avatar_cascade.core.errors import InputError
from avatar_cascade.core.runtime import Runtime
from avatar_cascade.core.seeds import derive_seed
from avatar_cascade.media.frames import to_model_space
from avatar_cascade.media.framing import frame_reference, output_size, reference_framing
from avatar_cascade.models.handle import WanModels, modules_of
from avatar_cascade.models.presets import preset_for, regime_warnings
from avatar_cascade.models.wan_vace import is_vace
from avatar_cascade.sampling.conditioning import ClipRequest, decode_to_uint8, encode_condition
from avatar_cascade.sampling.loop import sample_clips
from avatar_cascade.sampling.memory import auto_batch_size
from avatar_cascade.sampling.prompts import PromptBank
from avatar_cascade.sampling.settings import SamplerSettings, with_negative
from avatar_cascade.sampling.vace_requests import VaceRequest, sample_vace_batch, with_control
from avatar_cascade.stages.blueprint.control import check_blueprint_dit, control_key, window_control
from avatar_cascade.stages.blueprint.plan import BlueprintWindow, plan_windows, window_times
from avatar_cascade.stages.blueprint.settings import BlueprintSettings

log = logging.getLogger(__name__)

KEY_FORMAT = "blueprint/3"
ANCHOR_DEPTH = 1  # DiT generations between the reference and any blueprint frame


def blueprint_frame_count(aligned: AlignedAudio, fps: Fraction) -> int:
    """Blueprint frames needed to cover every rendered output frame (ceil)."""
    tl = aligned.timeline
    span = Fraction(tl.padded_frames - 1) / tl.fps  # time of the last rendered frame
    return int(-((-span * fps) // 1)) + 1


def _uses_audio(dit, aligned: AlignedAudio) -> bool:
    """True when the DiT has an audio adapter and the timeline has features to feed it."""
    return dit.audio_adapter is not None and aligned.features is not None


def _uses_image_encoder(dit, image_encoder) -> bool:
    return image_encoder is not None and dit.has_image_embedder


def blueprint_key(
    models: WanModels, reference, aligned, windows, settings: BlueprintSettings, sampler, control=None
) -> str:
    """Content key of everything that determines the blueprint's pixels (each model's identity on its own;
    the image encoder only when the DiT reads its tokens; ``reference`` is the framed reference uint8; the
    control only with a VACE DiT)."""
    dit, image_encoder = models.dit, models.image_encoder
    audio = None
    if _uses_audio(dit, aligned):
        audio = aligned.features
    return content_key(
        {
            "format": KEY_FORMAT,
            "models": {
                "dit": model_identity(dit),
                "vae": model_identity(models.vae),
                "text_encoder": model_identity(models.text_encoder),
                "image_encoder": model_identity(image_encoder) if _uses_image_encoder(dit, image_encoder) else None,
            },
            "reference": reference.contiguous(),
            "timeline": aligned.timeline.to_dict(),
            "windows": [[w.start, w.length, w.chunk_start, w.count, w.prompt, w.negative] for w in windows],
            "settings": settings.key_parts(sampler),
            "audio": audio,
            **control_key(dit, control),
        }
    )


def blueprint_size(models: WanModels, reference: torch.Tensor, aligned, settings: BlueprintSettings):
    """``(width, height, resolved sampler, preset)`` of the blueprint of ``reference`` with this DiT."""
    preset = preset_for(models.dit, with_audio=_uses_audio(models.dit, aligned))
    ref_hw = reference.shape[:2]
    width, height = output_size(
        settings.framing, (int(ref_hw[1]), int(ref_hw[0])), settings.width, settings.height, preset.size_multiple
    )
    return width, height, settings.sampler.resolve(preset, width, height), preset


def render_blueprint(
    models: WanModels,
    reference: torch.Tensor,
    aligned: AlignedAudio,
    storyline,
    settings: BlueprintSettings,
    runtime: Runtime,
    *,
    work_dir: Path | None = None,
    keep_stores: int = 2,
    control: ControlVideo | None = None,
) -> Blueprint:
    """Render (or reuse) the blueprint of the whole timeline.

    Args:
        models: the DiT (36 input channels, or a Wan VACE DiT: the reference at frame 0 with mask 0 in its
            control video, see :mod:`.control`; its audio adapter, if any, hears the audio features), VAE,
            text encoder and optional image encoder (CLIP vision: with a Wan 2.1 I2V/FLF2V DiT every
            window gets the reference's image tokens; ignored, also by the key, for other DiTs).
        reference: reference image ``[H,W,3]`` float 0..1 (any size: framed, never stretched).
        aligned: the Audio Aligner's output (timeline + audio (+ features)).
        storyline: the Director's storyline (global + per-shot prompts).
        settings: size and framing, rate, windows, seed, batching, sampler (``auto`` = the DiT's preset).
        runtime: device and hooks (one progress step and one ``"blueprint"`` preview per window;
            warnings the artist must see go to ``runtime.warn``).
        work_dir: folder for the store (``work_dir/blueprint/<key>``) and its reuse; None = a
            temporary folder removed when the returned Blueprint is garbage-collected.
        keep_stores: finished stores kept under ``work_dir/blueprint`` (the newest ones).
        control: a ``ControlVideo`` for a Wan VACE DiT: every window renders under its exact slice of it
            over the blueprint's frames (:mod:`.control`); refused without a VACE DiT.
    """
    settings.check()
    dit = models.dit
    check_blueprint_dit(dit, control)
    tl = aligned.timeline
    bp_fps = parse_fps(settings.fps)
    if bp_fps > tl.fps:
        raise InputError(
            "blueprint_fps", settings.fps, f"is higher than the video fps {tl.fps}", "use a lower rate, e.g. 8"
        )
    width, height, sampler, preset = blueprint_size(models, reference, aligned, settings)
    for line in regime_warnings(dit, clip_frames=settings.window_frames):
        runtime.warn("blueprint", line)
    if dit.audio_adapter is None:
        runtime.warn("blueprint", "the DiT has no audio adapter: the blueprint's motion does not follow the speech")
    ref_small = frame_reference(reference, width, height, settings.framing)
    total = blueprint_frame_count(aligned, bp_fps)
    windows = plan_windows(
        tl, storyline, bp_fps, total, settings.window_frames, settings.lead_frames, settings.prompt_mode
    )
    key = blueprint_key(models, ref_small, aligned, windows, settings, sampler, control)
    root, folder, reused = _store_folder(work_dir, key)
    if reused is not None:
        return reused
    extra = {
        "window_starts": [w.chunk_start for w in windows],
        "window_frames": settings.window_frames,
        "lead_frames": settings.lead_frames,
        "window_shots": [list(w.shots) for w in windows],
        "anchoring": "reference",
        "anchor_depths": [ANCHOR_DEPTH] * len(windows),
        "framing": reference_framing(reference, width, height, settings.framing).to_dict(),
        "preset": preset.name,
        "sampler": sampler.key_parts(),
    }
    store = BlueprintStore.open(folder, key, bp_fps, width, height, [(w.chunk_start, w.count) for w in windows], extra)
    _render_windows(store, windows, models, ref_small, aligned, settings, sampler, runtime, control)
    store.mark_complete()
    if root is not None:
        prune_stores(root, keep_stores, folder)
    return Blueprint(folder, store.meta, temporary=root is None)


def _store_folder(work_dir: Path | None, key: str):
    """``(root, folder, finished blueprint or None)`` of the store of ``key`` (a temporary folder without
    ``work_dir``)."""
    if work_dir is None:
        return None, Path(tempfile.mkdtemp(prefix="avatar_cascade_blueprint_")), None
    root = Path(work_dir) / "blueprint"
    folder = root / key
    return root, folder, reuse_store(folder, key)  # validated (leased): a damaged window is rendered again


def _reference_tokens(models: WanModels, ref_small: torch.Tensor, runtime: Runtime):
    """CLIP-vision tokens ``[1, T, D]`` of the framed reference when the DiT reads them, else None."""
    if not _uses_image_encoder(models.dit, models.image_encoder):
        return None
    from avatar_cascade.models.clip_vision import frame_tokens

    with runtime.use_models(*models.image_encoder.modules()):
        return frame_tokens(models.image_encoder, [(to_model_space(ref_small[None])[0], None)])


def _render_windows(store, windows, models: WanModels, ref_small, aligned, settings, sampler, runtime, control=None):
    """Render every window not yet in ``store`` (any order: windows do not depend on each other); with a VACE
    DiT each under its control slice (one VACE strength per batch)."""
    dit, vae = models.dit, models.vae
    bp_fps = parse_fps(settings.fps)
    todo = [w for w in windows if store.load_chunk(w.index) is None]
    if len(todo) < len(windows):
        log.info("blueprint: %d of %d windows already finished", len(windows) - len(todo), len(windows))
    if not todo:
        return
    h, w_px = ref_small.shape[:2]
    use_audio = _uses_audio(dit, aligned)
    negatives = {x.index: with_negative(x.negative, sampler) for x in todo}
    prompts = PromptBank(models.text_encoder, runtime)
    prompts.encode_all([x.prompt for x in todo] + list(negatives.values()))
    image_embeds = _reference_tokens(models, ref_small, runtime)
    ref_known = to_model_space(ref_small[None])[0]
    guided = {x.index: window_control(control, x, bp_fps, aligned.timeline.fps, h, w_px) for x in todo} if (
        is_vace(dit)) else {}  # fmt: skip
    groups: dict[tuple, list[BlueprintWindow]] = {}
    for win in todo:
        groups.setdefault((win.length, guided[win.index].strength if guided else None), []).append(win)
    bar = runtime.progress(len(windows), "blueprint windows")
    bar.update(len(windows) - len(todo))
    try:
        with runtime.use_models(*modules_of(dit, vae)):
            for (length, _), items in groups.items():
                bs = settings.batch_size or auto_batch_size(runtime, len(items), dit, length, h, w_px)
                for lo in range(0, len(items), bs):
                    runtime.check_interrupt()
                    batch = items[lo : lo + bs]
                    reqs = [
                        ClipRequest(
                            num_frames=win.length,
                            known={0: ref_known},  # every window starts from the reference
                            prompt_embeds=prompts.get(win.prompt),
                            negative_embeds=prompts.get(negatives[win.index]),
                            seed=derive_seed(settings.seed, win.index, salt=1),
                            audio=aligned.frame_windows(window_times(win, bp_fps), pad="edge") if use_audio else None,
                        )
                        for win in batch
                    ]
                    reqs = [with_control(r, guided[win.index]) for r, win in zip(reqs, batch)] if guided else reqs
                    frames = sample_windows(dit, vae, reqs, sampler, runtime, image_embeds, h, w_px, batch)
                    for win, fr in zip(batch, frames):
                        store.write_chunk(win.index, fr[win.lead : win.lead + win.count].contiguous(), None)
                        runtime.emit_preview("blueprint", fr)
                        bar.update(1)
    finally:
        bar.close()


def sample_windows(dit, vae, reqs, sampler: SamplerSettings, runtime, image_embeds, h, w, batch) -> torch.Tensor:
    """Sample and decode a batch of windows: ``[B, length, h, w, 3]`` uint8 (VACE requests under their control)."""
    img = None if image_embeds is None else image_embeds.expand(len(reqs), -1, -1)
    desc = "blueprint windows " + ",".join(str(win.index) for win in batch)

    def sample(cond: torch.Tensor, reference_frames: int = 0) -> torch.Tensor:
        return sample_clips(dit, cond, reqs, sampler, runtime, desc=desc, image_embeds=img,
                            reference_frames=reference_frames)  # fmt: skip

    if isinstance(reqs[0], VaceRequest):
        return sample_vace_batch(dit, vae, reqs, h, w, sample)
    return decode_to_uint8(vae, sample(encode_condition(vae, reqs, h, w)))

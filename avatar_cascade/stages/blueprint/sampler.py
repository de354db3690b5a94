"""Blueprint DiT Sampler: the whole performance drafted at low resolution and frame rate.

check inputs -> plan the windows (:mod:`.blueprint_plan`) -> reuse a finished
store with the same content key, or render window by window -> a lazy
:class:`~avatar_cascade.artefacts.blueprint.Blueprint` over frames on disk.

Windows share context. Window ``w`` renders ``window_frames`` (4n+1) frames; its
first ``overlap_frames`` (K) frames are *known* in the Wan I2V concat
conditioning (mask 1) and set to the previous window's last K frames, and
after sampling they are cross-faded with those frames (new window's weight
``(j+1)/(K+1)`` on overlap frame ``j``). K = 1 is plain continuation from the
last frame; K = 1 + 4m makes whole latent frames known. The first window starts
from the reference image.

Re-anchoring, so identity and colour do not drift from window to window:

* the continuation frames are colour-matched to the reference (per-channel
  mean/std transfer, ``reanchor`` 0..1) *before* they condition the next window.
  Only the conditioning is corrected; the stored frames stay as generated. A
  colour cast that grows in one window is therefore shrunk before the next one
  inherits it instead of compounding (K > 1 cross-fading hides the small jump);
* with a Wan 2.1 I2V/FLF2V DiT (image embedder) and a CLIP-vision encoder, the
  image tokens of *every* window are the reference's, not the continuation
  frame's, so the identity cue never comes from generated frames.

Text: the storyline's shot prompt(s) of each window (see ``prompt_mode``).
Audio: when the DiT carries an audio adapter and the timeline has features,
each window gets the audio windows at its blueprint frame times.

Frames go to disk as they are made (one chunk per window, see
:mod:`.blueprint_store`); RAM holds one window plus K tail frames. With
``work_dir`` the store is ``work_dir/blueprint/<key>``: a finished one with the
same key is reused without loading the DiT, an interrupted one resumes after
its last finished window.
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
from avatar_cascade.artefacts.timeline import parse_fps
from avatar_cascade.core.cache import content_key, model_identity
from avatar_cascade.core.errors import InputError
from avatar_cascade.core.runtime import Runtime
from avatar_cascade.core.seeds import derive_seed
from avatar_cascade.media.frames import match_colour, reference_uint8, to_model_space
from avatar_cascade.models.handle import WanModels, modules_of
from avatar_cascade.sampling.conditioning import ClipRequest, decode_to_uint8, encode_condition
from avatar_cascade.sampling.loop import sample_clips
from avatar_cascade.sampling.prompts import PromptBank
from avatar_cascade.stages.blueprint.plan import BlueprintWindow, plan_windows
from avatar_cascade.stages.blueprint.settings import BlueprintSettings

log = logging.getLogger(__name__)

KEY_FORMAT = "blueprint/2"


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


def window_times(window: BlueprintWindow, bp_fps: Fraction) -> list[Fraction]:
    """Time in seconds (exact) of every frame the window renders."""
    return [Fraction(window.start + j) / bp_fps for j in range(window.length)]


def blueprint_key(models: WanModels, reference, aligned, windows, settings: BlueprintSettings) -> str:
    """Content key of everything that determines the blueprint's pixels (each model's identity on its own;
    the image encoder only when the DiT reads its tokens)."""
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
            "reference": reference.float().contiguous(),
            "timeline": aligned.timeline.to_dict(),
            "windows": [[w.start, w.length, w.count, w.prompt, w.negative] for w in windows],
            "settings": settings.key_parts(),
            "audio": audio,
        }
    )


def sample_window(dit, vae, request: ClipRequest, settings, runtime, image_embeds, desc: str) -> torch.Tensor:
    """Render one window, its first K frames known (``request.known``): ``[length, h, w, 3]`` uint8 frames."""
    cond = encode_condition(vae, [request], settings.height, settings.width)
    lat = sample_clips(dit, cond, [request], settings.sampler, runtime, desc=desc, image_embeds=image_embeds)
    return decode_to_uint8(vae, lat)[0]


def cross_fade(previous: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
    """Blend K overlap frames ``[K,h,w,3]`` uint8: new window's weight ``(j+1)/(K+1)`` on frame ``j``."""
    k = previous.shape[0]
    a = torch.arange(1, k + 1, dtype=torch.float32).div(k + 1).view(k, 1, 1, 1)
    return (previous.float() * (1 - a) + new.float() * a).round().clamp(0, 255).to(torch.uint8)


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
) -> Blueprint:
    """Render (or reuse) the blueprint of the whole timeline.

    Args:
        models: the DiT (36 input channels; its audio adapter, if any, hears the audio features), VAE,
            text encoder and optional image encoder (CLIP vision: with a Wan 2.1 I2V/FLF2V DiT every
            window gets the reference's image tokens; ignored, also by the key, for other DiTs).
        reference: reference image ``[H,W,3]`` float 0..1.
        aligned: the Audio Aligner's output (timeline + audio (+ features)).
        storyline: the Director's storyline (global + per-shot prompts).
        settings: resolution, rate, windows, re-anchoring, seed, sampler.
        runtime: device and hooks (one progress step and one ``"blueprint"`` preview per window).
        work_dir: folder for the store (``work_dir/blueprint/<key>``) and its reuse; None = a
            temporary folder removed when the returned Blueprint is garbage-collected.
        keep_stores: finished stores kept under ``work_dir/blueprint`` (the newest ones).
    """
    settings.check()
    dit = models.dit
    if dit.in_channels != 36:
        raise InputError(
            "dit",
            dit.variant,
            "the blueprint needs an image-to-video DiT (36 input channels)",
            "load a Wan 2.1 I2V / FLF2V or Wan 2.2 I2V checkpoint",
        )
    tl = aligned.timeline
    bp_fps = parse_fps(settings.fps)
    if bp_fps > tl.fps:
        raise InputError(
            "blueprint_fps", settings.fps, f"is higher than the video fps {tl.fps}", "use a lower rate, e.g. 8"
        )
    total = blueprint_frame_count(aligned, bp_fps)
    windows = plan_windows(
        tl, storyline, bp_fps, total, settings.window_frames, settings.overlap_frames, settings.prompt_mode
    )
    key = blueprint_key(models, reference, aligned, windows, settings)
    if work_dir is not None:
        root = Path(work_dir) / "blueprint"
        folder = root / key
        reused = reuse_store(folder, key)  # validated: a damaged window is re-rendered below
        if reused is not None:
            return reused
    else:
        root, folder = None, Path(tempfile.mkdtemp(prefix="avatar_cascade_blueprint_"))
    store = BlueprintStore.open(
        folder,
        key,
        bp_fps,
        settings.width,
        settings.height,
        [(w.start, w.count) for w in windows],
        {
            "window_starts": [w.start for w in windows],
            "window_frames": settings.window_frames,
            "overlap_frames": settings.overlap_frames,
            "window_shots": [list(w.shots) for w in windows],
        },
    )
    _render_windows(store, windows, models, reference, aligned, settings, runtime)
    store.mark_complete()
    if root is not None:
        prune_stores(root, keep_stores, folder)
    return Blueprint(folder, store.meta, temporary=root is None)


def _render_windows(store, windows, models: WanModels, reference, aligned, settings, runtime):
    """Render every window not yet in ``store`` (resuming after the last finished one)."""
    dit, vae, image_encoder = models.dit, models.vae, models.image_encoder
    bp_fps = parse_fps(settings.fps)
    done, prev_tail = 0, None
    for w in windows:
        data = store.load_chunk(w.index)
        if data is None:
            break
        done, prev_tail = done + 1, data.get("tail")
    if done:
        log.info("blueprint: resuming after %d finished windows of %d", done, len(windows))
    todo = windows[done:]
    if not todo:
        return
    h, w_px = settings.height, settings.width
    ref_small = reference_uint8(reference, h, w_px)
    use_audio = _uses_audio(dit, aligned)
    prompts = PromptBank(models.text_encoder, runtime)
    prompts.encode_all([x.prompt for x in todo] + [x.negative for x in todo])
    image_embeds = None
    if _uses_image_encoder(dit, image_encoder):
        from avatar_cascade.models.clip_vision import frame_tokens

        with runtime.use_models(*image_encoder.modules()):
            image_embeds = frame_tokens(image_encoder, [(to_model_space(ref_small[None])[0], None)])

    bar = runtime.progress(len(windows), "blueprint windows")
    bar.update(done)
    try:
        with runtime.use_models(*modules_of(dit, vae)):
            for win in todo:
                runtime.check_interrupt()
                if prev_tail is None:
                    known = to_model_space(ref_small[None])
                else:
                    known = to_model_space(match_colour(prev_tail, ref_small, settings.reanchor))
                req = ClipRequest(
                    num_frames=win.length,
                    known=dict(enumerate(known)),  # the first K frames of the window
                    prompt_embeds=prompts.get(win.prompt),
                    negative_embeds=prompts.get(win.negative),
                    seed=derive_seed(settings.seed, win.index, salt=1),
                    audio=aligned.frame_windows(window_times(win, bp_fps), pad="edge") if use_audio else None,
                )
                frames = sample_window(dit, vae, req, settings, runtime, image_embeds, f"blueprint window {win.index}")
                last = win.index == windows[-1].index
                k = settings.overlap_frames
                tail = None if last else frames[win.length - k : win.length].clone()
                if prev_tail is not None:
                    frames[: prev_tail.shape[0]] = cross_fade(prev_tail, frames[: prev_tail.shape[0]])
                store.write_chunk(win.index, frames[: win.count].contiguous(), tail)
                prev_tail = tail
                runtime.emit_preview("blueprint", frames)
                bar.update(1)
    finally:
        bar.close()

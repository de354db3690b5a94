"""Keyframe Extractor: one keyframe per seam, taken from the blueprint.

check inputs -> reuse a saved result with the same content key, or: for every
seam, score the blueprint frames of its window (:mod:`.keyframe_scores`) and
keep the best -> lift the chosen frames to the refine resolution (framed, never
stretched; a DiT refinement anchored on the reference, :mod:`.lift`, on whenever a
DiT is connected; colour matching to the reference) -> package :class:`Keyframes`
(every score kept, unlifted and lifted identity / sharpness, and each keyframe's
``anchor_depth``: the DiT generations between the reference image and it) and a
contact sheet.

The first seam is the reference image itself, so the video opens on the
artist's picture. Seam ``k``'s candidates are the blueprint frames within
``search_radius_s`` of the seam time that lie strictly between the neighbour
seams' times (the frame nearest the seam is always a candidate). The total
score is the weighted mean of the scores; weights default to
:data:`~avatar_cascade.stages.keyframes.scores.DEFAULT_WEIGHTS`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import torch

from avatar_cascade.artefacts.aligned_audio import AlignedAudio
from avatar_cascade.artefacts.blueprint import Blueprint
from avatar_cascade.artefacts.keyframes import KEY_FORMAT, Keyframes
from avatar_cascade.core.cache import content_key, model_identity
from avatar_cascade.core.runtime import Runtime
from avatar_cascade.media.frames import match_colour
from avatar_cascade.media.framing import fit_frames, frame_reference, output_size, reference_framing
from avatar_cascade.models.detectors import detector_identity
from avatar_cascade.models.handle import WanModels, modules_of
from avatar_cascade.models.presets import preset_for
from avatar_cascade.sampling.settings import resolve_sampler
from avatar_cascade.stages.keyframes.face_scores import CandidateScorer
from avatar_cascade.stages.keyframes.lift import lift_keyframes
from avatar_cascade.stages.keyframes.scores import AudioEnergy, check_weights, identity_clip, identity_proxy, sharpness
from avatar_cascade.stages.keyframes.settings import KeyframeSettings

log = logging.getLogger(__name__)

CHUNK = 16


def candidate_window(blueprint: Blueprint, timeline, seam: int, radius: Fraction) -> tuple[int, int, int]:
    """``(lo, hi, centre)`` blueprint frames (inclusive) allowed for seam number ``seam``."""
    seams, fps, bf = timeline.seams, timeline.fps, blueprint.fps
    t = Fraction(seams[seam]) / fps
    centre = blueprint.index_at(t)
    lo = max(0, math.ceil((t - radius) * bf))
    hi = min(len(blueprint) - 1, math.floor((t + radius) * bf))
    if seam > 0:
        lo = max(lo, math.floor(Fraction(seams[seam - 1]) / fps * bf) + 1)
    if seam + 1 < len(seams):
        hi = min(hi, math.ceil(Fraction(seams[seam + 1]) / fps * bf) - 1)
    return min(lo, centre), max(hi, centre), centre


def keyframes_key(blueprint, aligned, reference, settings: KeyframeSettings, clip_vision, lift_parts, size) -> str:
    """Content key of everything that determines the keyframes (the same parts as before settings objects)."""
    return content_key(
        {
            "format": KEY_FORMAT,
            "blueprint": blueprint.key,
            "reference": reference.float().contiguous(),
            "timeline": aligned.timeline.to_dict(),
            "audio": aligned.audio.waveform,
            "size": list(size),
            "framing": settings.framing,
            "radius": str(_radius(settings)),
            "weights": check_weights(settings.weights),
            "colour_match": settings.colour_match,
            "clip_vision": model_identity(clip_vision),
            "detectors": detector_identity(settings.face_detectors, settings.landmarks_68),
            "lift": settings.lift.key_parts(),
            "lift_parts": lift_parts,
        }
    )


def _radius(settings: KeyframeSettings) -> Fraction:
    return Fraction(settings.search_radius_s).limit_denominator(1000)


def _lift_prompts(storyline, timeline, n_seams: int) -> list[tuple[str, str]]:
    """Prompt of every seam 1.. for lifting: the shot starting there (the last seam: the last shot)."""
    if storyline is None:
        return [("", "")] * (n_seams - 1)
    last = len(timeline.clips) - 1
    return [(storyline.shot_prompt(min(k, last)), storyline.shot_negative(min(k, last))) for k in range(1, n_seams)]


def _lift_inputs(settings: KeyframeSettings, models: WanModels | None, clip_vision, storyline, timeline, size):
    """``(models, prompts, key parts)`` of the lift, or ``(None, [], None)`` when it is off or no DiT is
    connected.

    The lift's image encoder is the bundle's, else ``clip_vision``. The key parts are the DiT, VAE
    and text-encoder identities, the resolved sampler and the prompts; ``clip_vision`` is in the key
    anyway, so a lift encoder joins them only when the DiT reads its tokens and it is another model.
    """
    if not settings.lift.enabled:
        return None, [], None
    if models is None or models.dit is None or models.vae is None or models.text_encoder is None:
        return None, [], None
    if models.dit.in_channels != 36:  # e.g. a Wan VACE DiT (a guided blueprint): the lift is an I2V img2img pass
        return None, [], None
    if models.image_encoder is None and clip_vision is not None:
        models = replace(models, image_encoder=clip_vision)
    prompts = _lift_prompts(storyline, timeline, len(timeline.seams))
    ids = {n: model_identity(m) for n, m in (("dit", models.dit), ("vae", models.vae), ("te", models.text_encoder))}
    encoder = model_identity(models.image_encoder)
    if encoder is not None and models.dit.has_image_embedder and encoder != model_identity(clip_vision):
        ids["image_encoder"] = encoder
    sampler = resolve_sampler(settings.lift.sampler, models.dit, size[0], size[1], with_audio=False)
    return models, prompts, {"models": ids, "prompts": prompts, "sampler": sampler.key_parts()}


def keyframe_size(settings: KeyframeSettings, reference: torch.Tensor, models: WanModels | None) -> tuple[int, int]:
    """``(width, height)`` of the keyframes (and so of the refined clips): framed from the reference."""
    multiple = preset_for(models.dit).size_multiple if models is not None and models.dit is not None else 16
    h, w = reference.shape[:2]
    return output_size(settings.framing, (int(w), int(h)), settings.width, settings.height, multiple)


def extract_keyframes(
    blueprint: Blueprint,
    aligned: AlignedAudio,
    reference: torch.Tensor,
    settings: KeyframeSettings,
    runtime: Runtime,
    *,
    models: WanModels | None = None,
    clip_vision=None,
    storyline=None,
    work_dir: Path | None = None,
) -> Keyframes:
    """Pick, lift and colour-match one keyframe per seam (or reuse them from ``work_dir``).

    Args:
        blueprint: the low-res blueprint.
        aligned: timeline (seams) and audio (mouth-state energy).
        reference: the reference image ``[H,W,3]`` float 0..1.
        settings: refine resolution (pixels, multiples of 16), candidate search radius (seconds),
            score weights, colour-match strength (0..1) and the optional DiT lift
            (``lift.denoise`` 0 = off); see :class:`KeyframeSettings`.
        runtime: device and hooks (one progress step per seam; a ``"keyframes"`` preview
            of the contact sheet).
        models: the lift's DiT, VAE, text encoder and optional image encoder (needed only when
            the lift is on; its image encoder gives Wan 2.1 I2V/FLF2V DiTs the reference's tokens).
        clip_vision: CLIP-vision handle for identity by image embeddings (else the statistics
            proxy); None = ``models.image_encoder`` when there is one. It is also the lift's image
            encoder when ``models`` has none.
        storyline: shot prompts for the lift (else an empty prompt).
        work_dir: folder for ``keyframes/``, ``keyframes.json`` and their reuse.
    """
    settings.check()
    if clip_vision is None and models is not None:
        clip_vision = models.image_encoder
    tl = aligned.timeline
    size = keyframe_size(settings, reference, models)
    lift_models, lift_prompts, lift_parts = _lift_inputs(settings, models, clip_vision, storyline, tl, size)
    if settings.lift.enabled and lift_models is None:
        runtime.warn(
            "keyframes",
            "not lifted: keyframes are upscaled blueprint frames (soft); connect dit, vae and text_encoder "
            "(an image-to-video DiT, not VACE) to the Keyframe Extractor for the DiT lift at the refine size",
        )
    key = keyframes_key(blueprint, aligned, reference, settings, clip_vision, lift_parts, size)
    if work_dir is not None:
        cached = Keyframes.load(work_dir)
        if cached is not None and cached.key == key:
            log.info("keyframes: reusing %d keyframes from %s", len(cached.images), work_dir)
            cached.reused = True
            _preview(cached, runtime)
            return cached
    weights = check_weights(settings.weights)
    radius = _radius(settings)
    sources, scores = select_keyframes(
        blueprint, aligned, reference, weights, radius, runtime, clip_vision=clip_vision, settings=settings
    )
    images = _lift_and_match(
        blueprint, sources, scores, reference, settings, runtime, lift_prompts, lift_models, size, clip_vision
    )
    kf = Keyframes(
        images=images, frame_indices=list(tl.seams), source_indices=sources, scores=scores, weights=weights, key=key
    )
    if work_dir is not None:
        kf.save(work_dir)
    _preview(kf, runtime)
    return kf


def _lift_and_match(blueprint, sources, scores, reference, settings, runtime, prompts, models, size, clip_vision):
    """The keyframe images ``[S,H,W,3]`` uint8: the framed reference, then the chosen blueprint frames framed
    to the refine size, lifted (when a DiT is connected) and colour-matched to the reference. Records each
    keyframe's ``anchor_depth`` and its identity / sharpness before and after the lift in ``scores``."""
    width, height = size
    ref_full = frame_reference(reference, width, height, settings.framing)
    scores[0]["anchor_depth"] = 0
    fr = reference_framing(reference, width, height, settings.framing)
    scores[0]["framing"] = fr.describe()
    scores[0]["framing_caption"] = [f"{fr.mode} {width}x{height}", f"from {fr.source[0]}x{fr.source[1]}"]
    images = [ref_full[None]]
    if len(sources) > 1:
        # float copies at the refine size are made CHUNK keyframes at a time (10 minutes = ~190 keyframes)
        plain = torch.cat(
            [
                fit_frames(torch.stack([blueprint.frame(i) for i in sources[lo : lo + CHUNK]]), width, height)
                for lo in range(1, len(sources), CHUNK)
            ]
        )
        lifted = plain
        if models is not None:
            seams = list(range(1, len(sources)))
            lift = settings.lift
            lifted = lift_keyframes(plain, seams, prompts, reference, models, lift, runtime, framing=settings.framing)
        _record_lift(scores, sources, blueprint, plain, lifted, ref_full, clip_vision, runtime, models is not None)
        strength = settings.colour_match
        images += [match_colour(lifted[lo : lo + CHUNK], ref_full, strength) for lo in range(0, len(lifted), CHUNK)]
    return torch.cat(images)


def _record_lift(scores, sources, blueprint, plain, lifted, ref_full, clip_vision, runtime, was_lifted) -> None:
    """Anchor depth of every keyframe and its identity / sharpness at the refine size, unlifted and lifted."""
    from avatar_cascade.stages.keyframes.scores import clip_embedding

    with runtime.use_models(*modules_of(clip_vision)):
        ref_emb = clip_embedding(clip_vision, ref_full[None])[0] if clip_vision is not None else None

        def judge(frames):
            out = []
            for lo in range(0, len(frames), CHUNK):
                x = frames[lo : lo + CHUNK]
                ident = identity_clip(clip_vision, x, ref_emb) if ref_emb is not None else identity_proxy(x, ref_full)
                out += list(zip(ident.tolist(), sharpness(x).tolist()))
            return out

        before = judge(plain)
        after = judge(lifted) if was_lifted else before
    for k, sc in enumerate(scores[1:]):
        depth = blueprint.anchor_depth(sources[k + 1])
        sc["lifted"] = was_lifted
        sc["anchor_depth"] = None if depth is None else depth + (1 if was_lifted else 0)
        sc["unlifted_scores"] = {"identity": round(before[k][0], 4), "sharpness": round(before[k][1], 4)}
        sc["lifted_scores"] = {"identity": round(after[k][0], 4), "sharpness": round(after[k][1], 4)}


def _preview(kf: Keyframes, runtime: Runtime) -> None:
    if runtime.preview is None:
        return
    from avatar_cascade.media.contact_sheet import as_uint8_tensor

    runtime.emit_preview("keyframes", as_uint8_tensor(kf.contact_sheet()))


def select_keyframes(
    blueprint, aligned, reference, weights, radius: Fraction, runtime: Runtime, clip_vision=None, settings=None
):
    """Score every seam's candidates and pick the best: ``(source_indices, scores)`` (seam 0 = reference).

    ``settings`` (a :class:`KeyframeSettings`) chooses the face detectors (``face_detectors``,
    ``landmarks_68``); None = the defaults."""
    settings = settings or KeyframeSettings()
    tl = aligned.timeline
    n = len(blueprint)
    framing = blueprint.meta.get("framing", {}).get("mode", "crop")
    ref_small = frame_reference(reference, blueprint.width, blueprint.height, framing)
    sources: list[int | None] = [None]
    scores: list[dict] = [{"source": "reference", "seam_frame": tl.seams[0], "time_s": 0.0}]
    previous = ref_small
    denom = max(sum(weights.values()), 1e-9)
    bar = runtime.progress(len(tl.seams), "keyframes")
    bar.update(1)
    with runtime.use_models(*modules_of(clip_vision)):
        scorer = _scorer(aligned, ref_small, blueprint, settings, runtime, clip_vision)
        methods = scorer.methods()
        for k in range(1, len(tl.seams)):
            runtime.check_interrupt()
            lo, hi, centre = candidate_window(blueprint, tl, k, radius)
            a, b = max(0, lo - 1), min(n, hi + 2)
            block = blueprint.frames(a, b)
            cand = block[lo - a : hi - a + 1]
            idx = torch.arange(lo, hi + 1)
            before = block[(idx - 1).clamp(min=0) - a]
            after = block[(idx + 1).clamp(max=n - 1) - a]
            times = [float(Fraction(int(i)) / blueprint.fps) for i in idx]
            s = scorer.score(cand, before, after, times, previous)
            s["centre"] = 1 - (idx - centre).abs().float() / (max(centre - lo, hi - centre) + 1)
            total = sum(weights[name] * v for name, v in s.items() if name in weights) / denom
            best = int(total.argmax())
            chosen = lo + best
            sources.append(chosen)
            scores.append(
                {
                    "source": "blueprint",
                    "blueprint_index": chosen,
                    "time_s": float(Fraction(chosen) / blueprint.fps),
                    "seam_frame": tl.seams[k],
                    "seam_time_s": float(Fraction(tl.seams[k]) / tl.fps),
                    "window": [lo, hi],
                    "identity_method": methods["identity"],
                    "methods": methods,
                    **{name: float(v[best]) for name, v in s.items()},
                    "total": float(total[best]),
                    "candidates": [[lo + i, round(float(t), 4)] for i, t in enumerate(total)],
                    "lifted": False,
                }
            )
            previous = cand[best]
            bar.update(1)
    bar.close()
    return sources, scores


def _scorer(aligned, ref_small, blueprint, settings: KeyframeSettings, runtime: Runtime, clip_vision):
    """The candidate scorer: face detectors when installed and on, Silero VAD (else loudness) for the mouth."""
    from avatar_cascade.media import to_mono
    from avatar_cascade.models.detectors.face import LANDMARKS_68_NOTICE
    from avatar_cascade.models.detectors.measures import FaceJudge
    from avatar_cascade.models.detectors.vad import speech_activity

    if settings.face_detectors and settings.landmarks_68:
        runtime.warn("keyframes", LANDMARKS_68_NOTICE)
    judge = FaceJudge(
        ref_small, use_detectors=settings.face_detectors, landmarks_68=settings.landmarks_68, clip_vision=clip_vision
    )
    audio = aligned.audio
    energy = AudioEnergy(audio.waveform, audio.sample_rate, 0.5 / float(blueprint.fps))
    speech = speech_activity(to_mono(audio.waveform), audio.sample_rate) if judge.has_face else None
    return CandidateScorer(judge=judge, reference=ref_small, energy=energy, speech=speech)

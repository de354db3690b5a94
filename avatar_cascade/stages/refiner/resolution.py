"""The refiner's own resolution: sub-clips rendered above the keyframes' size (KlingAvatar 2.0's spatio-temporal
cascade: keyframes at 480p, sub-clips refined at 720p).

With ``RefinerSettings.height`` set and different from the keyframes' height, the keyframes are brought to the
refiner's bucket before anything else sees them: the size of about ``height`` rows whose aspect is nearest the
keyframes' (both sides multiples of the DiT's ``size_multiple``: :func:`~avatar_cascade.media.framing.bucket_size`,
the pack's framing), the keyframes resized to it without stretching (the few rows / columns of rounding
centre-cropped, :func:`~avatar_cascade.media.framing.fit_frames`). Everything downstream (VAE conditioning, the
cache key, the sampler's resolution-dependent shift, the clips and the keyframes the stitcher colour-matches to)
then works at that size; the timeline, hence the audio windows and the frame counts, is untouched.
"""

from __future__ import annotations

import dataclasses
import logging

from avatar_cascade.artefacts.keyframes import Keyframes
from avatar_cascade.core.runtime import Runtime
from avatar_cascade.media.framing import bucket_size, fit_frames
from avatar_cascade.models.presets import preset_for

log = logging.getLogger(__name__)


def refine_size(keyframes: Keyframes, height: int | None, multiple: int) -> tuple[int, int]:
    """``(width, height)`` the sub-clips render at: the keyframes' own size when ``height`` is None or theirs,
    else the bucket of about ``height`` rows at the keyframes' aspect (sides multiples of ``multiple``)."""
    kw, kh = keyframes.width, keyframes.height
    if height is None or height == kh:
        return kw, kh
    return bucket_size(kw / kh, max(multiple, round(kw * height / kh)), height, multiple)


def at_refine_size(keyframes: Keyframes, height: int | None, dit, runtime: Runtime) -> Keyframes:
    """``keyframes`` framed to the refiner's size (see the module doc); the same object when nothing changes."""
    multiple = preset_for(dit).size_multiple
    w, h = refine_size(keyframes, height, multiple)
    if (w, h) == (keyframes.width, keyframes.height):
        return keyframes
    kw, kh = keyframes.width, keyframes.height
    log.info("refiner: sub-clips at %dx%d from keyframes of %dx%d", w, h, kw, kh)
    if h > kh:
        runtime.warn(
            "refiner",
            f"sub-clips at {w}x{h} from keyframes of {kw}x{kh}: each clip's first and last frame are the keyframes "
            "upsampled (softer than the frames between); lift the keyframes at this size (Keyframe Extractor "
            "width / height) for sharp clip ends",
        )
    images = fit_frames(keyframes.images, w, h, "crop")
    return dataclasses.replace(keyframes, images=images)

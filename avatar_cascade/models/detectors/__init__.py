"""Trained detectors whose weights ship inside registry packages (optional extra ``detectors``).

* :mod:`.vad` — Silero VAD (``silero-vad``, MIT): speech probability every 32 ms, its
  safetensors weights loaded into a torch port of the network; energy fallback.
* :mod:`.face` — dlib (``dlib-bin``, Boost) with ``face-recognition-models``: HOG face
  detector, 5-point landmarks, 128-d face embedding (all usable commercially) and the
  optional 68-point landmarks (iBUG 300-W training data: **non-commercial use only**, off
  by default).
* :mod:`.measures` — identity, mouth openness and occlusion on frames, each tagged with the
  method that produced it (detector, CLIP vision, or the labelled image-statistics proxy).

Nothing here downloads anything: without the packages every measure falls back to its proxy.
"""

from __future__ import annotations

import functools
import importlib.metadata


@functools.lru_cache(maxsize=8)
def detector_identity(face: bool = True, landmarks_68: bool = False) -> dict | None:
    """Versions of the detector packages a result depends on (for cache keys): None when none is used."""
    from avatar_cascade.models.detectors.face import available
    from avatar_cascade.models.detectors.vad import silero_weights

    out = {}
    for dist, used in (("dlib-bin", face and available()), ("face-recognition-models", face and available())):
        if used:
            out[dist] = importlib.metadata.version(dist)
    if out and landmarks_68:
        out["landmarks"] = 68
    if silero_weights() is not None:
        out["silero-vad"] = importlib.metadata.version("silero-vad")
    return out or None

"""Face measures of frames against a reference image, each labelled with the method that produced it.

:class:`FaceJudge` is built once per reference. With dlib installed and a face found in the
reference it measures, per frame (``[N, H, W, 3]`` uint8):

* ``identity`` — face-embedding similarity ``1 - d / 1.2`` (``d`` = dlib's 128-d distance; 0.5 = its
  same-person threshold 0.6), method ``face_embedding``; 0 where no face is found;
* ``mouth`` — mouth openness in [0, 1]: with 68-point landmarks (``landmarks_68``, non-commercial
  data) the inner-lip gap over the mouth width divided by 0.5 (``landmarks_68``); with the 5-point
  model the fraction of dark pixels (luma < 0.6 x the face box median) in the mouth box placed from
  the eyes and nose (``dark_fraction_5pt``), divided by 0.8;
* ``face`` — visibility x clarity: detector score relative to the reference's (capped at 1) times the
  Laplacian variance in the face box relative to the reference's face box (capped at 1), method
  ``dlib_hog``; ``occlusion`` = 1 - visibility (1 where the face is not found).

Without dlib, or when the reference shows no face a detector can find (a stylised character),
``has_face`` is False and the callers use their labelled proxies instead; identity then comes
from CLIP vision when connected (``clip_vision``), else :func:`~avatar_cascade.media.image_metrics.identity_proxy`.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from avatar_cascade.media.image_metrics import identity_proxy, laplacian_var
from avatar_cascade.models.detectors.face import Face, face_models, identity_from_distance

MAR_SCALE = 0.5
DARK_SCALE = 0.8
DARK_LEVEL = 0.6


def clip_embedding(clip_vision, frames: torch.Tensor) -> torch.Tensor:
    """Mean CLIP-vision token of ``[N,H,W,3]`` uint8 frames, L2-normalised: ``[N, D]``."""
    emb = clip_vision.encode(frames.float().div(255))
    if emb.ndim == 3:
        emb = emb.mean(1)
    return F.normalize(emb.float().flatten(1), dim=1)


def identity_clip(clip_vision, frames: torch.Tensor, reference_embedding: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of CLIP-vision embeddings to the reference's, clamped to [0, 1]."""
    return (clip_embedding(clip_vision, frames) @ reference_embedding.view(-1, 1)).view(-1).clamp(0, 1)


def mouth_aperture(landmarks: np.ndarray) -> float:
    """68-point inner-lip gap (mean of 61-67, 62-66, 63-65) over the mouth width (48-54)."""
    gap = np.mean([np.linalg.norm(landmarks[a] - landmarks[b]) for a, b in ((61, 67), (62, 66), (63, 65))])
    return float(gap / max(np.linalg.norm(landmarks[48] - landmarks[54]), 1e-6))


def mouth_box(landmarks: np.ndarray) -> tuple[int, int, int, int]:
    """Mouth box from 5-point landmarks (eye corners 0-3, nose base 4): below the nose along the face axis."""
    eyes = landmarks[:4].mean(0)
    nose = landmarks[4]
    d = float(np.linalg.norm(landmarks[:2].mean(0) - landmarks[2:4].mean(0)))
    down = (nose - eyes) / max(float(np.linalg.norm(nose - eyes)), 1e-6)
    centre = nose + down * 0.45 * d
    w, h = 0.75 * d, 0.6 * d
    return int(centre[0] - w / 2), int(centre[1] - h / 2), int(centre[0] + w / 2), int(centre[1] + h / 2)


def _crop(image: np.ndarray, box) -> np.ndarray:
    h, w = image.shape[:2]
    left, top = max(0, int(box[0])), max(0, int(box[1]))
    right, bottom = min(w, max(left + 1, int(box[2]))), min(h, max(top + 1, int(box[3])))
    return image[top:bottom, left:right]


def _luma(x: np.ndarray) -> np.ndarray:
    return (x[..., 0] * 0.299 + x[..., 1] * 0.587 + x[..., 2] * 0.114) / 255.0


def dark_fraction(image: np.ndarray, face: Face) -> float:
    """Fraction of the 5-point mouth box darker than 0.6 x the face box's median luma."""
    mouth = _luma(_crop(image, mouth_box(face.landmarks)).astype(np.float32))
    ref = float(np.median(_luma(_crop(image, face.box).astype(np.float32))))
    return float((mouth < DARK_LEVEL * ref).mean()) if mouth.size else 0.0


class FaceJudge:
    """Face detector measures against one reference (see the module doc); ``methods`` names each one."""

    def __init__(
        self, reference: torch.Tensor, *, use_detectors: bool = True, landmarks_68: bool = False, clip_vision=None
    ):
        self.models = face_models(landmarks_68) if use_detectors else None
        self.reference = reference
        ref = reference.cpu().numpy()
        self.ref_face = None
        if self.models is not None:
            faces = self.models.detect(ref)
            self.ref_face = faces[0] if faces else None
        self.ref_embedding = self.models.embedding(ref, self.ref_face) if self.ref_face is not None else None
        self.ref_clarity = (
            float(laplacian_var(torch.from_numpy(_crop(ref, self.ref_face.box).copy())[None])) if self.ref_face else 0.0
        )
        self.clip_vision = clip_vision
        self._clip_ref = None
        self.methods = self._methods()

    @property
    def has_face(self) -> bool:
        return self.ref_face is not None

    def _methods(self) -> dict[str, str]:
        if self.has_face:
            mouth = "landmarks_68" if self.models.shape68 is not None else "dark_fraction_5pt"
            return {"identity": "face_embedding", "face": "dlib_hog", "mouth": mouth, "occlusion": "dlib_hog"}
        identity = "clip_vision" if self.clip_vision is not None else "proxy"
        return {"identity": identity, "face": "proxy", "mouth": "proxy", "occlusion": "proxy"}

    def identity_without_face(self, frames: torch.Tensor, reference: torch.Tensor | None = None) -> torch.Tensor:
        """CLIP-vision similarity (when connected) or the image-statistics proxy, against ``reference``."""
        ref = self.reference if reference is None else reference
        if self.clip_vision is None:
            return identity_proxy(frames, ref)
        if self._clip_ref is None or self._clip_ref[0] is not ref:
            self._clip_ref = (ref, clip_embedding(self.clip_vision, ref[None])[0])
        return identity_clip(self.clip_vision, frames, self._clip_ref[1])

    def observe(self, frames: torch.Tensor, *, embed: bool = True) -> dict[str, torch.Tensor | list]:
        """Per-frame ``identity`` / ``face`` / ``mouth`` / ``occlusion`` ``[N]`` and ``faces`` (Face or None).

        Only for a reference with a face (``has_face``). ``embed=False`` skips the embeddings (identity 0).
        """
        if not self.has_face:
            raise RuntimeError("FaceJudge.observe needs a reference with a detected face")
        arr = frames.cpu().numpy()
        out = {k: torch.zeros(len(arr)) for k in ("identity", "face", "mouth", "occlusion")}
        out["faces"] = []
        for i, img in enumerate(arr):
            faces = self.models.detect(img)
            face = faces[0] if faces else None
            out["faces"].append(face)
            if face is None:
                out["occlusion"][i] = 1.0
                continue
            visibility = min(1.0, face.score / max(self.ref_face.score, 1e-6))
            clarity = float(laplacian_var(torch.from_numpy(_crop(img, face.box).copy())[None])) / max(
                self.ref_clarity, 1e-9
            )
            out["face"][i] = visibility * min(1.0, clarity)
            out["occlusion"][i] = 1.0 - visibility
            out["mouth"][i] = self.mouth_openness(img, face)
            if embed:
                d = float(np.linalg.norm(self.models.embedding(img, face) - self.ref_embedding))
                out["identity"][i] = identity_from_distance(d)
        return out

    def mouth_track(self, frames: torch.Tensor, picks: list[int], faces: list) -> torch.Tensor:
        """Mouth openness ``[N]`` of every frame, with landmarks in the face box found at the nearest of the
        ``picks`` (frame indices whose ``faces`` were detected): one detection per pick, not per frame."""
        arr = frames.cpu().numpy()
        out = torch.zeros(len(arr))
        for i, img in enumerate(arr):
            j = min(range(len(picks)), key=lambda k: abs(picks[k] - i))
            face = faces[j]
            if face is not None:
                moved = Face(box=face.box, score=face.score, landmarks=self.models.landmarks(img, face.box))
                out[i] = self.mouth_openness(img, moved)
        return out

    def mouth_openness(self, image: np.ndarray, face: Face) -> float:
        """Mouth openness in [0, 1] of ``face`` in ``image`` (method ``methods["mouth"]``)."""
        if len(face.landmarks) == 68:
            return min(1.0, mouth_aperture(face.landmarks) / MAR_SCALE)
        return min(1.0, dark_fraction(image, face) / DARK_SCALE)

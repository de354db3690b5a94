"""Faces with dlib (``dlib-bin``) and the trained files of ``face-recognition-models``.

What the packages ship (checked on the wheels / sdist): ``dlib-bin`` is dlib 20 built for
CPython (no CUDA) with the HOG frontal-face detector built in; ``face-recognition-models``
0.3.0 holds ``shape_predictor_5_face_landmarks.dat`` (dlib's own 5-point data set, CC0),
``dlib_face_recognition_resnet_model_v1.dat`` (the 128-d ResNet face embedding, public
domain; same person when the Euclidean distance is < 0.6), ``mmod_human_face_detector.dat``
(a CNN detector, slower on CPU, unused) and ``shape_predictor_68_face_landmarks.dat``,
trained on **iBUG 300-W, whose licence excludes commercial use**: it is loaded only when
asked (``landmarks_68=True``) and the caller warns the artist. The ``.dat`` files are dlib's
own serialisation (no pickle, no code); nothing is downloaded.

Images are ``[H, W, 3]`` uint8 (numpy or torch). Boxes are ``(left, top, right, bottom)``
pixels of that image.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

LANDMARKS_68_NOTICE = (
    "68-point landmarks use dlib's shape_predictor_68_face_landmarks, trained on iBUG 300-W: its licence "
    "excludes commercial use; turn landmarks_68 off for commercial work (5-point landmarks are used then)"
)
#: dlib's same-person threshold on the embedding distance.
SAME_PERSON_DISTANCE = 0.6
#: HOG detections below this score are ignored.
MIN_DETECTION_SCORE = 0.0


@dataclass
class Face:
    """One detected face: box, detector score, landmarks ``[K, 2]`` (x, y) pixels, K = 5 or 68."""

    box: tuple[int, int, int, int]
    score: float
    landmarks: np.ndarray

    @property
    def size(self) -> float:
        return float(min(self.box[2] - self.box[0], self.box[3] - self.box[1]))

    def to_dict(self) -> dict:
        return {"box": [int(v) for v in self.box], "score": round(self.score, 3), "points": len(self.landmarks)}


def model_folder() -> Path | None:
    """``face_recognition_models/models`` of the installed package (found without importing it), or None."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or spec.origin is None:
        return None
    folder = Path(spec.origin).parent / "models"
    return folder if (folder / "shape_predictor_5_face_landmarks.dat").is_file() else None


def available() -> bool:
    """Whether dlib and the model files are installed."""
    return importlib.util.find_spec("dlib") is not None and model_folder() is not None


def _as_numpy(image) -> np.ndarray:
    arr = image.cpu().numpy() if hasattr(image, "cpu") else np.asarray(image)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"face detector wants [H, W, 3] uint8 images, got {arr.dtype} {arr.shape}")
    return np.ascontiguousarray(arr)


class FaceModels:
    """dlib's HOG detector, a shape predictor (5- or 68-point) and the ResNet face embedding."""

    def __init__(self, landmarks_68: bool = False) -> None:
        import dlib

        folder = model_folder()
        if folder is None:
            raise FileNotFoundError("face_recognition_models is not installed")
        self.landmarks_68 = landmarks_68
        self.detector = dlib.get_frontal_face_detector()
        self.shape5 = dlib.shape_predictor(str(folder / "shape_predictor_5_face_landmarks.dat"))
        self.shape68 = (
            dlib.shape_predictor(str(folder / "shape_predictor_68_face_landmarks.dat")) if landmarks_68 else None
        )
        self.embedder = dlib.face_recognition_model_v1(str(folder / "dlib_face_recognition_resnet_model_v1.dat"))
        self._dlib = dlib

    @property
    def landmark_method(self) -> str:
        return "dlib_68" if self.shape68 is not None else "dlib_5"

    def detect(self, image, upsample: int | None = None) -> list[Face]:
        """Faces of ``image``, largest-scoring first. ``upsample`` None = 1 for images under 400 px, else 0
        (HOG finds faces from ~80 px, ~40 px upsampled once)."""
        img = _as_numpy(image)
        if upsample is None:
            upsample = 1 if min(img.shape[:2]) < 400 else 0
        rects, scores, _ = self.detector.run(img, upsample, MIN_DETECTION_SCORE)
        faces = [self._face(img, r, float(s)) for r, s in zip(rects, scores)]
        return sorted(faces, key=lambda f: f.score * f.size, reverse=True)

    def _rect(self, box):
        return self._dlib.rectangle(int(box[0]), int(box[1]), int(box[2]), int(box[3]))

    def _face(self, img: np.ndarray, rect, score: float) -> Face:
        box = (rect.left(), rect.top(), rect.right(), rect.bottom())
        return Face(box=box, score=score, landmarks=self.landmarks(img, box))

    def landmarks(self, image, box, points: int | None = None) -> np.ndarray:
        """Landmarks ``[K, 2]`` of the face in ``box`` (68 when loaded, else 5; ``points=5`` forces 5)."""
        img = _as_numpy(image)
        pred = self.shape68 if self.shape68 is not None and points != 5 else self.shape5
        shape = pred(img, self._rect(box))
        return np.array([[shape.part(i).x, shape.part(i).y] for i in range(shape.num_parts)], dtype=np.float32)

    def embedding(self, image, face: Face) -> np.ndarray:
        """128-d embedding of ``face`` (aligned by its 5-point landmarks, as dlib's model expects)."""
        img = _as_numpy(image)
        shape = self.shape5(img, self._rect(face.box))
        return np.asarray(self.embedder.compute_face_descriptor(img, shape), dtype=np.float32)


@functools.lru_cache(maxsize=2)
def face_models(landmarks_68: bool = False) -> FaceModels | None:
    """The loaded models (cached per process), or None when dlib / face-recognition-models are missing."""
    if not available():
        return None
    try:
        return FaceModels(landmarks_68)
    except (ImportError, RuntimeError, FileNotFoundError) as exc:
        log.warning("face models unavailable: %s", exc)
        return None


def identity_from_distance(distance: float) -> float:
    """Embedding distance -> identity score in [0, 1]: ``1 - d / 1.2`` (0.5 = dlib's same-person threshold)."""
    return float(min(1.0, max(0.0, 1.0 - distance / (2 * SAME_PERSON_DISTANCE))))

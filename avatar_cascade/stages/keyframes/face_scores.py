"""Keyframe candidate scores from real detectors when they are installed, the labelled proxies otherwise.

With a face found in the reference (dlib, :class:`~avatar_cascade.models.detectors.measures.FaceJudge`):

* ``identity`` — face-embedding similarity to the reference (0 when no face is found in the candidate);
* ``sharpness`` — Laplacian sharpness inside the candidate's face box (the whole frame when none);
* ``face`` — visibility x clarity of the detected face relative to the reference's (``occlusion`` =
  1 - visibility is recorded too: 1 when the face is lost);
* ``mouth`` — how well the mouth state fits the audio at that instant: ``1 - |open - 0.4 p| / 0.5``
  (clamped) with ``open`` the mouth openness from landmarks and ``p`` the speech probability (Silero VAD,
  else loudness): a closed mouth is preferred where nobody speaks, a half-open one during speech.

Without one (no dlib, a stylised reference, ``face_detectors`` off) the scores of
:mod:`.scores` are used: identity by CLIP vision or the statistics proxy, the skin-tone centre box, the
audio-quiet + lower-face-stillness mouth proxy. Every seam records the method of each score.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from avatar_cascade.media.image_metrics import sharpness
from avatar_cascade.models.detectors.measures import FaceJudge
from avatar_cascade.stages.keyframes.scores import (
    AudioEnergy,
    colour_score,
    diversity_score,
    face_score,
    lower_face_motion,
    mouth_score,
)

SPEAKING_OPENNESS = 0.4
MOUTH_TOLERANCE = 0.5


@dataclass
class CandidateScorer:
    """What scoring needs for every seam: the judge, the reference at blueprint size, the audio measures."""

    judge: FaceJudge
    reference: torch.Tensor
    energy: AudioEnergy
    speech: object  # SpeechActivity

    def methods(self) -> dict[str, str]:
        m = dict(self.judge.methods)
        if self.judge.has_face:
            return {**m, "sharpness": "face_box", "mouth": f"{m['mouth']}+{self.speech.method}"}
        return {**m, "sharpness": "frame", "mouth": "proxy_audio_energy+lower_face_motion", "face": "proxy_skin_box"}

    def score(self, cand, before, after, times_s, previous) -> dict[str, torch.Tensor]:
        """Scores ``[N]`` of candidates ``cand`` ``[N,h,w,3]`` (neighbour frames ``before`` / ``after``) at
        ``times_s``, against the previous chosen keyframe ``previous``."""
        common = {"colour": colour_score(cand, self.reference), "diversity": diversity_score(cand, previous)}
        if not self.judge.has_face:
            return {
                "identity": self.judge.identity_without_face(cand, self.reference),
                "sharpness": sharpness(cand),
                "face": face_score(cand, self.reference),
                "mouth": mouth_score(self.energy.score(times_s), lower_face_motion(cand, before, after)),
                **common,
            }
        obs = self.judge.observe(cand)
        sharp = torch.stack([_face_sharpness(f, face) for f, face in zip(cand, obs["faces"])])
        target = SPEAKING_OPENNESS * self.speech.at(times_s)
        fit = 1 - ((obs["mouth"] - target).abs() / MOUTH_TOLERANCE).clamp(0, 1)
        found = torch.tensor([f is not None for f in obs["faces"]])
        return {
            "identity": obs["identity"],
            "sharpness": sharp,
            "face": obs["face"],
            "mouth": torch.where(found, fit, torch.zeros_like(fit)),
            **common,
            "occlusion": obs["occlusion"],
            "mouth_open": obs["mouth"],
        }


def _face_sharpness(frame: torch.Tensor, face) -> torch.Tensor:
    if face is None:
        return sharpness(frame[None])[0]
    left, top, right, bottom = face.box
    h, w = frame.shape[:2]
    crop = frame[max(0, top) : min(h, max(top + 2, bottom)), max(0, left) : min(w, max(left + 2, right))]
    return sharpness(crop[None])[0]

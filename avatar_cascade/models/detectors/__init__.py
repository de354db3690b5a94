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

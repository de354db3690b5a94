"""Media IO: images (PIL), audio decode (PyAV), video encode + mux (PyAV).

Units: images are ``[H, W, 3]`` float32 in 0..1; audio is ``[C, T]`` float32 in
-1..1 at ``sample_rate`` Hz (T in samples); video frames are uint8 ``[N, H, W, 3]``
RGB at an exact :class:`fractions.Fraction` fps. PyAV is imported inside the
functions that use it, so importing this package is cheap.

One concern per module: :mod:`.image`, :mod:`.audio`, :mod:`.video`, and
:mod:`.files` (input-file checks, bundled sample inputs).
"""

from avatar_cascade.media.audio import MAX_CODEC_PADDING, AudioTrack, load_audio, resample, to_mono
from avatar_cascade.media.files import sample_audio_path, sample_image_path
from avatar_cascade.media.image import MAX_IMAGE_SIDE, MIN_IMAGE_SIDE, check_image_tensor, load_image
from avatar_cascade.media.video import VideoWriter, probe_media

__all__ = [
    "MAX_CODEC_PADDING",
    "MAX_IMAGE_SIDE",
    "MIN_IMAGE_SIDE",
    "AudioTrack",
    "VideoWriter",
    "check_image_tensor",
    "load_audio",
    "load_image",
    "probe_media",
    "resample",
    "sample_audio_path",
    "sample_image_path",
    "to_mono",
]

"""The master timeline: exact frame <-> sample arithmetic and the sub-clip plan.

Units: frames are output-video frame indices (0-based); samples are audio sample
indices at ``sample_rate`` Hz; ``fps`` is a :class:`fractions.Fraction` so NTSC
rates such as 30000/1001 are exact. Nothing here uses floating point for a
position, so there is no drift at any length.

Sub-clip rule (Wan-compatible lengths, one shared keyframe per seam):

* The video has ``num_frames = ceil(num_samples * fps / sample_rate)`` frames,
  so its duration equals the audio's within one frame.
* Clip ``k`` spans frames ``[k*(L-1), k*(L-1) + L - 1]`` (inclusive) where ``L``
  is ``clip_frames`` (4n+1); consecutive clips share their seam frame.
* **Remainder rule**: the last clip is the shortest 4n+1 length (at least 5)
  that reaches frame ``num_frames - 1``. Frames it generates past the audio end
  (``padded_frames - num_frames`` of them, fewer than 4) are rendered with
  silence and dropped by the stitcher, so nothing is truncated silently and
  nothing is stretched.
* ``sample_range`` of a clip is the audio the clip *owns*: frames ``start`` up
  to (excluding) the next clip's start; the last clip owns up to the end of the
  audio. Owned ranges tile ``[0, num_samples)`` exactly.
* ``feature_window`` is ``[S(start) - pad, S(end + 1) + pad)`` clipped to the
  audio: every sample the clip's frames (seam included) can hear, plus context.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from fractions import Fraction

from .errors import InputError

MIN_CLIP_FRAMES = 5
MAX_FPS = Fraction(120)


def parse_fps(value: float | int | str | Fraction) -> Fraction:
    """Parse ``25``, ``23.976``, ``"30000/1001"`` or a Fraction into an exact rate.

    Decimal NTSC approximations (23.976, 29.97, 59.94) map to their exact
    ``n*1000/1001`` rates.
    """
    if isinstance(value, Fraction):
        fps = value
    elif isinstance(value, str):
        try:
            fps = Fraction(value.strip())
        except (ValueError, ZeroDivisionError) as exc:
            raise InputError("fps", value, "is not a number or a ratio", "use e.g. 25 or 30000/1001") from exc
    else:
        fps = Fraction(value).limit_denominator(1001)
    for ntsc in (24, 30, 48, 60, 120):
        exact = Fraction(ntsc * 1000, 1001)
        if fps != exact and abs(fps - exact) < Fraction(1, 500):
            fps = exact
    if fps <= 0 or fps > MAX_FPS:
        raise InputError(
            "fps", value, f"must be > 0 and <= {MAX_FPS}", "use a video rate such as 16, 24, 25 or 30000/1001"
        )
    return fps


def check_clip_frames(clip_frames: int) -> int:
    """Validate a Wan sub-clip length (4n+1, at least 5)."""
    if not isinstance(clip_frames, int) or clip_frames < MIN_CLIP_FRAMES or (clip_frames - 1) % 4:
        raise InputError(
            "clip_frames",
            clip_frames,
            "Wan models need a length of 4n+1 frames (at least 5)",
            "use 17, 33, 49, 65 or 81",
        )
    return clip_frames


def frame_to_sample(frame: int, fps: Fraction, sample_rate: int) -> int:
    """First audio sample of ``frame`` (exact floor of frame * sr / fps)."""
    return (frame * sample_rate * fps.denominator) // fps.numerator


def sample_to_frame(sample: int, fps: Fraction, sample_rate: int) -> int:
    """The frame whose span contains ``sample``."""
    return (sample * fps.numerator) // (sample_rate * fps.denominator)


def frames_for_samples(num_samples: int, fps: Fraction, sample_rate: int) -> int:
    """Frames needed to cover ``num_samples`` (ceil), at least 1."""
    n = -((-num_samples * fps.numerator) // (sample_rate * fps.denominator))
    return max(1, n)


@dataclass(frozen=True)
class SubClip:
    """One sub-clip between two keyframes.

    ``frame_start``/``frame_end`` are inclusive output-frame indices (the end is
    the next clip's start: the shared seam keyframe). ``sample_range`` is the
    owned audio ``[start, end)``; ``feature_window`` the padded audio window.
    """

    index: int
    frame_start: int
    frame_end: int
    sample_range: tuple[int, int]
    feature_window: tuple[int, int]

    @property
    def num_frames(self) -> int:
        return self.frame_end - self.frame_start + 1


@dataclass
class Timeline:
    """Frame-exact master timeline of the whole video."""

    fps_num: int
    fps_den: int
    sample_rate: int
    num_samples: int
    num_frames: int
    clip_frames: int
    clips: list[SubClip]
    feature_pad_samples: int = 0
    meta: dict = field(default_factory=dict)

    # -- derived ---------------------------------------------------------
    @property
    def fps(self) -> Fraction:
        return Fraction(self.fps_num, self.fps_den)

    @property
    def duration_s(self) -> float:
        return self.num_samples / self.sample_rate

    @property
    def padded_frames(self) -> int:
        """Frames actually rendered (the last clip may run past the audio end)."""
        return self.clips[-1].frame_end + 1

    @property
    def seams(self) -> list[int]:
        """Keyframe frame indices: the start of every clip plus the end of the last."""
        return [c.frame_start for c in self.clips] + [self.clips[-1].frame_end]

    def frame_to_sample(self, frame: int) -> int:
        return frame_to_sample(frame, self.fps, self.sample_rate)

    def frame_time(self, frame: int) -> float:
        """Start time of ``frame`` in seconds."""
        return float(Fraction(frame) / self.fps)

    # -- serialisation ---------------------------------------------------
    def to_dict(self) -> dict:
        d = asdict(self)
        d["fps"] = f"{self.fps_num}/{self.fps_den}"
        d["seams"] = self.seams
        d["duration_s"] = self.duration_s
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_dict(cls, d: dict) -> Timeline:
        clips = [
            SubClip(c["index"], c["frame_start"], c["frame_end"], tuple(c["sample_range"]), tuple(c["feature_window"]))
            for c in d["clips"]
        ]
        return cls(
            fps_num=d["fps_num"],
            fps_den=d["fps_den"],
            sample_rate=d["sample_rate"],
            num_samples=d["num_samples"],
            num_frames=d["num_frames"],
            clip_frames=d["clip_frames"],
            clips=clips,
            feature_pad_samples=d.get("feature_pad_samples", 0),
            meta=d.get("meta", {}),
        )


def _round_up_4n1(n: int) -> int:
    """Smallest 4k+1 >= max(n, MIN_CLIP_FRAMES)."""
    n = max(n, MIN_CLIP_FRAMES)
    return n + ((1 - n) % 4)


def plan_timeline(
    num_samples: int,
    sample_rate: int,
    fps: float | str | Fraction,
    clip_frames: int = 81,
    feature_pad_s: float = 0.5,
) -> Timeline:
    """Build the master timeline for ``num_samples`` of audio at ``sample_rate``.

    Args:
        num_samples: audio length in samples (> 0).
        sample_rate: audio rate in Hz.
        fps: output video rate (exact; strings like "30000/1001" accepted).
        clip_frames: nominal sub-clip length in frames (4n+1).
        feature_pad_s: audio context added on both sides of each clip's
            feature window, in seconds.
    """
    fps_q = parse_fps(fps)
    check_clip_frames(clip_frames)
    if num_samples <= 0:
        raise InputError(
            "audio", f"{num_samples} samples", "the audio is empty (0 s)", "give a speech or singing track with sound"
        )
    if sample_rate <= 0:
        raise InputError("sample_rate", sample_rate, "must be positive", "pass the audio's real sample rate")

    num_frames = frames_for_samples(num_samples, fps_q, sample_rate)
    stride = clip_frames - 1
    intervals = num_frames - 1
    pad = int(round(feature_pad_s * sample_rate))

    starts: list[int] = []
    lengths: list[int] = []
    pos = 0
    while True:
        remaining = intervals - pos  # frames still needed after `pos`
        if remaining <= stride:
            starts.append(pos)
            lengths.append(_round_up_4n1(remaining + 1))
            break
        starts.append(pos)
        lengths.append(clip_frames)
        pos += stride

    clips: list[SubClip] = []
    for i, (a, n) in enumerate(zip(starts, lengths)):
        b = a + n - 1
        own_end = num_samples if i == len(starts) - 1 else frame_to_sample(starts[i + 1], fps_q, sample_rate)
        own_start = frame_to_sample(a, fps_q, sample_rate)
        win_end = min(num_samples, frame_to_sample(b + 1, fps_q, sample_rate) + pad)
        win_start = max(0, own_start - pad)
        clips.append(SubClip(i, a, b, (own_start, own_end), (win_start, win_end)))

    return Timeline(
        fps_num=fps_q.numerator,
        fps_den=fps_q.denominator,
        sample_rate=sample_rate,
        num_samples=num_samples,
        num_frames=num_frames,
        clip_frames=clip_frames,
        clips=clips,
        feature_pad_samples=pad,
    )

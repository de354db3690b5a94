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
* ``feature_window`` is ``[S(render_start) - pad, S(render_end + 1) + pad)``
  clipped to the audio: every sample the clip's rendered frames (seams and
  overlap included) can hear, plus context.

Seams (the shared keyframes) therefore always sit on multiples of 4 frames.
:func:`plan_timeline` places them on the nominal grid ``k * (L - 1)`` or, when
given ``seams`` (e.g. snapped to pauses by :mod:`avatar_cascade.stages.aligner.seams`), at
those positions; any clip length is then a 4n+1 value of at least 5.

Overlap for blending (``overlap_frames``, a multiple of 4, default 0): besides
its keyframe-to-keyframe span every clip also *renders* up to
``overlap_frames`` frames past each interior seam, so frames
``[seam - overlap, seam + overlap]`` are rendered by both neighbours. The
rendered range ``[render_start, render_end]`` is declared per clip; it stays
4n+1 long, starts at frame 0 for the first clip and never runs past the last
clip's end. The keyframes sit at render offsets ``keyframe_offsets``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from fractions import Fraction

from avatar_cascade.core.errors import InputError

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
        try:
            fps = Fraction(value).limit_denominator(1001)
        except (ValueError, OverflowError, TypeError) as exc:  # NaN, infinity, not a number
            raise InputError("fps", value, "is not a finite number", "use e.g. 25 or 30000/1001") from exc
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


def frame_time(frame: int, fps: Fraction) -> Fraction:
    """Exact start time of ``frame`` in seconds."""
    return Fraction(frame) / fps


def frames_for_samples(num_samples: int, fps: Fraction, sample_rate: int) -> int:
    """Frames needed to cover ``num_samples`` (ceil), at least 1."""
    n = -((-num_samples * fps.numerator) // (sample_rate * fps.denominator))
    return max(1, n)


@dataclass(frozen=True)
class SubClip:
    """One sub-clip between two keyframes.

    ``frame_start``/``frame_end`` are inclusive output-frame indices (the end is
    the next clip's start: the shared seam keyframe). ``sample_range`` is the
    owned audio ``[start, end)`` in samples; ``feature_window`` the padded
    audio window in samples. ``overlap_before``/``overlap_after`` are the extra
    frames the clip renders before its first / after its last keyframe (0
    unless the timeline declares an overlap for blending).
    """

    index: int
    frame_start: int
    frame_end: int
    sample_range: tuple[int, int]
    feature_window: tuple[int, int]
    overlap_before: int = 0
    overlap_after: int = 0

    @property
    def num_frames(self) -> int:
        """Frames from keyframe to keyframe, both included (4n+1)."""
        return self.frame_end - self.frame_start + 1

    @property
    def render_start(self) -> int:
        """First frame the clip renders (``frame_start`` minus the overlap)."""
        return self.frame_start - self.overlap_before

    @property
    def render_end(self) -> int:
        """Last frame the clip renders, inclusive (``frame_end`` plus the overlap)."""
        return self.frame_end + self.overlap_after

    @property
    def render_frames(self) -> int:
        """Frames the clip renders (4n+1; equals ``num_frames`` without overlap)."""
        return self.render_end - self.render_start + 1

    @property
    def keyframe_offsets(self) -> tuple[int, int]:
        """Positions of the first and last keyframe inside the rendered frames."""
        return self.overlap_before, self.overlap_before + self.num_frames - 1


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
    overlap_frames: int = 0
    snap_tolerance_frames: int = 0
    nominal_seams: list[int] = field(default_factory=list)

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

    @property
    def snapped_seams(self) -> list[int]:
        """Indices into :attr:`seams` of the seams that snapping moved off the nominal grid."""
        if not self.nominal_seams:
            return []
        return [i for i, (a, b) in enumerate(zip(self.seams, self.nominal_seams)) if a != b]

    def frame_to_sample(self, frame: int) -> int:
        return frame_to_sample(frame, self.fps, self.sample_rate)

    def frame_time(self, frame: int) -> float:
        """Start time of ``frame`` in seconds."""
        return float(Fraction(frame) / self.fps)

    def frame_time_exact(self, frame: int) -> Fraction:
        """Exact start time of ``frame`` in seconds."""
        return frame_time(frame, self.fps)

    @property
    def clip_length_histogram(self) -> dict[int, int]:
        """Rendered clip length (frames) -> number of clips, by length (fewer lengths batch better)."""
        hist: dict[int, int] = {}
        for c in self.clips:
            hist[c.render_frames] = hist.get(c.render_frames, 0) + 1
        return dict(sorted(hist.items()))

    # -- serialisation ---------------------------------------------------
    def to_dict(self) -> dict:
        d = asdict(self)
        d["fps"] = f"{self.fps_num}/{self.fps_den}"
        d["seams"] = self.seams
        d["duration_s"] = self.duration_s
        d["clip_length_histogram"] = {str(k): v for k, v in self.clip_length_histogram.items()}
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_dict(cls, d: dict) -> Timeline:
        clips = [
            SubClip(
                c["index"],
                c["frame_start"],
                c["frame_end"],
                tuple(c["sample_range"]),
                tuple(c["feature_window"]),
                c.get("overlap_before", 0),
                c.get("overlap_after", 0),
            )
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
            overlap_frames=d.get("overlap_frames", 0),
            snap_tolerance_frames=d.get("snap_tolerance_frames", 0),
            nominal_seams=list(d.get("nominal_seams", [])),
        )


def _round_up_4n1(n: int) -> int:
    """Smallest 4k+1 >= max(n, MIN_CLIP_FRAMES)."""
    n = max(n, MIN_CLIP_FRAMES)
    return n + ((1 - n) % 4)


def last_clip_frames(num_frames: int, start: int) -> int:
    """Remainder rule: the shortest 4n+1 length (>= 5) from ``start`` that reaches frame ``num_frames - 1``."""
    return _round_up_4n1(num_frames - start)


def nominal_clip_starts(num_frames: int, clip_frames: int) -> list[int]:
    """Clip start frames on the nominal grid ``k * (clip_frames - 1)`` (the first is 0)."""
    stride = clip_frames - 1
    starts = [0]
    while num_frames - 1 - starts[-1] > stride:
        starts.append(starts[-1] + stride)
    return starts


def check_overlap_frames(overlap_frames: int, clip_frames: int) -> int:
    """Validate the blending overlap (a multiple of 4 frames, below one clip length)."""
    if not isinstance(overlap_frames, int) or overlap_frames < 0 or overlap_frames % 4 or overlap_frames >= clip_frames:
        raise InputError(
            "overlap_frames",
            overlap_frames,
            f"must be a multiple of 4 between 0 and {clip_frames - 1} (clips stay 4n+1 frames long)",
            "use 0 (no overlap), 4 or 8",
        )
    return overlap_frames


def check_seams(seams: list[int], num_frames: int) -> list[int]:
    """Validate interior seam frames (the starts of clips 1, 2, ...).

    Every seam is a multiple of 4 (so every clip is 4n+1 long), seams increase by
    at least 4 frames (clips of at least 5 frames), and the last one lies before
    the last frame (the last clip adds at least one frame).
    """
    seams = [int(s) for s in seams]
    prev = 0
    for s in seams:
        if s % 4 or s - prev < 4 or s >= num_frames - 1:
            raise InputError(
                "seams",
                seams,
                f"seam {s} is invalid: seams must be multiples of 4, at least 4 frames apart, "
                f"increasing and before the last frame ({num_frames - 1})",
                "leave seams empty for the nominal grid, or pass positions such as [80, 160]",
            )
        prev = s
    return seams


def plan_timeline(
    num_samples: int,
    sample_rate: int,
    fps: float | str | Fraction,
    clip_frames: int = 81,
    feature_pad_s: float = 0.5,
    overlap_frames: int = 0,
    seams: list[int] | None = None,
) -> Timeline:
    """Build the master timeline for ``num_samples`` of audio at ``sample_rate``.

    Args:
        num_samples: audio length in samples (> 0).
        sample_rate: audio rate in Hz.
        fps: output video rate (exact; strings like "30000/1001" accepted).
        clip_frames: nominal sub-clip length in frames (4n+1).
        feature_pad_s: audio context added on both sides of each clip's
            feature window, in seconds.
        overlap_frames: extra frames each clip renders past every interior
            seam, for blending (multiple of 4; 0 = clips meet at the shared keyframe only).
        seams: interior seam frames (starts of clips 1..K-1) instead of the
            nominal grid ``k * (clip_frames - 1)``; see :func:`check_seams`. The
            nominal seams are kept in ``Timeline.nominal_seams``.
    """
    fps_q = parse_fps(fps)
    check_clip_frames(clip_frames)
    check_overlap_frames(overlap_frames, clip_frames)
    if num_samples <= 0:
        raise InputError(
            "audio", f"{num_samples} samples", "the audio is empty (0 s)", "give a speech or singing track with sound"
        )
    if sample_rate <= 0:
        raise InputError("sample_rate", sample_rate, "must be positive", "pass the audio's real sample rate")

    num_frames = frames_for_samples(num_samples, fps_q, sample_rate)
    pad = int(round(feature_pad_s * sample_rate))
    nominal = nominal_clip_starts(num_frames, clip_frames)
    starts = nominal if seams is None else [0, *check_seams(list(seams), num_frames)]
    ends = [*starts[1:], starts[-1] + last_clip_frames(num_frames, starts[-1]) - 1]
    last_frame = ends[-1]

    per_frame, num = sample_rate * fps_q.denominator, fps_q.numerator  # S(f) = f * per_frame // num, exactly
    clips: list[SubClip] = []
    n_clips = len(starts)
    for i, (a, b) in enumerate(zip(starts, ends)):
        before = min(overlap_frames, a) if i > 0 else 0
        after = min(overlap_frames, last_frame - b) if i < n_clips - 1 else 0
        own_start = a * per_frame // num
        own_end = num_samples if i == n_clips - 1 else b * per_frame // num
        win_end = min(num_samples, (b + after + 1) * per_frame // num + pad)
        win_start = max(0, (a - before) * per_frame // num - pad)
        clips.append(SubClip(i, a, b, (own_start, own_end), (win_start, win_end), before, after))

    return Timeline(
        fps_num=fps_q.numerator,
        fps_den=fps_q.denominator,
        sample_rate=sample_rate,
        num_samples=num_samples,
        num_frames=num_frames,
        clip_frames=clip_frames,
        clips=clips,
        feature_pad_samples=pad,
        overlap_frames=overlap_frames,
        nominal_seams=[*nominal, nominal[-1] + last_clip_frames(num_frames, nominal[-1]) - 1],
    )

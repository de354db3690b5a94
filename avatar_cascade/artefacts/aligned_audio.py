"""artefacts.aligned_audio."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import torch

from avatar_cascade.artefacts.timeline import Timeline
from avatar_cascade.core.errors import InputError
from avatar_cascade.media import AudioTrack

AUDIO_WINDOW = 5
PAD_MODES = ("zero", "edge")


@dataclass
class AlignedAudio:
    """The ``AVATAR_TIMELINE`` artefact: timeline + the audio it was built from + per-frame features.

    Attributes:
        timeline: the master timeline.
        audio: the validated (and, if asked, loudness-normalised) track at its own rate and
            channels, for muxing.
        features: ``[num_frames, layers, dim]`` float16 wav2vec2 hidden states, one row per
            output frame at the video fps (row ``f`` = time ``f / fps``), every hidden state
            kept (row 0 of ``layers`` is the feature projection, InfiniteTalk reads 1..);
            ``None`` without an audio encoder. Frames past the audio end have no row.
        window: feature rows per frame window (odd; InfiniteTalk's ``audio_window`` = 5).
    """

    timeline: Timeline
    audio: AudioTrack
    features: torch.Tensor | None = None
    window: int = AUDIO_WINDOW

    @property
    def num_layers(self) -> int:
        return 0 if self.features is None else int(self.features.shape[1])

    def frame_windows(
        self,
        frame_times_s: Sequence[Fraction | float] | torch.Tensor,
        window: int | None = None,
        layers: slice | Sequence[int] | None = None,
        pad: str = "zero",
    ) -> torch.Tensor:
        """Feature windows centred on the requested times: ``[F, W, L, D]`` float16.

        Layout ``[frames, window, layers, dim]`` is what InfiniteTalk's AudioProjModel
        consumes (per-frame windows of stacked wav2vec2 layers). For each requested time
        ``t`` (seconds; Fractions are exact) the centre row is the output frame nearest to
        ``t`` (``round(t * fps)``) and tap ``w`` is row ``centre + w - W // 2``.

        Args:
            frame_times_s: times in seconds, any rate (e.g. blueprint frames at 8 fps).
            window: taps per time (odd); default :attr:`window`.
            layers: hidden states to keep (e.g. ``slice(1, None)`` for InfiniteTalk); default all.
            pad: rows outside the audio (before frame 0 or from ``num_frames`` on) are zero
                (``"zero"``, "no audio") or repeat the nearest row (``"edge"``, as
                InfiniteTalk clamps its indices).
        """
        fps = self.timeline.fps
        centres = torch.tensor([_nearest_frame(t, fps) for t in _as_list(frame_times_s)], dtype=torch.int64)
        return self._gather(centres, window, layers, pad)

    def clip_windows(
        self,
        clip_index: int,
        window: int | None = None,
        layers: slice | Sequence[int] | None = None,
        pad: str = "zero",
    ) -> torch.Tensor:
        """Windows for every frame a sub-clip renders: ``[render_frames, W, L, D]`` float16 (see frame_windows)."""
        clips = self.timeline.clips
        if not 0 <= int(clip_index) < len(clips):
            raise InputError(
                "clip_index", clip_index, f"the timeline has clips 0..{len(clips) - 1}", "pick an existing clip"
            )
        c = clips[int(clip_index)]
        return self._gather(torch.arange(c.render_start, c.render_end + 1), window, layers, pad)

    def _gather(self, centres: torch.Tensor, window: int | None, layers: Any, pad: str) -> torch.Tensor:
        feats = self.features
        if feats is None:
            raise InputError(
                "timeline",
                "no audio features",
                "this timeline was made without an audio encoder",
                "connect an audio encoder (or an AUDIO_ENCODER_OUTPUT) to the Audio Aligner",
            )
        w = self.window if window is None else int(window)
        if w < 1 or w % 2 == 0:
            raise InputError("window", w, "must be an odd number of frames", "use 5 (InfiniteTalk)")
        if pad not in PAD_MODES:
            raise InputError("pad", pad, f"is not one of {', '.join(PAD_MODES)}", "use 'zero'")
        idx = centres[:, None] + torch.arange(-(w // 2), w // 2 + 1)[None, :]
        n = feats.shape[0]
        rows = feats[idx.clamp(0, n - 1)]
        if layers is not None:
            rows = rows[:, :, layers]
        if pad == "zero":
            rows[(idx < 0) | (idx >= n)] = 0
        return rows

    def save(self, folder: Path, storyline: Any = None) -> None:
        """Write ``timeline.json``, ``timeline.png`` (and ``audio_features.safetensors``) into ``folder``."""
        import io

        from avatar_cascade.core.cache import atomic_save_tensors, atomic_write_bytes, atomic_write_text
        from avatar_cascade.media.timeline_plot import render_timeline

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(folder / "timeline.json", self.timeline.to_json())
        png = io.BytesIO()
        render_timeline(self, storyline=storyline).save(png, format="PNG")
        atomic_write_bytes(folder / "timeline.png", png.getvalue())
        if self.features is not None:
            meta = {"layout": "frames,layers,dim", "fps": str(self.timeline.fps), "window": str(self.window)}
            atomic_save_tensors(folder / "audio_features.safetensors", {"features": self.features}, meta)


def _as_list(times: Any) -> list:
    return times.tolist() if isinstance(times, torch.Tensor) else list(times)


def _nearest_frame(t: Fraction | float, fps: Fraction) -> int:
    if isinstance(t, (Fraction, int)):
        return math.floor(Fraction(t) * fps + Fraction(1, 2))
    t = float(t)
    if not math.isfinite(t):
        raise InputError("frame_times_s", t, "is not a finite time", "pass times in seconds")
    return math.floor(t * fps.numerator / fps.denominator + 0.5)

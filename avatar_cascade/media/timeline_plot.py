"""A picture of the timeline (PIL only): waveform, clip spans, seams, snapped seams, shots.

Rows, top to bottom: a title line; the waveform envelope (min/max over all
channels per pixel column) with the frames past the audio end shaded; the sub-clips as alternating
bars (frames rendered by two clips for blending as thin bars above); when the timeline carries speech
activity (``meta["speech"]``, Silero VAD), a band between the waveform and the clips: green where
someone speaks, pale where nobody does (the pauses seams snap to); the storyline's shots
when one is given; a time axis. Seams are vertical lines through the waveform
and clip rows: blue on the nominal grid, orange where snapping moved them (a
short grey tick marks the nominal position). When clips are narrower than
12 pixels, seams are drawn as coloured ticks under the clip bars only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image, ImageDraw, ImageFont

BG = (250, 250, 248)
WAVE = (90, 98, 110)
CLIP_A, CLIP_B = (171, 201, 232), (204, 222, 240)
OVERLAP = (120, 160, 210)
SEAM = (30, 80, 170)
SNAPPED = (230, 120, 20)
NOMINAL = (150, 150, 150)
TAIL = (225, 225, 225)
SHOT_A, SHOT_B = (214, 234, 200), (232, 243, 224)
TEXT = (30, 30, 30)
SPEECH, PAUSE = (76, 160, 90), (236, 240, 232)
_NICE_STEPS_S = (0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600)


def waveform_envelope(waveform: torch.Tensor, columns: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Min and max over all channels of ``waveform`` ``[C, T]`` in ``columns`` equal slices (``[columns]`` each)."""
    c, n = waveform.shape
    k = max(1, n // columns)
    cols = min(n, k * columns) // k
    lo, hi = torch.aminmax(waveform[:, : cols * k].view(c, cols, k), dim=2)  # a view: no copy of the track
    lo, hi = lo.amin(dim=0), hi.amax(dim=0)
    if cols < columns:  # fewer samples than columns: repeat the last value
        lo = torch.cat([lo, lo[-1:].expand(columns - cols)])
        hi = torch.cat([hi, hi[-1:].expand(columns - cols)])
    return lo, hi


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: fixed bitmap font
        return ImageFont.load_default()


def _clock(seconds: float, step: float) -> str:
    if step < 1:
        return f"{seconds:.1f}s"
    m, s = divmod(int(round(seconds)), 60)
    return f"{m}:{s:02d}" if m or step >= 60 else f"{s}s"


@dataclass
class _Canvas:
    """Geometry shared by the rows of the picture (pixels; frames map linearly onto the plot width)."""

    draw: ImageDraw.ImageDraw
    font: Any
    fs: int
    scale: float
    pad_x: int
    plot_w: int
    width: int
    total: int

    def x_of(self, frame: float) -> int:
        return self.pad_x + int(round(frame / self.total * self.plot_w))

    def label(self, xa: int, xb: int, y: int, text: str) -> None:
        """``text`` inside the span ``[xa, xb]`` when it fits."""
        if xb - xa > self.draw.textlength(text, font=self.font) + 4:
            self.draw.text((xa + 3, y), text, fill=TEXT, font=self.font)


def render_timeline(aligned: Any, storyline: Any = None, width: int = 1600) -> Image.Image:
    """Draw ``aligned`` (an :class:`~avatar_cascade.artefacts.aligned_audio.AlignedAudio`) ``width`` px wide.

    Rows from the top: title, waveform (grey past the audio end), clips (overlaps marked), seams
    (snapped ones with their nominal position), shots of ``storyline`` (optional), time axis.

    Args:
        aligned: timeline + audio.
        storyline: optional storyline whose shots are drawn as a row of labelled spans.
        width: image width in pixels (the height follows from it).
    """
    tl = aligned.timeline
    scale = max(0.5, width / 1600)
    fs = max(9, int(round(13 * scale)))
    pad_x = int(8 * scale) + 2
    title_h, wave_h, clip_h = fs + 8, int(140 * scale) + 20, int(28 * scale) + 8
    shot_h = clip_h if storyline is not None else 0
    speech = tl.meta.get("speech")
    speech_h = int(10 * scale) + 6 if speech else 0
    axis_h = fs + 10
    height = title_h + wave_h + speech_h + clip_h + shot_h + axis_h + 6
    img = Image.new("RGB", (width, height), BG)
    cv = _Canvas(ImageDraw.Draw(img), _font(fs), fs, scale, pad_x, width - 2 * pad_x, width, max(tl.padded_frames, 1))
    cv.draw.text((pad_x, 3), _title(tl), fill=TEXT, font=cv.font)
    y0, y1 = title_h, title_h + wave_h
    _draw_waveform(cv, tl, aligned.audio.waveform, y0, y1)
    if speech:
        _draw_speech(cv, tl, speech, y1 + 2, y1 + speech_h - 2)
    c0 = y1 + speech_h + 4
    cy0, cy1 = c0 + int(6 * scale), c0 + clip_h - 2
    _draw_clips(cv, tl, c0, cy0, cy1)
    _draw_seams(cv, tl, y0, cy0, cy1)
    if storyline is not None:
        _draw_shots(cv, storyline, c0 + clip_h + 2, shot_h)
    _draw_axis(cv, tl, height - axis_h - 2)
    return img


def _title(tl: Any) -> str:
    title = (
        f"{tl.duration_s:.2f} s audio, {tl.num_frames} frames @ {tl.fps_num}/{tl.fps_den} fps, "
        f"{len(tl.clips)} clips of {tl.clip_frames}"
    )
    if tl.snap_tolerance_frames:
        title += f", seams snapped ±{tl.snap_tolerance_frames} ({len(set(tl.snapped_seams))} moved)"
    if tl.overlap_frames:
        title += f", overlap {tl.overlap_frames}"
    if tl.meta.get("seam_detector"):
        title += f", pauses by {tl.meta['seam_detector']}"
    return title


def _draw_waveform(cv: _Canvas, tl: Any, waveform: torch.Tensor, y0: int, y1: int) -> None:
    d, pad_x, plot_w = cv.draw, cv.pad_x, cv.plot_w
    mid = (y0 + y1) / 2
    audio_px = min(plot_w, max(1, int(round(plot_w * tl.duration_s * float(tl.fps) / cv.total))))
    d.rectangle([pad_x + audio_px, y0, pad_x + plot_w, y1], fill=TAIL)
    lo, hi = waveform_envelope(waveform, audio_px)
    amp = ((y1 - y0) / 2 - 4) / max(float(hi.abs().max()), float(lo.abs().max()), 1e-6)
    for i in range(audio_px):
        d.line([(pad_x + i, mid - float(hi[i]) * amp), (pad_x + i, mid - float(lo[i]) * amp)], fill=WAVE)
    d.line([(pad_x, mid), (pad_x + plot_w, mid)], fill=(200, 200, 200))


def _draw_speech(cv: _Canvas, tl: Any, speech: dict, y0: int, y1: int) -> None:
    """Pause band over the audio, speech regions (seconds) in green on it, labelled with the detector."""
    fps = float(tl.fps)
    cv.draw.rectangle([cv.x_of(0), y0, cv.x_of(tl.duration_s * fps), y1], fill=PAUSE)
    for a, b in speech.get("regions", []):
        cv.draw.rectangle([cv.x_of(a * fps), y0, max(cv.x_of(a * fps), cv.x_of(b * fps)), y1], fill=SPEECH)
    cv.label(cv.x_of(0), cv.plot_w, y0 - 1, f"speech ({speech.get('method', '?')})")


def _draw_clips(cv: _Canvas, tl: Any, c0: int, cy0: int, cy1: int) -> None:
    for c in tl.clips:
        xa, xb = cv.x_of(c.frame_start), cv.x_of(c.frame_end)
        cv.draw.rectangle([xa, cy0, max(xa, xb), cy1], fill=CLIP_A if c.index % 2 == 0 else CLIP_B)
        if c.overlap_before:  # frames rendered by both this clip and the one before
            prev_end = tl.clips[c.index - 1].render_end
            cv.draw.rectangle([cv.x_of(c.render_start), c0, cv.x_of(prev_end), c0 + int(4 * cv.scale)], fill=OVERLAP)
        cv.label(xa, xb, cy0 + 1, str(c.index))


def _draw_seams(cv: _Canvas, tl: Any, y0: int, cy0: int, cy1: int) -> None:
    d, scale = cv.draw, cv.scale
    snapped = set(tl.snapped_seams)
    dense = cv.plot_w / max(len(tl.clips), 1) < 12
    for i, f in enumerate(tl.seams):
        colour = SNAPPED if i in snapped else SEAM
        x = cv.x_of(f)
        if dense:  # too many clips to draw lines through the waveform: coloured ticks under the clips
            d.line([(x, cy0 + (cy1 - cy0) // 2), (x, cy1)], fill=colour)
            continue
        if i in snapped:
            xn = cv.x_of(tl.nominal_seams[i])
            d.line([(xn, cy0), (xn, cy1)], fill=NOMINAL, width=max(1, int(scale)))
            d.line([(xn, cy1), (x, cy1)], fill=SNAPPED)
        d.line([(x, y0), (x, cy1)], fill=colour, width=max(1, int(round(scale))) + (i in snapped))


def _draw_shots(cv: _Canvas, storyline: Any, s0: int, shot_h: int) -> None:
    for j, shot in enumerate(storyline.shots):
        xa, xb = cv.x_of(shot.frame_start), cv.x_of(shot.frame_end)
        cv.draw.rectangle([xa, s0, max(xa, xb), s0 + shot_h - 4], fill=SHOT_A if j % 2 == 0 else SHOT_B)
        cv.label(xa, xb, s0 + 2, shot.emotion or shot.expression or str(shot.index))


def _draw_axis(cv: _Canvas, tl: Any, a0: int) -> None:
    d, font = cv.draw, cv.font
    d.line([(cv.pad_x, a0), (cv.pad_x + cv.plot_w, a0)], fill=TEXT)
    span_s = cv.total / float(tl.fps)
    step = next((s for s in _NICE_STEPS_S if cv.plot_w / (span_s / s) >= 8 * cv.fs), _NICE_STEPS_S[-1])
    t = 0.0
    while t <= span_s + 1e-9:
        x = cv.x_of(t * float(tl.fps))
        d.line([(x, a0), (x, a0 + 4)], fill=TEXT)
        label = _clock(t, step)
        if x + 2 + d.textlength(label, font=font) <= cv.width:
            d.text((x + 2, a0 + 3), label, fill=TEXT, font=font)
        t += step

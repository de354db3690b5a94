"""Blueprint DiT Sampler: the whole performance drafted at low resolution.

The blueprint covers the full timeline at a low frame rate and resolution. It
is rendered in windows of ``window_frames`` (4n+1) blueprint frames; each
window starts from the last frame of the previous one (motion-frame
continuation, shared so nothing is duplicated), the first window from the
reference image. Each window's prompt is the storyline shot active at the
window's centre.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import torch

from .audio_aligner import AlignedAudio
from .errors import InputError
from .runtime import Runtime
from .sampling import (
    ClipRequest,
    SamplerSettings,
    check_resolution,
    check_seed,
    decode_to_uint8,
    derive_seed,
    encode_condition,
    image_to_model_space,
    sample_clips,
)
from .text_prompts import PromptBank
from .timeline import check_clip_frames, parse_fps

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BlueprintSettings:
    """Blueprint size, rate and sampling (defaults suit Wan 2.1 at low cost)."""

    width: int = 320
    height: int = 192
    fps: float | str = 8
    window_frames: int = 33
    seed: int = 0
    sampler: SamplerSettings = field(default_factory=lambda: SamplerSettings(steps=20, guidance=5.0, shift=3.0))

    def check(self) -> BlueprintSettings:
        check_resolution(self.width, self.height, "blueprint_")
        parse_fps(self.fps)
        check_clip_frames(self.window_frames)
        check_seed(self.seed)
        self.sampler.check()
        return self


@dataclass
class Blueprint:
    """The ``AVATAR_BLUEPRINT`` artefact: low-res frames of the whole duration.

    Attributes:
        frames: ``[N, h, w, 3]`` uint8; frame ``i`` shows time ``i / fps``.
        fps_num / fps_den: blueprint frame rate.
        window_starts: first blueprint frame of every rendered window.
    """

    frames: torch.Tensor
    fps_num: int
    fps_den: int
    window_starts: list[int]

    @property
    def fps(self) -> Fraction:
        return Fraction(self.fps_num, self.fps_den)

    def index_at(self, seconds: Fraction | float) -> int:
        """Blueprint frame nearest to time ``seconds``."""
        i = round(Fraction(seconds) * self.fps)
        return max(0, min(len(self.frames) - 1, int(i)))

    def save(self, folder: Path) -> None:
        from safetensors.torch import save_file

        folder.mkdir(parents=True, exist_ok=True)
        save_file({"frames": self.frames.contiguous()}, str(folder / "blueprint.safetensors"))
        meta = {
            "fps": f"{self.fps_num}/{self.fps_den}",
            "frames": len(self.frames),
            "window_starts": self.window_starts,
        }
        (folder / "blueprint.json").write_text(json.dumps(meta, indent=1))


def blueprint_frame_count(aligned: AlignedAudio, fps: Fraction) -> int:
    """Blueprint frames needed to cover every rendered output frame (ceil)."""
    tl = aligned.timeline
    span = Fraction(tl.padded_frames - 1) / tl.fps  # time of the last rendered frame
    return int(-((-span * fps) // 1)) + 1


def render_blueprint(
    dit,
    vae,
    text_encoder,
    reference: torch.Tensor,
    aligned: AlignedAudio,
    storyline,
    settings: BlueprintSettings,
    runtime: Runtime,
) -> Blueprint:
    """Render the blueprint of the whole timeline.

    Args:
        dit / vae / text_encoder: loaded model handles (``WanDiT``, ``WanVAE``, ``TextEncoder``).
        reference: reference image ``[H,W,3]`` float 0..1.
        aligned: the Audio Aligner's output (timeline + audio).
        storyline: the Director's storyline (global + per-shot prompts).
        settings: resolution, rate, window length, seed, sampler.
        runtime: device and hooks.
    """
    settings.check()
    if dit.in_channels != 36:
        raise InputError(
            "dit",
            dit.variant,
            "the blueprint needs an image-to-video DiT (36 input channels)",
            "load a Wan 2.1 I2V / FLF2V or Wan 2.2 I2V checkpoint",
        )
    tl = aligned.timeline
    bp_fps = parse_fps(settings.fps)
    if bp_fps > tl.fps:
        raise InputError(
            "blueprint_fps", settings.fps, f"is higher than the video fps {tl.fps}", "use a lower rate, e.g. 8"
        )
    total = blueprint_frame_count(aligned, bp_fps)
    stride = settings.window_frames - 1
    n_windows = max(1, -(-(total - 1) // stride))
    starts = [w * stride for w in range(n_windows)]

    prompts = PromptBank(text_encoder, runtime)
    window_shots = []
    for s in starts:
        centre_t = Fraction(s + stride // 2) / bp_fps
        window_shots.append(shot_at_time(tl, centre_t))
    prompts.encode_all(
        [storyline.shot_prompt(k) for k in window_shots] + [storyline.shot_negative(k) for k in window_shots]
    )

    w, h = settings.width, settings.height
    out = torch.empty(n_windows * stride + 1, h, w, 3, dtype=torch.uint8)
    prev_last = image_to_model_space(reference, h, w)
    bar = runtime.progress(n_windows, "blueprint windows")
    try:
        with runtime.use_models(dit.transformer, vae.vae):
            for wi, s in enumerate(starts):
                runtime.check_interrupt()
                k = window_shots[wi]
                req = ClipRequest(
                    num_frames=settings.window_frames,
                    first_frame=prev_last,
                    last_frame=None,
                    prompt_embeds=prompts.get(storyline.shot_prompt(k)),
                    negative_embeds=prompts.get(storyline.shot_negative(k)),
                    seed=derive_seed(settings.seed, wi, salt=1),
                )
                cond = encode_condition(vae, [req], h, w, runtime)
                lat = sample_clips(
                    dit.transformer, cond, [req], settings.sampler, runtime, desc=f"blueprint window {wi}"
                )
                frames = decode_to_uint8(vae, lat)[0]
                out[s : s + settings.window_frames] = frames
                prev_last = frames[-1].float().div(127.5).sub(1).permute(2, 0, 1)
                runtime.emit_preview("blueprint", frames[-1])
                bar.update(1)
    finally:
        bar.close()
    return Blueprint(
        frames=out[:total].clone(), fps_num=bp_fps.numerator, fps_den=bp_fps.denominator, window_starts=starts
    )


def shot_at_time(timeline, seconds: Fraction) -> int:
    """Index of the sub-clip (= storyline shot) whose frame span holds time ``seconds``."""
    frame = int(Fraction(seconds) * timeline.fps)
    for c in timeline.clips:
        if frame <= c.frame_end:
            return c.index
    return timeline.clips[-1].index

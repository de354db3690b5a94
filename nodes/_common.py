"""Widget definitions shared by the DiT-sampling nodes."""

from __future__ import annotations

from avatar_cascade.sampling.settings import SCHEDULERS


def sampler_inputs(steps: int, guidance: float, shift: float) -> dict:
    return {
        "steps": ("INT", {"default": steps, "min": 1, "max": 200, "tooltip": "Denoising steps (20-40 full quality)."}),
        "guidance": (
            "FLOAT",
            {
                "default": guidance,
                "min": 0.0,
                "max": 30.0,
                "step": 0.1,
                "tooltip": "Text guidance scale (1.0 = off, one forward per step).",
            },
        ),
        "shift": (
            "FLOAT",
            {
                "default": shift,
                "min": 0.1,
                "max": 50.0,
                "step": 0.1,
                "tooltip": "Flow-matching shift: 3.0 at 480p, 5.0 at 720p.",
            },
        ),
        "scheduler": (list(SCHEDULERS), {"default": "unipc", "tooltip": "Flow-matching scheduler."}),
        "seed": (
            "INT",
            {
                "default": 0,
                "min": 0,
                "max": 2**63 - 1,
                "control_after_generate": True,
                "tooltip": "Run seed; each window/clip derives its own seed from it.",
            },
        ),
    }


MODEL_INPUTS = {
    "dit": ("AVATAR_DIT", {"tooltip": "Wan DiT (image-to-video / first-last-frame capable)."}),
    "vae": ("AVATAR_VAE", {"tooltip": "Wan VAE."}),
    "text_encoder": ("AVATAR_TEXT_ENCODER", {"tooltip": "UMT5 text encoder."}),
}


# Optional inputs for the DiT-sampling nodes (blueprint, refiner): add to their "optional" section.
OPTIONAL_MODEL_INPUTS = {
    "clip_vision": (
        "AVATAR_CLIP_VISION",
        {"tooltip": "CLIP ViT-H image encoder: required by Wan 2.1 I2V / FLF2V DiTs, unused by Wan 2.2."},
    ),
}


def advanced_sampler_inputs() -> dict:
    """Optional widgets: low-noise expert guidance (Wan 2.2 A14B) and audio guidance (audio adapter)."""
    return {
        "guidance_low_noise": (
            "FLOAT",
            {
                "default": -1.0,
                "min": -1.0,
                "max": 30.0,
                "step": 0.1,
                "tooltip": "Wan 2.2 A14B: text guidance of the low-noise expert (-1 = same as guidance).",
            },
        ),
        "audio_guidance": (
            "FLOAT",
            {
                "default": 4.0,
                "min": 0.0,
                "max": 30.0,
                "step": 0.1,
                "tooltip": "Audio guidance with an audio adapter (InfiniteTalk: 4; 1.0 = no extra audio pass).",
            },
        ),
    }


def sampler_settings(steps, guidance, shift, scheduler, guidance_low_noise=-1.0, audio_guidance=4.0):
    """SamplerSettings from the widgets of :func:`sampler_inputs` and :func:`advanced_sampler_inputs`."""
    from avatar_cascade.sampling.settings import SamplerSettings

    low = None if guidance_low_noise is None or guidance_low_noise < 0 else float(guidance_low_noise)
    return SamplerSettings(steps, guidance, shift, scheduler, guidance_2=low, audio_guidance=float(audio_guidance))

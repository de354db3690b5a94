"""Widget definitions shared by the DiT-sampling nodes."""

from __future__ import annotations

from avatar_cascade.sampling import SCHEDULERS


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

"""Model loading: real single-file checkpoints (and Hugging Face folders) into diffusers / transformers modules."""

from avatar_cascade.models import wan_vace  # noqa: F401, E402  (registers the Wan VACE loader with wan_dit)

"""Model loading: real single-file checkpoints (and Hugging Face folders) into diffusers / transformers modules."""

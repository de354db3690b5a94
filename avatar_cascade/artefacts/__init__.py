"""avatar_cascade.artefacts."""

"""avatar_cascade.stages."""

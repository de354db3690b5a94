"""avatar_cascade.stages.director."""

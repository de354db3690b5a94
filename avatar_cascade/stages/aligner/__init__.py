"""avatar_cascade.stages.aligner."""

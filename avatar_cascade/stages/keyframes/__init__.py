"""avatar_cascade.stages.keyframes."""

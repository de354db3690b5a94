"""avatar_cascade.stages.blueprint."""

"""avatar_cascade.stages.inbetween."""

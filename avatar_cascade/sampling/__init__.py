"""avatar_cascade.sampling.loop."""

"""Blueprint DiT Sampler: the whole duration at low resolution and frame rate, window by window."""

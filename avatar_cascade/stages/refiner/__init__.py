"""First-Last-Frame Refiner: every sub-clip between its two keyframes, batched, cached per clip."""

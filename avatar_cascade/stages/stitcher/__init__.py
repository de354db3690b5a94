"""avatar_cascade.stages.stitcher."""

"""Keyframe Extractor: score blueprint frames near every seam, pick one, lift it to the refine size."""

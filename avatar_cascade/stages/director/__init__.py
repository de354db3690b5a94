"""MLLM Director: reference image + audio + instruction -> storyline (global part + one shot per sub-clip)."""

"""Tiny models with the real architectures, written in the real on-disk layouts (demo and tests)."""

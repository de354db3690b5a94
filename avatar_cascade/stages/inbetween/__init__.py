"""Keyframes from images: ToonCrafter-style in-betweening of keys an artist drew."""

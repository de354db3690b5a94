"""avatar_cascade.core."""

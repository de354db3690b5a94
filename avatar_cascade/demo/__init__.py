"""avatar_cascade.demo."""

"""avatar_cascade.stages.refiner."""

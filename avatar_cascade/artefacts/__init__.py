"""The artefacts that travel between the stages: plain dataclasses that save to JSON + safetensors.

Timeline (frame-exact arithmetic), AlignedAudio (AVATAR_TIMELINE), Storyline (AVATAR_STORYLINE),
Blueprint (AVATAR_BLUEPRINT, frames on disk), Keyframes (AVATAR_KEYFRAMES), Clips (AVATAR_CLIPS).
A stage imports the types it consumes from here, never from the stage that made them."""

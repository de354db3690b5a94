"""What every DiT-sampling stage shares: sampler settings, the Wan I2V/FLF2V condition, the denoising loop."""

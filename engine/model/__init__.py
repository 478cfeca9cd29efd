"""Presets, network modules (UNet, VAE, Whisper, face locator, attention), sampler; imports engine.common."""

"""Errors and constants (sample rate, fps, timesteps) every room shares; imports nothing of the project."""

"""Numbers every room shares: the audio rate models take, the video frame rate, the diffusion timesteps."""

SAMPLE_RATE = 16_000  # Hz: the audio every model and session takes (Whisper's rate); other rates are resampled
FPS = 25  # video frames per second: every preset's output, GRID and the synthetic talker's clips
NUM_TRAIN_TIMESTEPS = 1000  # diffusion training timesteps (SD 1.5 / EchoMimic); t runs 0 .. 999
LAST_TIMESTEP = NUM_TRAIN_TIMESTEPS - 1

"""The portrait and speech clip that ship with the package: what `livehead animate`, `bench` and the
benchmarks run when given no files.

    crop, pcm = bundled_demo(cfg)        # PortraitCrop at cfg's image size, float32 [T] at cfg's rate
"""

from __future__ import annotations

from pathlib import Path

from livehead.engine.media.audio_video import load_audio, load_image
from livehead.engine.media.face import prepare_portrait

ASSETS = Path(__file__).resolve().parents[1] / "assets"
DEFAULT_IMAGE = ASSETS / "portrait.png"
DEFAULT_AUDIO = ASSETS / "speech.wav"

def bundled_demo(cfg, seconds: float | None = None):
    """The bundled portrait cropped for cfg and the bundled speech at cfg's rate (its first `seconds` when
    given): the clip `livehead animate`, `livehead bench` and the benchmarks run without arguments.
    Returns (PortraitCrop, pcm float32 [T])."""
    crop = prepare_portrait(load_image(DEFAULT_IMAGE), cfg.stream.image_size)
    pcm = load_audio(DEFAULT_AUDIO, sample_rate=cfg.audio.sample_rate)
    if seconds is not None:
        pcm = pcm[: max(1, int(seconds * cfg.audio.sample_rate))]
    return crop, pcm

"""The portrait and speech clip that ship with the package: what `livehead animate`, `bench` and the
benchmarks run when given no files (`livehead.engine.runtime.portrait.bundled_demo` prepares them)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

ASSETS = Path(__file__).resolve().parents[1] / "assets"
DEFAULT_IMAGE = ASSETS / "portrait.png"
DEFAULT_AUDIO = ASSETS / "speech.wav"


@lru_cache(maxsize=4)
def _bundled_speech(sample_rate: int) -> np.ndarray:
    from livehead.engine.media.audio_video import load_audio

    pcm = load_audio(DEFAULT_AUDIO, sample_rate=sample_rate)
    pcm.setflags(write=False)
    return pcm


def looped_speech(sample_rate: int, start: int, n: int) -> np.ndarray:
    """Samples [start, start + n) of the bundled speech at `sample_rate`, the clip looped → float32 [n]: what a
    measurement of a talking session feeds it (decoded once per rate)."""
    return np.take(_bundled_speech(sample_rate), np.arange(start, start + n), mode="wrap")


def speech_samples(sample_rate: int) -> int:
    """Length of the bundled speech at `sample_rate`, in samples."""
    return len(_bundled_speech(sample_rate))

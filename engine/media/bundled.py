"""The portrait and speech clip that ship with the package: what `livehead animate`, `bench` and the
benchmarks run when given no files (`livehead.engine.runtime.portrait.bundled_demo` prepares them)."""

from __future__ import annotations

from pathlib import Path

ASSETS = Path(__file__).resolve().parents[1] / "assets"
DEFAULT_IMAGE = ASSETS / "portrait.png"
DEFAULT_AUDIO = ASSETS / "speech.wav"

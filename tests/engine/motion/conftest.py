"""Shared fixtures of the motion tests: the bundled portrait, prepared once, and the shipped motion space."""

from __future__ import annotations

import numpy as np
import pytest

from livehead.engine.media.audio_video import load_image
from livehead.engine.motion.photo import Photo, prepare_photo
from livehead.engine.motion.space import MotionSpace, default_motion_space
from tests import ASSETS


@pytest.fixture(scope="session")
def portrait() -> np.ndarray:
    """The bundled portrait, uint8 [256, 256, 3]."""
    return load_image(ASSETS / "portrait.png")


@pytest.fixture(scope="session")
def portrait_photo(portrait) -> Photo:
    return prepare_photo(portrait)


@pytest.fixture(scope="session")
def space() -> MotionSpace:
    return default_motion_space()

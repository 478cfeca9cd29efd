"""The picture a preset animates, from any photo a user gives.

    picture = portrait_for(cfg, load_image("me.jpg"))    # .image uint8 [H, W, 3], .mask float32 [H, W]
    picture, pcm = bundled_demo(cfg)                       # the shipped portrait and speech
    avatar = prepare_avatar(runners, picture.image, picture.mask)

Pixel presets (tiny, EchoMimic) draw a square face crop at the preset's size (`prepare_portrait`); the motion
tier moves the whole photo at its own aspect ratio, long side at the preset's size (`prepare_photo`, which
also refuses photos with no face or several faces).
"""

from __future__ import annotations

import cv2
import numpy as np

from livehead.engine.media.audio_video import load_audio, load_image
from livehead.engine.media.bundled import DEFAULT_AUDIO, DEFAULT_IMAGE
from livehead.engine.media.face import FaceCrop, prepare_portrait
from livehead.engine.model.config import ModelConfig
from livehead.engine.motion.photo import Photo, prepare_photo


def portrait_for(cfg: ModelConfig, image: np.ndarray, crop: bool = True) -> FaceCrop | Photo:
    """image uint8 RGB (any size) → what `prepare_avatar` takes for this preset. crop=False: pixel presets use
    the whole image when no face is found (the motion tier always needs one)."""
    if cfg.motion is not None:
        return prepare_photo(image, cfg.stream.image_size)
    return prepare_portrait(image, cfg.stream.image_size, crop=crop)


def bundled_demo(cfg: ModelConfig, seconds: float | None = None) -> tuple[FaceCrop | Photo, np.ndarray]:
    """The bundled portrait prepared for cfg and the bundled speech at cfg's rate (its first `seconds` when
    given): the clip `livehead animate`, `livehead bench` and the benchmarks run without arguments.
    Returns (picture, pcm float32 [T]). The bundled portrait is 256 px; for the motion tier it is upsampled to the
    preset's output size, the size a phone photo gives, so the demo and `livehead bench` run at that size."""
    picture = bundled_portrait(cfg)
    pcm = load_audio(DEFAULT_AUDIO, sample_rate=cfg.audio.sample_rate)
    if seconds is not None:
        pcm = pcm[: max(1, int(seconds * cfg.audio.sample_rate))]
    return picture, pcm


def bundled_portrait(cfg: ModelConfig) -> FaceCrop | Photo:
    """The bundled portrait prepared for cfg (`bundled_demo`'s picture; the live server's default avatar): for
    the motion tier upsampled from its 256 px to the preset's output size."""
    image = load_image(DEFAULT_IMAGE)
    if cfg.motion is not None and max(image.shape[:2]) < cfg.stream.image_size:
        scale = cfg.stream.image_size / max(image.shape[:2])
        size = (round(image.shape[1] * scale), round(image.shape[0] * scale))
        image = cv2.resize(image, size, interpolation=cv2.INTER_CUBIC)
    return portrait_for(cfg, image)

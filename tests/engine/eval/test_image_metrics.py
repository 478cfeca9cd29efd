"""PSNR and SSIM on known cases; face and mouth boxes from landmarks lie inside the image, the mouth box
inside the face box."""

from __future__ import annotations

import numpy as np
import pytest

from livehead.engine.eval.image_metrics import crop, face_box, mouth_box, psnr, ssim
from livehead.engine.media.audio_video import load_image
from livehead.engine.media.landmarks import face_landmarks
from tests import ASSETS


def test_psnr():
    a = np.full((8, 8, 3), 100, np.uint8)
    assert psnr(a, a) == float("inf")
    assert psnr(a, a + 1) == pytest.approx(20 * np.log10(255.0))  # MSE 1 → 48.13 dB
    with pytest.raises(ValueError, match="shape"):
        psnr(a, a[:4])


def test_ssim():
    rng = np.random.default_rng(0)
    img = load_image(ASSETS / "portrait.png")
    assert ssim(img, img) == pytest.approx(1.0)
    noisy = np.clip(img + rng.normal(0, 20, img.shape), 0, 255).astype(np.uint8)
    assert 0.2 < ssim(img, noisy) < 0.9
    assert ssim(img, noisy) < ssim(img, np.clip(img.astype(int) + 10, 0, 255).astype(np.uint8))  # noise < brightness


def test_boxes():
    img = load_image(ASSETS / "portrait.png")
    lm = face_landmarks(img)
    fx0, fy0, fx1, fy1 = face_box(lm, img.shape)
    mx0, my0, mx1, my1 = mouth_box(lm, img.shape)
    assert 0 <= fx0 < mx0 < mx1 < fx1 <= img.shape[1] and 0 <= fy0 < my0 < my1 <= fy1 <= img.shape[0]
    assert crop(img, (mx0, my0, mx1, my1)).shape == (my1 - my0, mx1 - mx0, 3)

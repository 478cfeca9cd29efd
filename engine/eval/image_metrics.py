"""Image metrics for rendered frames against real ones: PSNR, SSIM (Gaussian window, sigma 1.5, on luma),
and the face and mouth boxes (from Face Mesh landmarks) they are measured in.

    psnr(rendered, real)                                  # dB; inf when identical
    ssim(rendered, real)                                  # mean SSIM in [-1, 1]
    b = mouth_box(lm, real.shape); ssim(crop(rendered, b), crop(real, b))
"""

from __future__ import annotations

import numpy as np

from livehead.engine.motion import mesh

LUMA = np.array([0.299, 0.587, 0.114])
SSIM_WINDOW = 11  # px, Gaussian window of Wang et al. 2004
SSIM_SIGMA = 1.5
SSIM_K = (0.01, 0.03)
FACE_PAD = (0.05, 0.05, 0.05)  # face box: the face oval padded by these fractions (sides, top, bottom)
MOUTH_PAD = (0.25, 0.3, 0.8)  # mouth box: the outer lips padded sideways, up, and down (room for the jaw)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Two uint8 images of one shape → PSNR in dB (inf when identical)."""
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} and {b.shape}")
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else float(10.0 * np.log10(255.0**2 / mse))


def _luma(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    return x @ LUMA if x.ndim == 3 else x


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM (Wang et al. 2004 constants, 11×11 Gaussian window, sigma 1.5) of the luma of two uint8
    images of one shape ([H, W] or [H, W, 3])."""
    import cv2

    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} and {b.shape}")
    x, y = _luma(a), _luma(b)
    c1, c2 = (SSIM_K[0] * 255) ** 2, (SSIM_K[1] * 255) ** 2
    blur = lambda z: cv2.GaussianBlur(z, (SSIM_WINDOW, SSIM_WINDOW), SSIM_SIGMA)
    mx, my = blur(x), blur(y)
    sxx, syy, sxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    m = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return float(m.mean())


def box(points: np.ndarray, shape: tuple[int, ...], pad_x: float, pad_top: float,
        pad_bottom: float) -> tuple[int, int, int, int]:
    """Bounding box (x0, y0, x1, y1) of points [N, 2], padded by fractions of its size, clipped to an image
    of shape (H, W, ...)."""
    x0, y0 = points.min(0)
    x1, y1 = points.max(0)
    w, h = x1 - x0, y1 - y0
    height, width = shape[:2]
    return (max(0, int(x0 - pad_x * w)), max(0, int(y0 - pad_top * h)),
            min(width, int(np.ceil(x1 + pad_x * w))), min(height, int(np.ceil(y1 + pad_bottom * h))))


def face_box(lm: np.ndarray, shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """The face oval of landmarks [478, 2+], padded 5 % → (x0, y0, x1, y1) inside an image of shape."""
    return box(np.asarray(lm)[list(mesh.FACE_OVAL), :2], shape, *FACE_PAD)


def mouth_box(lm: np.ndarray, shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """The outer lips of landmarks [478, 2+], padded 25 % sideways, 30 % up, 80 % down → (x0, y0, x1, y1)."""
    return box(np.asarray(lm)[list(mesh.LIP_OUTER_UPPER + mesh.LIP_OUTER_LOWER), :2], shape, *MOUTH_PAD)


def crop(image: np.ndarray, b: tuple[int, int, int, int]) -> np.ndarray:
    """image [H, W, ...] inside the box (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = b
    return image[y0:y1, x0:x1]

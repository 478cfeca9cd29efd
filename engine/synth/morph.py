"""New identities for the synthetic talker's data: a landmark-aligned morph of two portraits.

    face = morph_portraits(photo_a, photo_b, alpha=0.4, size=256)   # uint8 [256, 256, 3]
    python -m livehead.engine.synth.make_clips --portrait a.png --portrait b.png --morph 0.5 --out DIR

Both photos are cropped as `engine.face.prepare_portrait` crops them. Each crop's 478 Face Mesh points
(plus fixed points along the image border) are averaged, (1 − alpha)·A + alpha·B; both crops are warped
onto that averaged shape (one Delaunay triangulation of it, piecewise affine) and cross-dissolved with
the same alpha. The result has the averaged face shape and the blended skin, eyes and lips: a face that
is neither photo. With few real faces (the 7 GRID speakers here) a model can learn each one by heart
and ignore its reference image; a continuum of morphs makes reading the reference the only way to
draw the right face.
"""

from __future__ import annotations

import numpy as np

from livehead.engine.common.errors import InputError
from livehead.engine.media import landmarks as L
from livehead.engine.media.warp import border_points, delaunay_triangles, piecewise_affine_warp
from livehead.engine.synth.talker import TalkerStyle, crop_portrait


def morph_portraits(a: np.ndarray, b: np.ndarray, alpha: float, size: int = 256) -> np.ndarray:
    """Morph of portraits a and b (RGB uint8, any size, one face each) → uint8 [size, size, 3], the face
    crop with alpha = 0 giving a's face and 1 giving b's. InputError when a photo shows no face."""
    if not 0.0 <= alpha <= 1.0:
        raise InputError(f"morph weight must be in [0, 1], got {alpha}")
    if size < 32:
        raise InputError(f"morph size must be at least 32 pixels, got {size}")
    crops, shapes = [], []
    for name, photo in (("first", a), ("second", b)):
        try:
            crop = crop_portrait(photo, size, TalkerStyle())
            lm = L.face_landmarks(crop)
        except InputError:
            lm = None
        if lm is None:
            raise InputError(f"no face found in the {name} portrait to morph; use clear, frontal face photos")
        crops.append(crop)
        shapes.append(np.concatenate([lm[:, :2].astype(np.float64), border_points(size)]))
    target = (1.0 - alpha) * shapes[0] + alpha * shapes[1]
    tris = delaunay_triangles(target, size)
    warped = [piecewise_affine_warp(c, s, target, tris).astype(np.float32) for c, s in zip(crops, shapes)]
    return np.clip((1.0 - alpha) * warped[0] + alpha * warped[1] + 0.5, 0, 255).astype(np.uint8)

"""PhotoRenderer: a zero motion renders the photo back (PSNR ≥ 40 dB on the bundled portrait and on a GRID
frame); the output keeps the photo's aspect ratio with even sides, long side ≤ max_side; a render depends on
its argument only (A, B, A gives A twice) and two threads sharing one renderer get what one thread gets."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest

from livehead.engine.common.errors import InputError
from livehead.engine.eval.image_metrics import psnr
from livehead.engine.media.audio_video import load_video
from livehead.engine.motion.renderer import PhotoRenderer
from tests import GRID

ZERO_MOTION_PSNR_DB = 40.0
GRID_PHOTO_CLIP = "lbbc2a"  # a held-out clip: its first frame as the photo


def _moves(space, neutral, n: int = 6) -> np.ndarray:
    """n moved shapes [n, 478, 2]: jaw open and shut, head turned and shifted, one eye half closed."""
    motion = space.neutral_motion(n)
    k = space.k
    t = np.arange(n)
    motion[:, 0] = 0.6 * np.sin(t + 1.0)  # the first component opens the jaw
    motion[:, 2] = 0.2 * np.cos(t)
    motion[:, k] = np.where(t % 3 == 1, 0.5, 1.0)
    motion[:, k + 2] = np.deg2rad(3.0) * np.sin(0.7 * t)
    motion[:, k + 4] = 0.04 * np.cos(t)
    return space.decode(motion, neutral)


def _zero_motion_psnr(renderer: PhotoRenderer, space) -> float:
    moved = space.decode(space.neutral_motion(), renderer.neutral)[0]
    return psnr(renderer.render(moved), renderer.image)


def test_zero_motion_renders_the_portrait_back(portrait_photo, space):
    assert _zero_motion_psnr(PhotoRenderer(portrait_photo), space) >= ZERO_MOTION_PSNR_DB


def test_zero_motion_renders_a_grid_frame_back(space):
    path = GRID / f"{GRID_PHOTO_CLIP}.mpg"
    if not path.exists():
        pytest.skip(f"GRID sample clips not found at {GRID}")
    frames, _ = load_video(path)
    assert _zero_motion_psnr(PhotoRenderer(frames[0]), space) >= ZERO_MOTION_PSNR_DB


@pytest.mark.parametrize("canvas, max_side, expected", [
    ((301, 451), 512, (300, 450)),  # smaller than max_side: kept, the odd row and column dropped
    ((700, 1000), 512, (358, 512)),  # larger: 512x358.4 → 512x358
    ((1000, 703), 320, (320, 224)),  # upright, another max_side: 225x320 → 224x320
])
def test_output_size_keeps_the_aspect_ratio_with_even_sides(portrait, space, canvas, max_side, expected):
    h0, w0 = canvas
    image = np.full((h0, w0, 3), 235, np.uint8)
    face = cv2.resize(portrait, (min(h0, w0) // 2 * 2, min(h0, w0) // 2 * 2))
    top, left = (h0 - face.shape[0]) // 2, (w0 - face.shape[1]) // 2
    image[top:top + face.shape[0], left:left + face.shape[1]] = face
    renderer = PhotoRenderer(image, max_side=max_side)
    frame = renderer.render(_moves(space, renderer.neutral, 2)[1])
    h, w = frame.shape[:2]
    assert (h, w) == expected and frame.dtype == np.uint8 and frame.shape[2] == 3
    assert h % 2 == 0 and w % 2 == 0 and max(h, w) <= max_side
    assert abs(w / h - w0 / h0) < 2.0 / min(h, w)  # the aspect ratio to within a pixel or so


def test_a_photo_larger_than_max_side_is_resized_for_the_renderer(portrait_photo, space):
    renderer = PhotoRenderer(portrait_photo, max_side=128)
    assert renderer.image.shape == (128, 128, 3)
    np.testing.assert_allclose(renderer.neutral, portrait_photo.landmarks / 2)
    assert _zero_motion_psnr(renderer, space) >= ZERO_MOTION_PSNR_DB


def test_render_depends_on_its_argument_only(portrait_photo, space):
    renderer = PhotoRenderer(portrait_photo)
    a, b = _moves(space, renderer.neutral, 3)[1:3]  # a: an eye half closed, mouth open; b: both eyes open
    first = renderer.render(a)
    assert not np.array_equal(first, renderer.image)
    between = renderer.render(b)
    np.testing.assert_array_equal(renderer.render(a), first)
    np.testing.assert_array_equal(PhotoRenderer(portrait_photo).render(b), between)  # a fresh renderer agrees


def test_two_threads_share_one_renderer(portrait_photo, space):
    renderer = PhotoRenderer(portrait_photo)
    moved = _moves(space, renderer.neutral, 8)
    expected = [renderer.render(m) for m in moved]
    order = [i % len(moved) for i in range(48)]
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda i: renderer.render(moved[i]), order))
    for i, frame in zip(order, results):
        np.testing.assert_array_equal(frame, expected[i])


def test_renderer_refuses_bad_landmarks(portrait_photo):
    renderer = PhotoRenderer(portrait_photo)
    with pytest.raises(ValueError, match="478, 2"):
        renderer.render(np.zeros((68, 2)))


def test_an_image_is_prepared_or_taken_with_its_landmarks(portrait, portrait_photo):
    from_image = PhotoRenderer(portrait)  # prepare_photo's checks
    np.testing.assert_array_equal(from_image.image, portrait_photo.image)
    np.testing.assert_allclose(from_image.neutral, portrait_photo.landmarks)
    given = PhotoRenderer(portrait, portrait_photo.landmarks * 1.001)  # landmarks taken as they are
    np.testing.assert_allclose(given.neutral, portrait_photo.landmarks * 1.001)
    with pytest.raises(InputError, match="no face found"):
        PhotoRenderer(np.full((128, 128, 3), 128, np.uint8))
    with pytest.raises(ValueError, match="carries its landmarks"):
        PhotoRenderer(portrait_photo, portrait_photo.landmarks)

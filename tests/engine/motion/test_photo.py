"""prepare_photo's rules: one clear face is prepared (landmarks, mask, even sides, at most max_side);
no face, several faces, a tiny image or a tiny face give an InputError saying what to do; a huge photo is
resized; grey and RGBA photos become RGB as load_image makes them."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from livehead.engine.common.errors import InputError
from livehead.engine.media.audio_video import load_image
from livehead.engine.media.landmarks import NOSE_TIP
from livehead.engine.motion.photo import MIN_FACE_WIDTH, Photo, fit_photo, prepare_photo

BACKDROP = (235, 235, 235)


def _on_canvas(image: np.ndarray, height: int, width: int, top: int, left: int) -> np.ndarray:
    canvas = np.empty((height, width, 3), np.uint8)
    canvas[:] = BACKDROP
    canvas[top:top + image.shape[0], left:left + image.shape[1]] = image
    return canvas


def _check_photo(photo: Photo, max_side: int = 512) -> None:
    h, w = photo.image.shape[:2]
    assert photo.image.dtype == np.uint8 and photo.image.shape[2] == 3
    assert h % 2 == 0 and w % 2 == 0 and max(h, w) <= max_side
    assert photo.landmarks.shape == (478, 2)
    assert (photo.landmarks[:, 0] >= 0).all() and (photo.landmarks[:, 0] < w).all()
    assert (photo.landmarks[:, 1] >= 0).all() and (photo.landmarks[:, 1] < h).all()
    assert photo.mask.shape == (h, w) and photo.mask.dtype == np.float32
    assert photo.mask.min() >= 0.0 and photo.mask.max() <= 1.0
    # the mask covers the face: 1 at the nose tip, 0 in the image corners
    nose = np.round(photo.landmarks[NOSE_TIP]).astype(int)
    assert photo.mask[nose[1], nose[0]] > 0.99
    assert photo.mask[0, 0] == 0.0 and photo.mask[-1, -1] == 0.0


def test_portrait_is_prepared_as_it_is(portrait, portrait_photo):
    _check_photo(portrait_photo)
    np.testing.assert_array_equal(portrait_photo.image, portrait)  # 256x256: neither resized nor cropped
    assert not portrait_photo.image.flags.writeable and not portrait_photo.landmarks.flags.writeable


def test_no_face():
    with pytest.raises(InputError, match="no face found in the photo; use a photo with one clearly visible face"):
        prepare_photo(np.full((256, 320, 3), 128, np.uint8))


def test_several_faces(portrait):
    with pytest.raises(InputError, match="found 2 faces") as err:
        prepare_photo(np.concatenate([portrait, portrait], axis=1))
    assert "one person" in str(err.value)


def test_tiny_image(portrait):
    with pytest.raises(InputError, match="too small .*at least 64 pixels"):
        prepare_photo(portrait[:60, :200])


def test_tiny_face(portrait):
    small = cv2.resize(portrait, (80, 80), interpolation=cv2.INTER_AREA)  # a face ~30 px wide
    with pytest.raises(InputError, match=f"face is too small .*at least {MIN_FACE_WIDTH} px wide: crop"):
        prepare_photo(_on_canvas(small, 280, 280, 100, 100))


def test_huge_photo_is_resized_to_max_side(portrait):
    face = cv2.resize(portrait, (2400, 2400), interpolation=cv2.INTER_LINEAR)
    huge = _on_canvas(face, 4000, 6000, 800, 1800)  # 6000x4000
    photo = prepare_photo(huge)
    assert photo.image.shape == (340, 512, 3)  # 512x341, its odd last row dropped
    _check_photo(photo)
    # the face is measured after resizing: at 256 px the 2400 px portrait shrinks to 102 px, its face to 44 px
    with pytest.raises(InputError, match="face is too small .*scaled to 256x170"):
        prepare_photo(huge, max_side=256)


def test_odd_sides_lose_their_last_row_or_column(portrait):
    photo = prepare_photo(portrait[:255, :201])
    assert photo.image.shape == (254, 200, 3)
    np.testing.assert_array_equal(photo.image, portrait[:254, :200])


@pytest.mark.parametrize("shape", ["grey", "grey1"])
def test_grey_photo_becomes_rgb(portrait, shape):
    grey = cv2.cvtColor(portrait, cv2.COLOR_RGB2GRAY)
    photo = prepare_photo(grey if shape == "grey" else grey[..., None])
    _check_photo(photo)
    for c in range(3):
        np.testing.assert_array_equal(photo.image[..., c], grey)


def test_rgba_photo_is_composited_on_white_as_load_image_does(portrait, tmp_path):
    alpha = np.full(portrait.shape[:2], 255, np.uint8)
    alpha[:, :24] = 0  # a transparent strip on the left
    alpha[:, 24:40] = 128  # and a half-transparent one
    rgba = np.dstack([portrait, alpha])
    photo = prepare_photo(rgba)
    _check_photo(photo)
    assert (photo.image[:, :24] == 255).all()
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    np.testing.assert_array_equal(photo.image, load_image(tmp_path / "rgba.png"))


def test_other_pixel_types_are_refused(portrait):
    with pytest.raises(InputError, match="8-bit"):
        prepare_photo(portrait.astype(np.float32) / 255)


def test_fit_photo_resizes_image_landmarks_and_mask(portrait_photo):
    small = fit_photo(portrait_photo, max_side=128)
    assert small.image.shape == (128, 128, 3) and small.mask.shape == (128, 128)
    np.testing.assert_allclose(small.landmarks, portrait_photo.landmarks / 2)
    assert fit_photo(portrait_photo, max_side=512) is portrait_photo

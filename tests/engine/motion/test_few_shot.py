"""Few-shot references: one photo renders exactly as PhotoRenderer; an aligned copy lands on the primary; a frame
at a reference's own shape is drawn from that reference (its real mouth interior shows); the clip rule picks
distinct frames spread up to the widest opening."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from livehead.engine.common.errors import InputError
from livehead.engine.motion import mesh
from livehead.engine.motion.few_shot import FewShotRenderer, align_photo, spread_over_openings
from livehead.engine.motion.photo import photo_from_landmarks
from livehead.engine.motion.renderer import PhotoRenderer

TEETH = (250, 250, 250)  # the marker painted into the open-mouth reference's mouth


@pytest.fixture(scope="module")
def open_mouth(portrait_photo, space):
    """The portrait with its jaw dropped, and the inner-lip region painted white: a second 'photo' of the same
    person whose mouth interior (its 'teeth') the warp of the first photo cannot make."""
    renderer = PhotoRenderer(portrait_photo, mouth_layer=False)
    motion = space.neutral_motion(1)
    motion[0, 0] = 1.2
    moved = space.decode(motion, renderer.neutral)[0]
    image = renderer.render(moved).copy()
    lips = np.concatenate([moved[list(mesh.LIP_INNER_UPPER)], moved[list(mesh.LIP_INNER_LOWER)][::-1]])
    cv2.fillPoly(image, [np.round(lips).astype(np.int32)], TEETH)
    return photo_from_landmarks(image, moved), moved, lips


def _inner_mean(image: np.ndarray, lips: np.ndarray) -> float:
    mask = np.zeros(image.shape[:2], np.uint8)
    cv2.fillPoly(mask, [np.round(lips).astype(np.int32)], 1)
    mask = cv2.erode(mask, np.ones((3, 3), np.uint8))
    return float(image[mask.astype(bool)].mean())


def test_one_photo_renders_exactly_as_the_photo_renderer(portrait_photo, space):
    few = FewShotRenderer([portrait_photo])
    motion = space.neutral_motion(1)
    motion[0, 0] = 0.6
    moved = space.decode(motion, few.neutral)[0]
    frame, weights = few.render(moved)
    assert np.array_equal(frame, PhotoRenderer(portrait_photo).render(moved))
    assert weights.tolist() == [1.0]


def test_aligned_copy_lands_on_the_primary(portrait_photo):
    h, w = portrait_photo.height, portrait_photo.width
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), 5.0, 0.9)
    matrix[:, 2] += (7, -4)
    moved_image = cv2.warpAffine(portrait_photo.image, matrix, (w, h), borderMode=cv2.BORDER_REPLICATE)
    moved = photo_from_landmarks(moved_image, portrait_photo.landmarks @ matrix[:, :2].T + matrix[:, 2])
    aligned = align_photo(moved, portrait_photo)
    assert np.abs(aligned.landmarks - portrait_photo.landmarks).max() < 1e-6
    centre = (slice(h // 4, 3 * h // 4), slice(w // 4, 3 * w // 4))
    assert np.abs(aligned.image[centre].astype(int) - portrait_photo.image[centre]).mean() < 6


def test_a_frame_at_a_references_shape_shows_its_real_mouth(portrait_photo, open_mouth):
    photo, moved, lips = open_mouth
    few = FewShotRenderer([portrait_photo, photo])
    frame, weights = few.render(moved)
    assert weights[1] > 0.9 and abs(weights.sum() - 1) < 1e-9
    single, _ = FewShotRenderer([portrait_photo]).render(moved)
    assert _inner_mean(frame, lips) > 220  # the painted 'teeth' of the open-mouth photo
    assert _inner_mean(single, lips) < 180  # one photo: only the drawn mouth interior
    closed, closed_weights = few.render(portrait_photo.landmarks)
    assert closed_weights[0] > 0.9 and np.array_equal(closed, PhotoRenderer(portrait_photo).render(
        portrait_photo.landmarks))


def test_weights_change_smoothly_between_references(portrait_photo, open_mouth):
    photo, moved, _ = open_mouth
    few = FewShotRenderer([portrait_photo, photo])
    path = [portrait_photo.landmarks + t * (moved - portrait_photo.landmarks) for t in np.linspace(0, 1, 21)]
    w = np.array([few.weights(m)[1] for m in path])
    assert w[0] < 0.1 and w[-1] > 0.9
    assert np.all(np.diff(w) >= -1e-9)  # the open-mouth reference's weight only grows as the mouth opens
    assert np.abs(np.diff(w)).max() < 0.5  # no jump from one reference to the other in a 5 % step


def test_spread_over_openings_picks_distinct_frames_up_to_the_widest():
    base = np.zeros((30, mesh.N_LANDMARKS, 2))
    base[:, :, 0] = np.arange(mesh.N_LANDMARKS)  # any face: only the mouth gap matters here
    base[:, mesh.EYE_OUTER[1], 0] = base[:, mesh.EYE_OUTER[0], 0] + 100.0
    opening = np.abs(np.sin(np.arange(30) / 3.0)) * 30
    for up, lo in mesh.MOUTH_GAP_PAIRS:
        base[:, lo, 1] = base[:, up, 1] + opening
    picks = spread_over_openings(base, 4)
    assert picks[0] == 0 and len(set(picks)) == 4
    assert int(np.argmax(opening)) in picks
    with pytest.raises(InputError):
        spread_over_openings(base, 0)


def test_too_many_photos_are_refused(portrait_photo):
    with pytest.raises(InputError, match="between 1 and"):
        FewShotRenderer([portrait_photo] * 40)

"""The rest shape: a photo with parted lips is closed for the generated motion to be decoded onto; a photo with
closed lips is its own rest."""

from __future__ import annotations

import numpy as np

from livehead.engine.motion import mesh
from livehead.engine.motion.shape import REST_GAP, REST_OPEN_AT, rest_expression, rest_landmarks


def test_the_bundled_portrait_smiles_with_parted_lips(portrait_photo):
    assert float(mesh.mouth_opening_signed(portrait_photo.landmarks)) > REST_OPEN_AT


def test_rest_closes_a_parted_lip_face_to_the_closed_gap(space, portrait_photo):
    photo = portrait_photo.landmarks
    rest = rest_landmarks(space, photo)
    assert rest.shape == (478, 2)
    assert abs(float(mesh.mouth_opening_signed(rest)) - REST_GAP) < 0.003
    assert np.abs(rest_expression(space, photo)).max() > 0
    assert float(mesh.mouth_opening_signed(photo)) > 30 * REST_GAP  # it did close something


def test_a_closed_face_is_its_own_rest(space, portrait_photo):
    closed = rest_landmarks(space, portrait_photo.landmarks)
    assert not rest_expression(space, closed).any()
    np.testing.assert_array_equal(rest_landmarks(space, closed), closed)

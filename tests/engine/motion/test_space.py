"""MotionSpace and the pose algebra: the shipped space (14 components, 99 % kept, fitted on the GRID training
clips only) loads; a zero motion decodes to the neutral face; a shape's own motion decodes back to it
closely; motion transfers keep the target face's identity; save/load round-trips; bad files are InputErrors."""

from __future__ import annotations

import numpy as np
import pytest

from livehead.engine.common.errors import InputError
from livehead.engine.motion import mesh, tracker
from livehead.engine.motion.space import GRID_HELD_OUT, GRID_TRAIN, MotionSpace, default_motion_space


def test_shipped_space(space):
    assert space is default_motion_space()  # cached
    assert space.k == 14 and space.dim == 14 + 2 + 4
    assert 0.99 <= space.kept < 0.995 and space.components_for(0.95) == 6
    assert space.components.shape == (450, 872) and not space.components.flags.writeable
    np.testing.assert_allclose(space.components[: space.k] @ space.components[: space.k].T, np.eye(space.k), atol=1e-9)
    assert not set(GRID_TRAIN) & set(GRID_HELD_OUT)


def test_zero_motion_decodes_to_the_neutral(space, portrait_photo):
    moved = space.decode(space.neutral_motion(3), portrait_photo.landmarks)
    assert moved.shape == (3, 478, 2)
    np.testing.assert_allclose(moved, np.broadcast_to(portrait_photo.landmarks, moved.shape), atol=1e-9)


def test_encode_decode_round_trip(space, portrait_photo):
    """A shape made by the space encodes to its own motion and decodes back to itself."""
    motion = space.neutral_motion(4)
    motion[:, 0] = [0.0, 0.5, -0.3, 0.8]
    motion[:, 3] = [0.0, 0.1, 0.2, -0.1]
    motion[:, space.k + 2] = [0.0, 0.05, -0.05, 0.02]
    motion[:, space.k + 3] = [0.0, 0.02, 0.0, -0.02]
    moved = space.decode(motion, portrait_photo.landmarks)
    rec = space.encode(moved, neutral=portrait_photo.landmarks)
    _, _, pose = space.split(rec)
    np.testing.assert_allclose(pose, motion[:, space.k + 2:], atol=2e-3)
    np.testing.assert_allclose(rec[:, [0, 3]], motion[:, [0, 3]], atol=0.02)
    err = np.linalg.norm(space.decode(rec, portrait_photo.landmarks) - moved, axis=-1)
    assert err.max() < 0.01 * float(mesh.iod(portrait_photo.landmarks))


def test_motion_transfers_to_another_face(space, portrait_photo):
    """The same motion on a face twice as large and turned by 10° moves it in its own frame."""
    lm = portrait_photo.landmarks
    pose = np.array([np.deg2rad(10.0), 2.0, 40.0, -15.0])
    other = tracker.apply_pose(lm, pose)
    motion = space.neutral_motion(2)
    motion[1, 0] = 0.7  # jaw open
    a, b = space.decode(motion, lm), space.decode(motion, other)
    np.testing.assert_allclose(b, tracker.apply_pose(a, pose), atol=1e-6)
    assert mesh.mouth_opening(a[1]) > mesh.mouth_opening(lm) + 0.08


def test_similarity_fit_inverts_apply_pose(space):
    rng = np.random.default_rng(0)
    pose = np.array([0.3, 1.7, 12.0, -4.0])
    pts = rng.normal(size=(30, 2))
    np.testing.assert_allclose(tracker.fit_similarity(pts, tracker.apply_pose(pts, pose)), pose, atol=1e-9)
    np.testing.assert_allclose(tracker.to_canonical(tracker.apply_pose(pts, pose), pose), pts, atol=1e-9)
    rel = np.array([0.1, 0.05, 0.2, -0.1])
    np.testing.assert_allclose(tracker.relative_pose(tracker.compose_pose(pose, rel), pose), rel, atol=1e-9)


def test_save_load(space, tmp_path):
    path = tmp_path / "space.npz"
    space.save(path)
    again = MotionSpace.load(path)
    np.testing.assert_array_equal(again.components, space.components)
    assert again.k == space.k and MotionSpace.load(path, k=6).dim == 12


def test_load_errors(tmp_path):
    with pytest.raises(InputError, match="not found.*training.motion_space"):
        MotionSpace.load(tmp_path / "missing.npz")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(InputError, match="cannot read the motion space"):
        MotionSpace.load(bad)
    np.savez(tmp_path / "wrong.npz", canon=np.zeros((478, 2)))
    with pytest.raises(InputError, match="re-create it"):
        MotionSpace.load(tmp_path / "wrong.npz")


def test_decode_refuses_a_motion_of_another_size(space, portrait_photo):
    with pytest.raises(ValueError, match="motion must be"):
        space.decode(np.zeros((2, space.dim + 1)), portrait_photo.landmarks)

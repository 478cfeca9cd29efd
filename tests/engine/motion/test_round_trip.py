"""Tracking a rendered synthetic motion returns it: the bundled portrait rendered at a known motion (jaw,
two other expression components, head roll / scale / shift, a blink), tracked by FaceTracker in video
mode and encoded again, matches the motion within the bounds below (measured with mediapipe 0.10.21:
mouth-opening correlation 0.98, jaw 0.99, roll error 0.8° mean, scale 1.8 %, shift 0.011 IOD, eyelids
0.55 at the blink's deepest frame)."""

from __future__ import annotations

import numpy as np
import pytest

from livehead.engine.motion import mesh
from livehead.engine.motion.renderer import PhotoRenderer
from livehead.engine.motion.tracker import track_frames

FRAMES = 48
BLINK_FRAME = 30
# bounds of the round trip (rendered → tracked → encoded against the truth), over frames 1..FRAMES-1
MIN_MOUTH_CORRELATION = 0.8  # mouth opening of the tracked frames vs the decoded (true) shapes
MIN_JAW_CORRELATION = 0.8  # the first expression coefficient (the jaw)
MAX_ROLL_ERROR_DEG = 1.5  # mean absolute error of the head's in-plane rotation
MAX_SCALE_ERROR = 0.03  # mean absolute relative error of the head's scale
MAX_SHIFT_ERROR_IOD = 0.03  # mean absolute error of the head's shift, in eye-corner distances
MAX_EYELID_IN_BLINK = 0.7  # openness tracked at the blink's deepest frame (truth 0.1, neutral 1)


def synthetic_motion(space, n: int = FRAMES) -> np.ndarray:
    """A known motion [n, M]: frame 0 neutral; jaw and two more components as sines of speech-like
    amplitude (the training clips' coefficient std is ≈ 0.38 for the jaw); a head roll of ±4°, scale ±3 %,
    shift ±0.05 / ±0.03 IOD, faded in over 6 frames; a blink at BLINK_FRAME."""
    t = np.arange(n, dtype=np.float64)
    k = space.k
    motion = space.neutral_motion(n)
    fade = np.minimum(t / 6.0, 1.0)
    motion[:, 0] = 0.7 * np.sin(2 * np.pi * t / 16) * fade
    motion[:, 2] = 0.2 * np.sin(2 * np.pi * t / 11) * fade
    motion[:, 4] = 0.15 * np.sin(2 * np.pi * t / 7 + 1.0) * fade
    motion[:, k + 2] = np.deg2rad(4.0) * np.sin(2 * np.pi * t / 25) * fade
    motion[:, k + 3] = 0.03 * np.sin(2 * np.pi * t / 19) * fade
    motion[:, k + 4] = 0.05 * np.sin(2 * np.pi * t / 23) * fade
    motion[:, k + 5] = 0.03 * np.sin(2 * np.pi * t / 13) * fade
    lids = np.clip(0.1 + 0.9 * (np.abs(t - BLINK_FRAME) - 1) / 3, 0.1, 1.0)
    motion[:, k] = motion[:, k + 1] = lids
    return motion


@pytest.fixture(scope="module")
def round_trip(portrait_photo, space):
    renderer = PhotoRenderer(portrait_photo)
    truth = synthetic_motion(space)
    moved = space.decode(truth, renderer.neutral)
    frames = np.stack([renderer.render(m) for m in moved])
    tracked, found = track_frames(frames)
    return truth, moved, tracked[..., :2], found, space.encode(tracked)


def test_every_rendered_frame_shows_a_face(round_trip):
    assert round_trip[3].all()


def test_mouth_and_jaw_come_back(round_trip, space):
    truth, moved, tracked, _, rec = round_trip
    mouth = np.corrcoef(mesh.mouth_opening(moved[1:]), mesh.mouth_opening(tracked[1:]))[0, 1]
    jaw = np.corrcoef(truth[1:, 0], rec[1:, 0])[0, 1]
    assert mouth >= MIN_MOUTH_CORRELATION, f"mouth-opening correlation {mouth:.3f}"
    assert jaw >= MIN_JAW_CORRELATION, f"jaw coefficient correlation {jaw:.3f}"


def test_head_pose_comes_back(round_trip, space):
    truth, _, _, _, rec = round_trip
    _, _, pose_true = space.split(truth[1:])
    _, _, pose_rec = space.split(rec[1:])
    roll = np.degrees(np.abs(pose_rec[:, 0] - pose_true[:, 0])).mean()
    scale = np.abs(np.exp(pose_rec[:, 1] - pose_true[:, 1]) - 1).mean()
    shift = np.abs(pose_rec[:, 2:] - pose_true[:, 2:]).mean()
    assert roll < MAX_ROLL_ERROR_DEG, f"roll error {roll:.2f}°"
    assert scale < MAX_SCALE_ERROR, f"scale error {100 * scale:.1f} %"
    assert shift < MAX_SHIFT_ERROR_IOD, f"shift error {shift:.3f} IOD"


def test_blink_comes_back(round_trip, space):
    _, _, _, _, rec = round_trip
    _, eyes, _ = space.split(rec)
    assert eyes[BLINK_FRAME].max() < MAX_EYELID_IN_BLINK, f"eyelids {eyes[BLINK_FRAME]} at the blink"
    assert eyes[1:6].min() > 0.8  # open before it

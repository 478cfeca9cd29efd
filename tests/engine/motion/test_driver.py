"""The motion driver: a synthetic clip of the bundled portrait at a known motion, driven frame by frame, gives
the motion back; the per-frame (live) driver and the whole-sequence (offline) path agree exactly; the smoothing
is causal and steadies a still face without holding back a step."""

from __future__ import annotations

import numpy as np
import pytest

from livehead.engine.common.errors import InputError
from livehead.engine.motion.driver import MotionDriver, MotionSmoother, encode_driving
from livehead.engine.motion.renderer import PhotoRenderer
from livehead.engine.motion.tracker import track_frames
from tests.engine.motion.test_round_trip import synthetic_motion

MIN_JAW_CORRELATION = 0.9  # the first expression coefficient, driven vs true
MAX_ROLL_ERROR_DEG = 1.5


@pytest.fixture(scope="module")
def clip(portrait_photo, space):
    renderer = PhotoRenderer(portrait_photo)
    truth = synthetic_motion(space)
    frames = np.stack([renderer.render(m) for m in space.decode(truth, renderer.neutral)])
    return truth, frames, renderer.neutral


@pytest.fixture(scope="module")
def driven(clip, space):
    _, frames, _ = clip
    with MotionDriver(space, smoothing=0.0) as driver:
        return np.stack([driver.push(f) for f in frames]), driver.frames_without_face


def test_driver_gives_the_known_motion_back(clip, driven, space):
    truth, _, _ = clip
    motion, lost = driven
    assert lost == 0
    assert np.corrcoef(motion[1:, 0], truth[1:, 0])[0, 1] >= MIN_JAW_CORRELATION
    roll_error = np.rad2deg(np.abs(motion[1:, space.k + 2] - truth[1:, space.k + 2])).mean()
    assert roll_error <= MAX_ROLL_ERROR_DEG
    assert np.allclose(motion[0], space.neutral_motion(1)[0])  # the first frame is the driver's neutral


def test_live_driver_matches_the_offline_path(clip, driven, space):
    _, frames, _ = clip
    landmarks, _ = track_frames(frames)
    smoothing = 0.5
    offline = MotionSmoother(smoothing).filter_sequence(encode_driving(space, landmarks, landmarks[0]))
    with MotionDriver(space, smoothing=smoothing) as driver:
        live = np.stack([driver.push(f) for f in frames])
    assert np.allclose(live, offline, atol=1e-9)


def test_absolute_transfer_of_the_photos_own_clip_equals_relative(clip, space):
    _, frames, neutral = clip
    landmarks, _ = track_frames(frames)
    relative = encode_driving(space, landmarks, landmarks[0])
    absolute = encode_driving(space, landmarks, landmarks[0], photo_neutral=neutral, mode="absolute")
    # frame 0 is the photo unchanged, so its tracked landmarks are the photo's neutral up to tracking noise
    assert np.abs(absolute[:, 0] - relative[:, 0]).max() < 0.05
    assert np.array_equal(absolute[:, -4:], relative[:, -4:])  # pose stays relative to the driver


def test_a_frame_without_a_face_holds_the_last_motion(clip, space):
    _, frames, _ = clip
    blank = np.full_like(frames[0], 128)
    with MotionDriver(space, smoothing=0.0) as driver:
        assert driver.push(blank) is None  # no face yet: nothing to drive with
        first = driver.push(frames[5])
        held = driver.push(blank)
    assert np.array_equal(first, held)
    assert driver.frames_without_face == 2


def test_smoothing_is_causal_and_steadies_a_still_face():
    rng = np.random.default_rng(0)
    still = 0.02 * rng.standard_normal((50, 20))
    smooth = MotionSmoother(0.8).filter_sequence(still)
    assert smooth[10:].std() < 0.5 * still[10:].std()
    changed = still.copy()
    changed[30:] += 1.0  # a different future
    assert np.array_equal(MotionSmoother(0.8).filter_sequence(changed)[:30], smooth[:30])


def test_smoothing_follows_a_fast_step_within_a_few_frames():
    step = np.zeros((20, 3))
    step[5:] = 1.0
    smooth = MotionSmoother(1.0).filter_sequence(step)
    assert smooth[9].min() > 0.8  # the speed term opens the filter: the step is followed in 4 frames
    assert np.array_equal(MotionSmoother(0.0).filter_sequence(step), step)


@pytest.mark.parametrize("value", [-0.1, 1.5, float("nan")])
def test_bad_smoothing_is_refused(value):
    with pytest.raises(InputError, match="smoothing"):
        MotionSmoother(value)


def test_unknown_mode_is_refused(space):
    with pytest.raises(InputError, match="relative"):
        MotionDriver(space, mode="mirror")

"""The known-motion camera stand-in: what MediaPipe tracks in its frames is the motion it says it rendered."""

from __future__ import annotations

import numpy as np

from livehead.engine.media import landmarks as L
from livehead.engine.motion.synthetic import talking_camera, talking_schedule


def test_schedule_opens_for_the_first_half_eased_in_and_out():
    a = talking_schedule(10)
    assert a.tolist() == [0.5, 1.0, 1.0, 1.0, 0.5, 0.0, 0.0, 0.0, 0.0, 0.0]


def test_tracked_mouth_and_head_follow_the_rendered_motion():
    sway = 0.2
    frames, openings = talking_camera(size=128, period_frames=10, sway=sway)
    assert frames.shape[0] == 10 and frames.dtype == np.uint8 and openings.shape == (10,)
    lm = L.video_landmarks(frames)
    assert all(x is not None for x in lm)
    mouth = np.array([L.mouth_opening(x) for x in lm])
    assert np.corrcoef(mouth, openings)[0, 1] > 0.95
    nose = np.array([x[L.NOSE_TIP, 0] for x in lm]) / np.median([L.eye_corner_distance(x) for x in lm])
    shift = nose - nose[talking_schedule(10) == 0].mean()
    assert abs(shift[1:4].mean() - sway) < 0.05, shift.round(3)  # held open: the head moved right by `sway` IOD

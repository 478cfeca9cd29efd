"""Camera stand-ins whose motion is known exactly: the bundled portrait rendered with a scheduled mouth opening
(and, optionally, a sideways head move), for measuring live camera driving end to end.

    frames, openings = talking_camera(size=256)            # uint8 RGB [30, H, W, 3], mouth opening [30]
    schedule = talking_schedule(30)                         # 0 .. 1 per frame: how far the move has gone

Used by tests/server/webrtc/test_camera.py and benchmarks/camera_latency.py (played in a loop at 25 fps as a
WebRTC camera track).
"""

from __future__ import annotations

import numpy as np

from livehead.engine.media import landmarks as L
from livehead.engine.media.audio_video import load_image
from livehead.engine.media.bundled import DEFAULT_IMAGE
from livehead.engine.motion.photo import prepare_photo
from livehead.engine.motion.renderer import PhotoRenderer

EASE_FRAMES = 2  # frames over which each open / close move is eased


def talking_schedule(period_frames: int = 30) -> np.ndarray:
    """How far the move has gone at each frame of one period, float [period_frames] in 0 .. 1: up over the
    first EASE_FRAMES, held, down over the last EASE_FRAMES of the first half; 0 through the second half."""
    half = period_frames // 2
    return np.array([min(1.0, min(i + 1, half - i) / EASE_FRAMES) if i < half else 0.0 for i in range(period_frames)])


def open_jaw(landmarks: np.ndarray, amount: float) -> np.ndarray:
    """Landmarks [478, 2] px with every mesh point below the mouth corners but the upper lip's (lower lip, chin,
    jaw) moved down by `amount` eye-corner distances (IOD) → new landmarks [478, 2]: a mouth opened by hand."""
    lm = np.asarray(landmarks, np.float64)[:, :2]
    below = lm[:, 1] > lm[list(L.MOUTH_CORNERS), 1].mean() + 1.0
    below[468:] = False
    below[list(L.LIP_INNER_UPPER + L.LIP_OUTER_UPPER)] = False
    moved = lm.copy()
    moved[below, 1] += amount * L.eye_corner_distance(lm)
    return moved


def talking_camera(size: int = 256, period_frames: int = 30, jaw: float = 0.18,
                   sway: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """A camera stand-in whose motion is known: the bundled portrait (long side `size`) with its mouth open for
    the first half of every `period_frames` and closed for the second (lower lip, chin and jaw moved down by
    `jaw` eye-corner distances (IOD), eased over 2 frames: `talking_schedule`). sway > 0 also moves the whole
    head right by `sway` IOD on the same schedule (a signal the camera drives beside a voice, which keeps the
    mouth). Returns (uint8 RGB frames [period_frames, H, W, 3], the mouth opening each frame was rendered with
    [period_frames])."""
    renderer = PhotoRenderer(prepare_photo(load_image(DEFAULT_IMAGE), size))
    lm = renderer.neutral
    iod = L.eye_corner_distance(lm)
    frames, openings = [], []
    for a in talking_schedule(period_frames):
        moved = open_jaw(lm, a * jaw)
        moved[:, 0] += a * sway * iod
        frames.append(renderer.render(moved))
        openings.append(float(L.mouth_opening(moved)))
    return np.stack(frames), np.array(openings)

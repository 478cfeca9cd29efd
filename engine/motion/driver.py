"""Driving motion from video: any face's tracked landmarks → motion vectors for another face, frame by frame.

Transfer modes (motion layout as in `space`: K expression, 2 eyelids, 4 relative pose):
- relative (default): every frame is encoded against the driver's own neutral frame, so what moves the
  photo is the driver's *change* of expression and pose; the photo keeps its own face shape.
- absolute: expression and eyelids are encoded against the photo's neutral face instead, so the photo takes
  the driver's face shape as well (meant for a driver who is the photo's own person); the head pose stays
  relative to the driver's neutral frame, as image positions of two videos cannot be compared.

Smoothing is causal (a One Euro filter per channel: Casiez et al. 2012): each output depends only on the
frames so far, so the same filter serves a live camera and an offline file with the same result.

    driver = MotionDriver(space, smoothing=0.5)        # per-frame use (a live camera track)
    motion = driver.push(frame)                        # uint8 RGB [H, W, 3] → float64 [M] (None before a face)
    smoother = MotionSmoother(smoothing=0.5)           # the same causal filter over a whole sequence
    smooth = smoother.filter_sequence(motion)          # [F, M] → [F, M]

Live driving of a streaming session (`Session.drive_with`): camera motions are stamped with the session
timeline's time (s) they were captured at and read back at each output frame's time, interpolated:

    camera = CameraTimeline(voice=True)                # voice=True: the camera moves head and eyes only
    camera.add(t, driver.push(frame))                  # any thread
    motion = combine_camera(generated, camera.at(times), k, voice=True)   # [N, M] each

The rule (`combine_camera`): with a voice, the camera gives the head pose and the eyelids and the voice's
generated motion keeps the expression (mouth, brows); without one, the camera's motion is used whole.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass

import numpy as np

from livehead.engine.common.constants import FPS
from livehead.engine.common.errors import InputError
from livehead.engine.motion.space import N_EYES, N_POSE, MotionSpace
from livehead.engine.motion.tracker import FaceTracker

TRANSFER_MODES = ("relative", "absolute")
DEFAULT_SMOOTHING = 0.15  # the strongest whose mouth-box PSNR stays within 0.1 dB of none (GRID training clips)
FASTEST_CUTOFF_HZ = 12.0  # One Euro minimum cutoff at smoothing → 0 (a light touch)
SLOWEST_CUTOFF_HZ = 0.6  # ... at smoothing 1 (a held, slow face)
SPEED_GAIN = 4.0  # One Euro beta: how much faster the cutoff grows with the signal's speed (per unit/s)
DERIVATIVE_CUTOFF_HZ = 1.0  # cutoff of the speed estimate itself
TRACK_MAX_SIDE = 480  # px: live camera frames are scaled to this long side before tracking (motion is scale-free)
CAMERA_KEEP_S = 10.0  # camera motions kept behind the newest (a session's latency is at most 2 s)


def _alpha(cutoff_hz: np.ndarray | float, fps: float) -> np.ndarray:
    tau = 1.0 / (2 * np.pi * np.asarray(cutoff_hz))
    return 1.0 / (1.0 + tau * fps)


@dataclass
class MotionSmoother:
    """Causal One Euro filter over motion vectors [M]. smoothing in [0, 1]: 0 passes the motion through,
    1 holds a slow face steadiest; fast movements (a mouth opening, a blink) raise the cutoff, so they lag
    little at any setting."""

    smoothing: float = DEFAULT_SMOOTHING
    fps: float = FPS

    def __post_init__(self):
        if not 0.0 <= self.smoothing <= 1.0 or not np.isfinite(self.smoothing):
            raise InputError(f"smoothing must be between 0 (none) and 1 (strongest), got {self.smoothing}")
        if not self.fps > 0:
            raise ValueError(f"fps must be positive, got {self.fps}")
        self.min_cutoff = FASTEST_CUTOFF_HZ * (SLOWEST_CUTOFF_HZ / FASTEST_CUTOFF_HZ) ** self.smoothing
        self.reset()

    def reset(self) -> None:
        """Forget the past (a new stream, or a new neutral)."""
        self._value: np.ndarray | None = None
        self._speed: np.ndarray | None = None

    def __call__(self, motion: np.ndarray) -> np.ndarray:
        """One frame's motion [M] → the filtered motion [M] (float64)."""
        x = np.asarray(motion, np.float64)
        if self.smoothing == 0.0 or self._value is None:
            self._value, self._speed = x.copy(), np.zeros_like(x)
            return x.copy()
        speed = (x - self._value) * self.fps
        self._speed = self._speed + _alpha(DERIVATIVE_CUTOFF_HZ, self.fps) * (speed - self._speed)
        a = _alpha(self.min_cutoff + SPEED_GAIN * np.abs(self._speed), self.fps)
        self._value = self._value + a * (x - self._value)
        return self._value.copy()

    def filter_sequence(self, motion: np.ndarray) -> np.ndarray:
        """Motion [F, M] → filtered [F, M], frame by frame from a fresh state (as a live stream would be)."""
        self.reset()
        return np.stack([self(m) for m in np.asarray(motion, np.float64)])


def encode_driving(space: MotionSpace, landmarks: np.ndarray, driver_neutral: np.ndarray,
                   photo_neutral: np.ndarray | None = None, mode: str = "relative") -> np.ndarray:
    """Driver landmarks [F, 478, 2+] px → motion [F, M] for a photo.

    driver_neutral [478, 2+]: the driver's neutral frame (its own pixels). mode "relative" encodes against it;
    "absolute" encodes expression and eyelids against photo_neutral [478, 2+] (the photo's pixels; scale and
    position do not matter, the shape is pose-normalised) and keeps the pose relative to driver_neutral."""
    if mode not in TRANSFER_MODES:
        raise InputError(f"unknown transfer mode {mode!r}; choose one of: {', '.join(TRANSFER_MODES)}")
    motion = space.encode(landmarks, neutral=driver_neutral)
    if mode == "absolute":
        if photo_neutral is None:
            raise ValueError("absolute transfer needs the photo's neutral landmarks")
        shape = space.encode(landmarks, neutral=photo_neutral)
        motion[:, :space.k + 2] = shape[:, :space.k + 2]
    return motion


class MotionDriver:
    """A live driver: one camera frame at a time → the motion for a photo, causally smoothed.

    The neutral is the first frame with a face unless set (`set_neutral`, e.g. when the user presses
    "neutral" with a relaxed face). A frame without a face repeats the last motion (the photo holds still);
    before any face, `push` returns None. One driver per stream and thread (the tracker keeps state)."""

    def __init__(self, space: MotionSpace, smoothing: float = DEFAULT_SMOOTHING, mode: str = "relative",
                 photo_neutral: np.ndarray | None = None, fps: float = FPS, static: bool = False):
        if mode not in TRANSFER_MODES:
            raise InputError(f"unknown transfer mode {mode!r}; choose one of: {', '.join(TRANSFER_MODES)}")
        if mode == "absolute" and photo_neutral is None:
            raise ValueError("absolute transfer needs the photo's neutral landmarks")
        self.space, self.mode, self.photo_neutral = space, mode, photo_neutral
        self.smoother = MotionSmoother(smoothing, fps)
        self.tracker = FaceTracker(static=static)
        self.neutral: np.ndarray | None = None  # [478, 2] px of the driver
        self.last: np.ndarray | None = None  # [M] the last motion returned
        self.frames = 0
        self.frames_without_face = 0

    def set_neutral(self, landmarks: np.ndarray) -> None:
        """Use these driver landmarks [478, 2+] px as the neutral from now on (the filter starts afresh)."""
        self.neutral = np.asarray(landmarks, np.float64)[:, :2]
        self.smoother.reset()

    def reset_neutral(self) -> None:
        """The next face becomes the neutral (the user relaxed their face and asked for it); the filter restarts."""
        self.neutral = None

    def motion_of(self, landmarks: np.ndarray) -> np.ndarray:
        """Driver landmarks [478, 2+] px of one frame → its smoothed motion [M] (sets the neutral if unset)."""
        if self.neutral is None:
            self.set_neutral(landmarks)
        raw = encode_driving(self.space, np.asarray(landmarks, np.float64)[None, :, :2], self.neutral,
                             self.photo_neutral, self.mode)[0]
        self.last = self.smoother(raw)
        return self.last

    def push(self, frame: np.ndarray) -> np.ndarray | None:
        """uint8 RGB [H, W, 3] → motion [M]; the last motion when this frame shows no face (None before any)."""
        self.frames += 1
        landmarks = self.tracker(frame)
        if landmarks is None:
            self.frames_without_face += 1
            return None if self.last is None else self.last.copy()
        return self.motion_of(landmarks)

    def close(self) -> None:
        self.tracker.close()

    def __enter__(self) -> MotionDriver:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def combine_camera(generated: np.ndarray, camera: np.ndarray, k: int, voice: bool) -> np.ndarray:
    """Generated motion [N, M] and camera motion [N, M] (same layout: K expression, 2 eyelids, 4 pose) → the
    motion shown [N, M]: with `voice`, the generated expression with the camera's eyelids and head pose;
    without, the camera's motion."""
    generated, camera = np.asarray(generated, np.float64), np.asarray(camera, np.float64)
    if generated.shape != camera.shape:
        raise ValueError(f"generated {list(generated.shape)} and camera {list(camera.shape)} motion differ")
    if not voice:
        return camera.copy()
    out = generated.copy()
    out[:, k:k + N_EYES + N_POSE] = camera[:, k:k + N_EYES + N_POSE]
    return out


class CameraTimeline:
    """Camera motions [M] stamped with the session timeline's time (s) they show; thread-safe.

    `at(times)` interpolates linearly between the stamps around each time; before the first stamp it gives
    the first motion, after the last the last one (a camera that lags holds its newest face); None while
    empty. voice: whether a voice drives the same session (then the camera moves head and eyes only,
    `combine_camera`). `clear()` forgets every motion (a barge-in, a new neutral)."""

    def __init__(self, voice: bool = False, keep_s: float = CAMERA_KEEP_S):
        self.voice = voice
        self.keep_s = keep_s
        self._lock = threading.Lock()
        self._times: deque[float] = deque()
        self._motions: deque[np.ndarray] = deque()
        self.added = 0

    def add(self, t: float, motion: np.ndarray) -> None:
        """A motion [M] shown at timeline time t (s); a stamp not after the newest replaces the newer ones."""
        motion = np.asarray(motion, np.float64).copy()
        with self._lock:
            while self._times and self._times[-1] >= t:  # the timeline was cut back (barge-in): rewrite
                self._times.pop()
                self._motions.pop()
            self._times.append(float(t))
            self._motions.append(motion)
            while len(self._times) > 2 and self._times[1] < t - self.keep_s:
                self._times.popleft()
                self._motions.popleft()
            self.added += 1

    def clear(self) -> None:
        with self._lock:
            self._times.clear()
            self._motions.clear()

    def __len__(self) -> int:
        return len(self._times)

    def at(self, times: np.ndarray) -> np.ndarray | None:
        """Timeline times [N] s → camera motion [N, M] (linear between stamps, held at the ends); None if empty."""
        with self._lock:
            if not self._times:
                return None
            stamps = np.fromiter(self._times, np.float64, len(self._times))
            motions = np.stack(self._motions)
        times = np.asarray(times, np.float64)
        j = np.clip(np.searchsorted(stamps, times, side="right"), 1, max(len(stamps) - 1, 1))
        if len(stamps) == 1:
            return np.repeat(motions, len(times), axis=0)
        t0, t1 = stamps[j - 1], stamps[j]
        w = np.clip((times - t0) / np.maximum(t1 - t0, 1e-9), 0.0, 1.0)[:, None]
        return motions[j - 1] * (1 - w) + motions[j] * w

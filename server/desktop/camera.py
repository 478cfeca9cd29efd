"""`livehead live --camera`: a webcam (or a video file played as one) moving the avatar, locally.

    reader = open_camera("0")                               # webcam 0 (OpenCV), or a video file path (PyAV)
    tracker = CameraTracker(space, timeline, stamp, smoothing=0.15, fps=reader.fps)
    tracker.start(); tracker.ready.wait()                   # MediaPipe built and warm on its own thread
    reader.start(tracker.offer)                             # frames → the tracker's one-frame mailbox
    ...
    reader.stop(); tracker.stop(); tracker.stats.summary()  # captured / tracked / with a face / dropped

Threads: the reader delivers uint8 RGB frames [H, W, 3] with the monotonic time each was captured (a webcam:
when `read` returned it; a file: when it is due, t0 + j / fps, so the file plays in real time); the tracker
downscales the newest (long side at most TRACK_MAX_SIDE px: the motion is scale-free), tracks it
(`engine.motion.driver.MotionDriver`) and adds its motion [M] to the session's `CameraTimeline` at
`stamp(captured_at)`: the session-timeline time (s) of the audio captured at that moment. A frame that
arrives while the tracker is busy replaces the waiting one (always the newest is tracked; the replaced one
is counted as dropped), so a slow tracker adds no queueing delay.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from livehead.engine.common.constants import FPS
from livehead.engine.common.errors import InputError
from livehead.engine.media.face import quiet_stderr
from livehead.engine.motion.driver import DEFAULT_SMOOTHING, TRACK_MAX_SIDE, CameraTimeline, MotionDriver
from livehead.engine.motion.space import MotionSpace
from livehead.engine.runtime.reenact import video_frames

STOP_JOIN_SECONDS = 2.0
WARM_UP_SIDE = 64  # px: the black frame MediaPipe's first (slow) run is spent on

Deliver = Callable[[np.ndarray, float], None]  # (uint8 RGB [H, W, 3], monotonic capture time)


# ----------------------------------------------------------------------------------------- readers


class CameraReader:
    """A camera's frames, delivered from the reader's own thread; subclasses implement `_frames`."""

    description = "camera"
    fps = float(FPS)
    finite = False  # whether the source ends by itself (a file)

    def __init__(self):
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, name="livehead-camera", daemon=True)
        self.deliver: Deliver | None = None
        self.on_end: Callable[[float], None] | None = None
        self.ended = False  # the source ran out (a file's end, a camera that stopped giving frames)
        self.end_time: float | None = None  # when it ran out (monotonic): a file's last frame period's end
        self.error: BaseException | None = None

    def start(self, deliver: Deliver, on_end: Callable[[float], None] | None = None) -> None:
        """Deliver frames to `deliver` until stopped; call `on_end(end_time)` when the source runs out by itself."""
        self.deliver, self.on_end = deliver, on_end
        self.thread.start()

    def _frames(self) -> Iterator[tuple[np.ndarray, float]]:
        raise NotImplementedError

    def _run(self) -> None:
        try:
            for frame, captured_at in self._frames():
                if self.stop_event.is_set():
                    break
                self.deliver(frame, captured_at)
            self.ended = not self.stop_event.is_set()
            if self.end_time is None:
                self.end_time = time.monotonic()
        except BaseException as err:  # reported by the main thread
            self.error = err
        finally:
            self._close()
        if self.ended and self.on_end is not None:
            self.on_end(self.end_time)

    def _close(self) -> None:
        pass

    def stop(self) -> None:
        """Stop delivering and release the camera or file (also when never started)."""
        self.stop_event.set()
        if self.thread.ident is None:
            self._close()
        elif self.thread is not threading.current_thread():
            self.thread.join(timeout=STOP_JOIN_SECONDS)


class WebcamReader(CameraReader):
    """An OpenCV camera (`cv2.VideoCapture(index)`); frames converted from BGR to RGB."""

    def __init__(self, index: int):
        super().__init__()
        import cv2

        self.cv2 = cv2
        with quiet_stderr():  # OpenCV logs each backend it tried for a missing index
            self.capture = cv2.VideoCapture(index)
            ok, first = self.capture.read() if self.capture.isOpened() else (False, None)
        if not ok or first is None:
            self.capture.release()
            raise InputError(f"cannot open camera {index} (no such camera, or it is busy); check the index "
                             f"(0 is the first camera) or pass a video file to --camera")
        self.fps = float(self.capture.get(cv2.CAP_PROP_FPS) or 0) or float(FPS)
        height, width = first.shape[:2]
        self.description = f"camera {index} ({width}x{height} at {self.fps:g} fps)"

    def _frames(self) -> Iterator[tuple[np.ndarray, float]]:
        while not self.stop_event.is_set():
            ok, frame = self.capture.read()
            if not ok:  # unplugged, or taken by another program
                return
            yield self.cv2.cvtColor(frame, self.cv2.COLOR_BGR2RGB), time.monotonic()

    def _close(self) -> None:
        self.capture.release()


class VideoFileReader(CameraReader):
    """A video file played as a camera: frame j is delivered, stamped as captured, at t0 + j / fps; the end
    comes one frame period after the last frame."""

    finite = True

    def __init__(self, path: Path):
        super().__init__()
        try:
            self.decoded, self.fps = video_frames(path)
        except InputError as err:
            raise InputError(f"--camera: {err}") from None
        self.path = path
        self.description = f"video file {path} as a camera (at {self.fps:g} fps)"

    def _frames(self) -> Iterator[tuple[np.ndarray, float]]:
        t0, j = time.monotonic(), -1
        for j, frame in enumerate(self.decoded):  # j after the loop: the frames delivered - 1
            due = t0 + j / self.fps
            if self.stop_event.wait(max(due - time.monotonic(), 0.0)):
                return
            yield frame, due
        self.end_time = t0 + (j + 1) / self.fps  # the last frame's period
        self.stop_event.wait(max(self.end_time - time.monotonic(), 0.0))

    def _close(self) -> None:
        self.decoded.close()  # the generator's `with container` closes the file


def open_camera(source: str) -> CameraReader:
    """--camera SOURCE: digits → that webcam index; anything else → a video file. InputError when it cannot
    be opened, is not found, or has no video."""
    source = str(source).strip()
    if source.isdigit():
        return WebcamReader(int(source))
    path = Path(source)
    if not path.is_file():
        raise InputError(f"--camera: no such file: {source}; give a webcam index (0 is the first camera) or "
                         f"a video file")
    return VideoFileReader(path)


# ----------------------------------------------------------------------------------------- tracker


@dataclass
class CameraStats:
    """Camera frames: captured = tracked + dropped once the tracker has stopped; with_face ≤ tracked."""

    captured: int = 0
    tracked: int = 0
    without_face: int = 0
    dropped: int = 0  # replaced by a newer frame before the tracker got to them
    stamped: int = 0  # motions added to the timeline (a frame before any audio has no timeline time yet)

    @property
    def with_face(self) -> int:
        return self.tracked - self.without_face

    def summary(self) -> dict:
        return {"captured": self.captured, "tracked": self.tracked, "with_face": self.with_face,
                "without_face": self.without_face, "dropped": self.dropped, "stamped": self.stamped}

    def line(self) -> str:
        return (f"camera {self.captured} frames captured, {self.tracked} tracked ({self.with_face} with a face, "
                f"{self.without_face} without), {self.dropped} dropped")


def downscale(frame: np.ndarray, max_side: int = TRACK_MAX_SIDE) -> np.ndarray:
    """uint8 RGB [H, W, 3] → the same frame with its long side at most max_side px (area-averaged)."""
    height, width = frame.shape[:2]
    scale = max_side / max(height, width)
    if scale >= 1.0:
        return frame
    import cv2

    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(frame, size, interpolation=cv2.INTER_AREA)


class CameraTracker:
    """Tracks the newest camera frame on its own thread and stamps its motion onto a `CameraTimeline`.

    stamp(captured_at) → the session-timeline time (s) of that moment, or None before the timeline starts.
    The MotionDriver (MediaPipe) is built on the tracker's thread, as it must be used from one thread."""

    def __init__(self, space: MotionSpace, timeline: CameraTimeline, stamp: Callable[[float], float | None],
                 smoothing: float = DEFAULT_SMOOTHING, fps: float = FPS):
        self.space, self.timeline, self.stamp = space, timeline, stamp
        self.smoothing, self.fps = smoothing, fps
        self.stats = CameraStats()
        self.cond = threading.Condition()
        self.pending: tuple[np.ndarray, float] | None = None
        self.stopping = False
        self.ready = threading.Event()  # set once MediaPipe is built and warm (or building failed)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="livehead-camera-tracker", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def offer(self, frame: np.ndarray, captured_at: float) -> None:
        """A captured uint8 RGB frame [H, W, 3] (any thread): it replaces a frame still waiting."""
        with self.cond:
            self.stats.captured += 1
            if self.pending is not None:
                self.stats.dropped += 1
            self.pending = (frame, captured_at)
            self.cond.notify()

    def _take(self) -> tuple[np.ndarray, float] | None:
        """The newest waiting frame; None once stopped and nothing waits."""
        with self.cond:
            while self.pending is None and not self.stopping:
                self.cond.wait()
            item, self.pending = self.pending, None
            return item

    def _track(self, driver: MotionDriver, frame: np.ndarray, captured_at: float) -> None:
        missed = driver.frames_without_face
        motion = driver.push(downscale(frame))
        self.stats.tracked += 1
        self.stats.without_face += driver.frames_without_face - missed
        t = self.stamp(captured_at) if motion is not None else None
        if t is not None:
            self.timeline.add(t, motion)
            self.stats.stamped += 1

    def _run(self) -> None:
        try:
            driver = MotionDriver(self.space, self.smoothing, fps=self.fps)
        except BaseException as err:  # reported by the main thread
            self.error = err
            self.ready.set()
            return
        try:
            with driver:
                driver.tracker(np.zeros((WARM_UP_SIDE, WARM_UP_SIDE, 3), np.uint8))  # the graph's slow first run
                self.ready.set()
                while (item := self._take()) is not None:
                    self._track(driver, *item)
        except BaseException as err:
            self.error = err
        finally:
            self.ready.set()

    def stop(self) -> None:
        """Track the frame still waiting, then end the thread."""
        with self.cond:
            self.stopping = True
            self.cond.notify()
        if self.thread.ident is not None:
            self.thread.join(timeout=STOP_JOIN_SECONDS)

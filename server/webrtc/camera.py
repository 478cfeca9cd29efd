"""Live camera driving: the peer's camera track → tracked face motion → the session's `CameraTimeline`.

    feed = CameraFeed(media, space, voice=peer.has_mic)        # attaches a CameraTimeline to media.session
    task = asyncio.create_task(feed.consume(remote_video_track))

Each received frame is stamped with the session timeline's time at its arrival (`pacing.timeline_time`: the
newest mic audio's timeline position plus the time since it arrived, so camera and voice captured together
share a time), scaled so its long side is at most TRACK_MAX_SIDE, and tracked on the feed's own thread
(MediaPipe, `engine.motion.driver.MotionDriver`: motion relative to the first face seen, causally smoothed).
The session then renders frame k with the camera motion at k / fps (`Session.drive_with`), so the picture
keeps the same pacing, latency and A/V sync as the voice: with a mic the camera moves head and eyes and the
voice the mouth; without one the camera moves everything.

When tracking falls behind the camera, the frames that queued meanwhile are dropped and the newest is tracked.
A frame without a face holds the last face's motion (before any face the avatar follows its voice / idle
motion). `reset_neutral()` takes the next face as the new neutral (the data channel's {"type": "neutral"}).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor

import av
import numpy as np
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from livehead.engine.motion.driver import DEFAULT_SMOOTHING, TRACK_MAX_SIDE, CameraTimeline, MotionDriver
from livehead.engine.motion.space import MotionSpace
from livehead.server.webrtc import pacing
from livehead.server.webrtc.aiortc_private import queued_frames
from livehead.server.webrtc.pacing import AUDIO_RATE

log = logging.getLogger("livehead.camera")


def tracking_size(width: int, height: int, max_side: int = TRACK_MAX_SIDE) -> tuple[int, int]:
    """(width, height) of a frame scaled so its long side is at most max_side (even sizes, never upscaled)."""
    scale = min(1.0, max_side / max(width, height, 1))
    return max(2, int(width * scale) // 2 * 2), max(2, int(height * scale) // 2 * 2)


class CameraFeed:
    """One peer's camera: tracks its frames on a private thread and stamps the motion on the session timeline."""

    def __init__(self, media, space: MotionSpace, voice: bool, smoothing: float = DEFAULT_SMOOTHING):
        self.media = media
        self.space, self.smoothing = space, smoothing
        self.timeline = CameraTimeline(voice=voice)
        media.session.drive_with(self.timeline)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="livehead-camera")
        self._driver: MotionDriver | None = None  # made and used on the executor's thread only
        self._new_neutral = False
        # figures
        self.received = self.tracked = self.without_face = self.dropped = 0
        self.track_ms: deque[float] = deque(maxlen=50)  # the latest tracking times (ms), for /metrics

    def reset_neutral(self) -> None:
        """The next face becomes the driver's neutral (the user relaxed their face and asked for it)."""
        self._new_neutral = True

    def _track(self, image: np.ndarray) -> np.ndarray | None:
        """On the feed's thread: uint8 RGB [h, w, 3] → motion [M] or None (no face yet)."""
        if self._driver is None:
            self._driver = MotionDriver(self.space, smoothing=self.smoothing)
        if self._new_neutral:
            self._new_neutral = False
            self._driver.reset_neutral()
        return self._driver.push(image)

    def timeline_now(self, now: float) -> float:
        """The session timeline's time (s) of the mic audio arriving at `now` (0 before the clock starts)."""
        media = self.media
        if media.t0 is None:
            return 0.0
        t = pacing.timeline_time(media.sources, now, AUDIO_RATE)
        return max(0.0, now - media.t0) if t is None else t

    async def consume(self, track: MediaStreamTrack) -> None:
        """Read the camera until it ends or the session closes; never raises for a bad frame."""
        loop = asyncio.get_running_loop()
        try:
            while not self.media.closed:
                frame = await track.recv()
                while queued_frames(track):  # tracking fell behind: take the newest frame
                    frame = await track.recv()
                    self.dropped += 1
                arrival = time.monotonic()
                self.received += 1
                stamp = self.timeline_now(arrival)
                try:
                    width, height = tracking_size(frame.width, frame.height)
                    image = frame.to_ndarray(width=width, height=height, format="rgb24")
                    t = time.perf_counter()
                    motion = await loop.run_in_executor(self._executor, self._track, image)
                except (av.error.FFmpegError, ValueError, RuntimeError) as err:  # one bad frame, never the session
                    log.warning("dropped a camera frame: %s", err)
                    continue
                self.track_ms.append((time.perf_counter() - t) * 1000)
                self.tracked += 1
                if self._driver is not None:
                    self.without_face = self._driver.frames_without_face
                if motion is not None and not self.media.closed:
                    self.timeline.add(stamp, motion)
        except MediaStreamError:
            pass
        finally:
            self._executor.submit(self._close_driver)
            self._executor.shutdown(wait=False)

    def _close_driver(self) -> None:
        if self._driver is not None:
            self._driver.close()
            self._driver = None

    def figures(self) -> dict:
        return {"received": self.received, "tracked": self.tracked, "without_face": self.without_face,
                "dropped": self.dropped,
                "track_ms": round(float(np.median(self.track_ms)), 2) if self.track_ms else None}

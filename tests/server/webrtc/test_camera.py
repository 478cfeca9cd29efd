"""Live camera driving over a real WebRTC loopback: the client's camera track moves the avatar.

The camera plays a clip of the bundled portrait whose mouth opens and closes every 1.2 s (`talking_camera`);
the avatar is the same portrait at 128 px. The received frames are tracked (MediaPipe) and their mouth opening
must follow the camera's, at a delay that is the camera-to-screen latency (`signal_lag`)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

pytest.importorskip("aiortc", reason="the server tests need the 'server' extra: pip install 'livehead[server]'")

from livehead.client import LoopbackClient, received_fps, signal_lag
from livehead.engine.eval.evaluate import MOUTH_CLOSED
from livehead.engine.media import landmarks as L
from tests.helpers import talking_camera
from tests.server.webrtc.test_server import FPS, speech_48k
from tests.server.webrtc.test_server_motion import _serve

SECONDS = 7.0
MIN_CORRELATION = 0.8  # the avatar's mouth opening against the camera's, at the best delay
MAX_DELAY_S = 1.0  # camera frame sent → avatar frame received (latency ~0.3 s + tracking + transport)


@pytest.fixture(scope="module")
def live_motion():
    yield from _serve()


@pytest.fixture(scope="module")
def camera():
    return talking_camera(size=256)


def _mouth_series(images: list[tuple[int, np.ndarray]], arrivals: list[tuple[float, int]]) -> list[tuple[float, float]]:
    """(arrival time, tracked mouth opening) of every received frame with a face."""
    tracked = L.video_landmarks([image for _, image in images])
    return [(t, float(L.mouth_opening(lm))) for (t, _), lm in zip(arrivals, tracked) if lm is not None]


def _call(live, camera, pcm48):
    frames, openings = camera
    server = live.server

    async def scenario():
        client = LoopbackClient(live.base, pcm48, keep_images=True, stamps=False, camera=frames)
        await client.connect()
        await asyncio.sleep(SECONDS)
        peer = server.peers[client.session_id]
        figures = peer.camera.figures() if peer.camera is not None else None
        voice = peer.camera.timeline.voice if peer.camera is not None else None
        await client.close()
        return client, figures, voice

    client, figures, voice = live.loop.run(scenario(), timeout=60 + SECONDS)
    sent = [(t, float(openings[j])) for t, j in client.camera.sent]
    return client, figures, voice, sent


def test_camera_alone_drives_the_mouth(live_motion, camera):
    client, figures, voice, sent = _call(live_motion, camera, None)
    assert figures is not None and figures["tracked"] > 0.5 * SECONDS * FPS, figures
    assert figures["without_face"] == 0 and voice is False, figures
    video = client.got.video
    assert received_fps(video, video[0][0] + 0.5, 3.0) >= 24
    received = _mouth_series(client.got.images, video)
    assert len(received) > 0.8 * len(video)
    lag, r = signal_lag(sent, received, max_lag=MAX_DELAY_S)
    print(f"camera-to-screen {lag * 1000:.0f} ms, mouth correlation {r:.2f}, {figures}")
    assert r >= MIN_CORRELATION and 0.0 < lag < MAX_DELAY_S, (lag, r)


def test_camera_beside_a_voice_leaves_the_mouth_to_the_voice(live_motion, camera):
    silence = np.zeros(int(48_000 * SECONDS), np.float32)  # a mic that stays silent: the mouth stays at rest
    client, figures, voice, sent = _call(live_motion, camera, silence)
    assert voice is True and figures["tracked"] > 0.5 * SECONDS * FPS, figures
    received = _mouth_series(client.got.images, client.got.video)
    _, r = signal_lag(sent, received, max_lag=MAX_DELAY_S)
    opening = np.array([v for _, v in received])
    print(f"with a silent mic: mouth correlation {r:.2f}, median opening {np.median(opening):.3f}")
    assert r < 0.5 and np.median(opening) < MOUTH_CLOSED, (r, np.median(opening))  # the camera's opens ~0.18


def test_speech_still_moves_the_mouth_beside_a_camera(live_motion, camera):
    client, _, voice, _ = _call(live_motion, camera, speech_48k())
    assert voice is True
    received = _mouth_series(client.got.images, client.got.video)
    opening = np.array([v for _, v in received])
    assert np.ptp(opening) > 0.1, np.ptp(opening)

"""The live server running the default motion tier, unchanged: frames at the photo's size and 25 fps, lips and sound
together, over a real WebRTC loopback."""

from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("aiortc", reason="the server tests need the 'server' extra: pip install 'livehead[server]'")

import torch

from livehead.client import LoopbackClient, av_offset, received_fps
from livehead.engine.model.config import ModelConfig
from livehead.engine.runtime.runners import torch_runners
from livehead.engine.weights.loading import load_model
from livehead.server.webrtc.app import APP_KEY, ServeConfig, create_app
from tests.server.webrtc.test_server import FPS, LoopThread, _start, speech_48k


@pytest.fixture(scope="module")
def live_motion():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    loop = LoopThread()
    app = create_app(torch_runners(load_model(ModelConfig.from_name("motion"))),
                     ServeConfig(max_sessions=2, record_seconds=20.0))
    runner, base = loop.run(_start(app), timeout=120)
    yield type("Live", (), {"loop": loop, "app": app, "server": app[APP_KEY], "base": base})
    loop.run(runner.cleanup(), timeout=60)
    loop.close()
    torch.set_num_threads(threads)


def test_motion_stream_end_to_end(live_motion):
    server = live_motion.server

    async def scenario():
        client = LoopbackClient(live_motion.base, speech_48k(), keep_images=True)
        await client.connect()
        await asyncio.sleep(server.latency + 5.0)
        media = server.peers[client.session_id].media
        result = av_offset(list(media.recording), client.got, FPS)
        await client.close()
        return client, dict(result, latency=media.latency)

    client, fig = live_motion.loop.run(scenario(), timeout=60)
    print(fig)
    video = client.got.video
    assert video, "no video frame received"
    first = video[0][0]
    assert received_fps(video, first + 0.5, 4.0) >= 24
    photo = server.avatars.get("default").avatar.image
    assert client.got.images and client.got.images[-1][1].shape[:2] == photo.shape[:2]
    assert fig["frames_matched"] >= 20, fig
    assert abs(fig["av_offset_s"]) <= 0.040, fig

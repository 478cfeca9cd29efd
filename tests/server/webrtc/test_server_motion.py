"""The live server running the default motion tier, unchanged: frames at the photo's size and 25 fps, lips and sound
together, over a real WebRTC loopback."""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import replace

import pytest

pytest.importorskip("aiortc", reason="the server tests need the 'server' extra: pip install 'livehead[server]'")

import torch

from livehead.client import LoopbackClient, av_offset, match_stamps, received_fps
from livehead.engine.model.config import ModelConfig
from livehead.server.backends.runners import live_backend, make_runners
from livehead.server.webrtc.aiortc_private import ENCODER_ATTRIBUTE
from livehead.server.webrtc.app import APP_KEY, ServeConfig, create_app
from tests.server.webrtc.test_server import FPS, LoopThread, _http, _start, speech_48k

SIZE = 128  # output long side: two sessions and their clients share the 2-core CI machine
LOSS = 0.05  # the impaired client's link: packet loss each way
JITTER_S = 0.05  # ... and a random delay of 0-50 ms on every packet each way


def _serve():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    loop = LoopThread()
    base_cfg = ModelConfig.from_name("motion")
    stream = replace(base_cfg.stream, image_size=SIZE)
    cfg = replace(base_cfg, stream=stream)
    runners = make_runners(cfg, live_backend(cfg, "auto"), progress=False)
    app = create_app(runners, ServeConfig(max_sessions=3, capacity=2, record_seconds=20.0))
    runner, base = loop.run(_start(app), timeout=120)
    yield type("Live", (), {"loop": loop, "app": app, "server": app[APP_KEY], "base": base})
    loop.run(runner.cleanup(), timeout=60)
    loop.close()
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def live_motion():
    yield from _serve()


@pytest.fixture(scope="module")
def live_two():
    """Two sessions at once, as the preset runs them: sharing the model, each in steps of two clips (4 frames)."""
    yield from _serve()


def test_motion_stream_end_to_end(live_motion):
    server = live_motion.server

    async def scenario():
        client = LoopbackClient(live_motion.base, speech_48k(), keep_images=True)
        await client.connect()
        await client.receive_video(5.0, timeout=server.latency + 20)  # the fps window: 0.5-4.5 s after the first frame
        peer = server.peers[client.session_id]
        media = peer.media
        result = av_offset(list(media.recording), client.got, FPS)
        encoders = [type(getattr(s, ENCODER_ATTRIBUTE)).__name__ for s in peer.pc.getSenders()
                    if s.track is not None and s.track.kind == "video"]
        await client.close()
        return client, dict(result, latency=media.latency, video_encoders=encoders)

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
    assert fig["video_encoders"] == ["RenderedVp8Encoder"], fig  # the browser-default VP8, with render settings


class ImpairedClient(LoopbackClient):
    """A client behind a bad link: each UDP datagram, either way, is lost with probability LOSS or else delayed
    by a uniform 0-JITTER_S (so packets also arrive out of order). The impairment wraps the client's ICE
    transport (the one every RTP, RTCP, DTLS and SCTP datagram crosses, bundled) before it starts."""

    def __init__(self, *args, seed: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        self.rng = random.Random(seed)
        self.impaired = False
        self.lost = 0

    def _time_packets(self, receiver, kind: str) -> None:
        super()._time_packets(receiver, kind)
        if not self.impaired:
            self._impair(receiver.transport.transport)
            self.impaired = True

    def _impair(self, ice) -> None:
        loop = asyncio.get_running_loop()
        send, recv = ice._send, ice._recv
        arrived: asyncio.Queue = asyncio.Queue()

        async def lossy_send(data: bytes) -> None:
            if self.rng.random() < LOSS:
                self.lost += 1
                return
            delay = self.rng.uniform(0.0, JITTER_S)
            loop.call_later(delay, lambda: asyncio.ensure_future(_quiet(send(data))))

        async def pump() -> None:
            while True:
                try:
                    data = await recv()
                except Exception as err:  # the transport closed: wake the reader with the same error
                    arrived.put_nowait(err)
                    return
                if self.rng.random() < LOSS:
                    self.lost += 1
                    continue
                loop.call_later(self.rng.uniform(0.0, JITTER_S), arrived.put_nowait, data)

        async def lossy_recv() -> bytes:
            if not pumping:  # the first read comes once ICE is connected (the DTLS handshake starts then)
                pumping.append(asyncio.ensure_future(pump()))
                self.tasks.append(pumping[0])
            item = await arrived.get()
            if isinstance(item, Exception):
                raise item
            return item

        pumping: list[asyncio.Task] = []
        ice._send, ice._recv = lossy_send, lossy_recv


async def _until_no_sessions(server, timeout: float = 10.0) -> None:
    """Sessions of an earlier test close asynchronously: wait until the server holds none."""
    end = time.monotonic() + timeout
    while server.peers and time.monotonic() < end:
        await asyncio.sleep(0.1)


async def _quiet(coro) -> None:
    try:
        await coro
    except Exception:  # a datagram sent after the link closed is lost, as on a real network
        pass


def _fresh_fps(client: LoopbackClient, seconds: float, after: float = 2.0) -> float:
    """Generated frames shown per second at the client, over `seconds` from `after` s after its first frame (the
    latency settles in the first seconds: each 40 ms it grows repeats one frame)."""
    packets = sorted((a, pts) for pts, a in client.got.video_packets.items())
    ticks = match_stamps(packets, client.got.stamps, FPS)
    start = packets[0][0] + after
    fresh = {s["frame"] for a, _, s in ticks if s["frame"] >= 0 and start <= a < start + seconds}
    return len(fresh) / seconds


def test_a_bad_link_on_one_client_does_not_stall_the_other(live_two):
    """One client over 5 % loss and 0-50 ms jitter each way, one clean: the clean one keeps 24 fresh frames/s."""
    server = live_two.server

    async def scenario():
        clean = LoopbackClient(live_two.base, speech_48k(), decode_video=False)
        bad = ImpairedClient(live_two.base, speech_48k(), decode_video=False, seed=1)
        try:
            await asyncio.gather(clean.connect(), bad.connect(timeout=30.0))
            await asyncio.gather(clean.receive_video(8.5, timeout=30), bad.receive_video(8.5, timeout=30))
            return {"clean_fresh_fps": _fresh_fps(clean, 5.0, after=3.0),
                    "bad_fresh_fps": _fresh_fps(bad, 5.0, after=3.0), "bad_lost": bad.lost,
                    "latency": [p.media.latency for p in server.peers.values()]}
        finally:
            await asyncio.gather(clean.close(), bad.close())

    fig = live_two.loop.run(scenario(), timeout=90)
    print(fig)
    assert fig["bad_lost"] > 0  # the impairment was in place
    assert fig["clean_fresh_fps"] >= 24, fig
    assert fig["bad_fresh_fps"] > 0, fig  # the bad link still gets a picture


def test_a_second_caller_keeps_both_calls_fresh(live_motion):
    """A caller alone runs short steps at a low latency; when a second one joins, both take longer steps
    (`GenerationWorker.step_clips`) and the first one's latency rises by the extra audio wait
    (`LiveServer._grow_steps`): both keep 24 fresh frames/s (without that rise the first one's frames all came
    late and it showed none)."""
    server = live_motion.server

    async def scenario():
        await _until_no_sessions(server)
        first = LoopbackClient(live_motion.base, speech_48k(), decode_video=False)
        second = LoopbackClient(live_motion.base, speech_48k(), decode_video=False)
        try:
            await first.connect()
            await asyncio.sleep(3.0)
            alone = [p.media.latency for p in server.peers.values()]
            await second.connect()
            await asyncio.gather(first.receive_video(11.5, timeout=30), second.receive_video(7.5, timeout=30))
            return {"first": _fresh_fps(first, 4.0, after=7.0), "second": _fresh_fps(second, 4.0, after=3.0),
                    "alone_latency": alone, "latency": [p.media.latency for p in server.peers.values()]}
        finally:
            await asyncio.gather(first.close(), second.close())

    fig = live_motion.loop.run(scenario(), timeout=90)
    print(fig)
    assert fig["first"] >= 24 and fig["second"] >= 24, fig
    assert min(fig["latency"]) > fig["alone_latency"][0], fig


def test_steps_grow_with_the_sessions_and_the_capacity_counts_them(live_motion):
    """n sessions sharing the model take steps of min(n, max_step_clips) clips; at start the server measured a
    step alone and batched at the shortest and the longest shared step (max_sessions 3: 2 and 3 clips), and its
    capacity is what `pacing.capacity_at_steps` makes of those figures."""
    from livehead.server.webrtc import pacing

    server = live_motion.server
    worker = server.worker
    assert server.cfg.stream.max_step_clips == 4
    assert [worker.step_clips(n) for n in range(1, 7)] == [1, 2, 3, 4, 4, 4]
    assert sorted(server.step_costs) == [1, 2, 3]  # 1: a session alone (its batch figure unused)
    for alone_s, batch_s in server.step_costs.values():
        assert 0 < alone_s <= batch_s
    s = server.cfg.stream
    assert 0 < server.video_frame_s < 0.05  # one frame's conversion + VP8 encoding at the output size
    _, measured = pacing.capacity_at_steps(server.step_costs, worker.step_clips, server.config.max_batch,
                                           s.clip_frames, s.fps, pacing.SESSION_SHARE, server.config.max_sessions,
                                           server.video_frame_s, pacing.SESSION_TRANSPORT)
    assert 1 <= measured <= server.config.max_sessions
    assert server.capacity == (server.config.capacity or measured)
    assert server.latency_for(3) > server.latency_for(2) > server.latency_for(1)  # each step waits for more audio


def test_an_offer_beyond_the_capacity_gets_503_with_a_reason(live_motion):
    async def scenario():
        await _until_no_sessions(live_motion.server)
        clients = [LoopbackClient(live_motion.base, None, stamps=False, decode_video=False) for _ in range(2)]
        await asyncio.gather(*(c.connect() for c in clients))
        extra = LoopbackClient(live_motion.base, None, stamps=False, decode_video=False)
        try:
            await extra.connect()
            refused = None
        except RuntimeError as err:
            refused = str(err)
        _, _, health = await _http("GET", f"{live_motion.base}/healthz")
        await asyncio.gather(*(c.close() for c in clients), extra.close())
        return refused, health

    refused, health = live_motion.loop.run(scenario(), timeout=60)
    assert refused is not None and "HTTP 503" in refused and "'reason': 'capacity'" in refused, refused
    assert "'capacity': 2" in refused
    assert '"capacity": 2' in health and '"load": 1.0' in health

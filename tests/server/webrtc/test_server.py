"""The live server end to end: a real aiortc client against the aiohttp app in the same process.

One server (tiny preset with 1 sampling step and 1 torch thread, so the 2-core CI machine has headroom
for aiortc's encoders and the client) runs on an event loop in a background thread; each test drives
it with coroutines submitted there, all on loopback, port 0, bounded in time. How A/V offset is
measured: server/client.py (module docstring).
"""

from __future__ import annotations

import asyncio
import gc
import io
import json
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from livehead.server.cli.main import main
from tests import ASSETS

pytest.importorskip("aiortc", reason="the server tests need the 'server' extra: pip install 'livehead[server]'")
aiohttp = pytest.importorskip("aiohttp")

import torch
from aiohttp import web

from livehead.client import LoopbackClient, av_offset, match_stamps, received_fps
from livehead.engine.media.audio_video import load_audio
from livehead.engine.model.config import ModelConfig
from livehead.engine.runtime.runners import TorchRunners
from livehead.engine.weights.loading import load_model
from livehead.server.webrtc.app import APP_KEY, ServeConfig, create_app, serve_loopback

FPS = 25


class LoopThread:
    """An asyncio loop in a daemon thread; `run(coro, timeout)` from the test thread."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro, timeout: float = 60.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


async def _start(app: web.Application) -> tuple[web.AppRunner, str]:
    return await serve_loopback(app)


@pytest.fixture(scope="module")
def runners():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield TorchRunners(load_model(ModelConfig.from_name("tiny").with_steps(1)))
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def live(runners):
    loop = LoopThread()
    app = create_app(runners, ServeConfig(max_sessions=4, record_seconds=20.0))
    runner, base = loop.run(_start(app), timeout=120)
    live = type("Live", (), {"loop": loop, "app": app, "server": app[APP_KEY], "base": base})
    yield live
    loop.run(runner.cleanup(), timeout=60)
    loop.close()


def speech_48k(repeat: int = 2) -> np.ndarray:
    pcm = load_audio(ASSETS / "speech.wav", sample_rate=48_000)
    return np.concatenate([pcm] * repeat)


async def _http(method: str, url: str, **kwargs) -> tuple[int, str, str]:
    async with aiohttp.ClientSession() as http:
        async with http.request(method, url, **kwargs) as resp:
            return resp.status, resp.content_type, await resp.text()


async def _until(predicate, timeout: float, step: float = 0.02) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        await asyncio.sleep(step)
    return predicate()


# ------------------------------------------------------------------------------------------ streaming


def test_stream_end_to_end_fps_audio_first_frame_and_av_sync(live):
    server = live.server

    async def scenario():
        client = LoopbackClient(live.base, speech_48k())
        await client.connect()
        await client.receive_video(6.0, timeout=server.latency + 20)  # the fps window: 0.5-5.5 s after the first frame
        media = server.peers[client.session_id].media
        result = av_offset(list(media.recording), client.got, FPS)
        _, _, metrics = await _http("GET", f"{live.base}/metrics")
        figures = dict(result, latency=media.latency, latency_range=media.latency_range,
                       first_frame_server=media.first_frame_delay,
                       fresh=media.fresh_ticks, ticks=media.video_ticks, skipped_clips=media.skipped_clips)
        await client.close()
        return client, figures, metrics

    client, fig, metrics = live.loop.run(scenario(), timeout=60)
    print(fig)  # shown with -s / -rP
    video = client.got.video
    assert video, "no video frame received"
    first = video[0][0]
    assert received_fps(video, first + 0.5, 5.0) >= 24, f"received {received_fps(video, first + 0.5, 5.0)} fps"
    # audio received: the speech comes back (content cross-correlation peak), delayed by the latency
    assert len(client.got.audio) >= 250
    # (the adaptive latency moves in 20 ms steps taken in the speech's pauses, so stretches of the returned speech
    # sit 20-100 ms apart and one correlation peak over the whole take is lower than with a fixed delay: 0.37-0.56
    # in clean-clone runs)
    assert fig["xcorr_peak"] > 0.25, fig
    low, high = fig["latency_range"]  # the latency adapts while the call runs
    assert low - 0.06 <= fig["audio_delay_s"] <= high + 0.06, fig
    # first-frame delay recorded on both sides and in /metrics
    assert fig["first_frame_server"] is not None and 0 < fig["first_frame_server"] < fig["latency"] + 0.5
    assert 0 < first - client.mic.sent[0] < fig["latency"] + 1.0
    assert "livehead_first_frame_delay_seconds{session=" in metrics
    assert "livehead_av_offset_seconds{session=" in metrics
    # lips and sound together
    assert fig["frames_matched"] >= 20, fig
    assert abs(fig["av_offset_s"]) <= 0.040, fig


def test_barge_in_clears_frames_and_audio_within_100ms(live):
    server = live.server
    t = np.arange(int(48_000 * 6)) / 48_000
    tone = (0.3 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)  # continuous sound: silence means cleared

    async def scenario():
        client = LoopbackClient(live.base, tone, keep_images=True)
        await client.connect()
        # barge in once the tone has been coming back for 0.5 s (the session's latency adapts: on a loaded machine
        # its first clips come late and it starts further behind than server.latency; a fixed wait cleared before
        # any sound had come back in one CI run)
        def heard_for(seconds: float) -> bool:
            loud = [a for _, a, pcm in client.got.audio if np.sqrt(np.mean(pcm ** 2)) > 0.05]
            return bool(loud) and time.monotonic() - loud[0] >= seconds

        heard = await _until(lambda: heard_for(0.5), timeout=server.latency + 8)
        latency = server.peers[client.session_id].media.latency
        t_clear = client.send({"type": "clear"})
        await asyncio.sleep(0.6)
        await client.close()
        return client, t_clear, heard, latency

    client, t_clear, heard, latency = live.loop.run(scenario(), timeout=60)
    assert heard, f"the tone never came back (session latency {latency:.3f} s)"
    got = client.got
    assert any(m.get("type") == "cleared" for _, m in got.messages)
    packets = sorted((a, pts) for pts, a in got.video_packets.items())
    ticks = match_stamps(packets, got.stamps, FPS)
    assert any(s["frame"] >= 0 and a < t_clear for a, _, s in ticks), "no generated frame shown before the clear"
    idle = [a for a, _, s in ticks if s["frame"] == -1 and s["sent"] > t_clear]
    assert idle, "the avatar never went back to idle"
    print(f"idle frame at the client {min(idle) - t_clear:.3f} s after the clear was sent")
    assert min(idle) - t_clear <= 0.100, f"idle frame arrived {min(idle) - t_clear:.3f} s after the clear"
    # sound before, silence from 100 ms after the clear on (the tone's next second is gone)
    rms = [(a, float(np.sqrt(np.mean(pcm ** 2)))) for _, a, pcm in got.audio]
    before = [r for a, r in rms if t_clear - 0.3 < a < t_clear]
    assert before and max(before) > 0.05, f"no sound before the clear (session latency {latency:.3f} s)"
    after = [r for a, r in rms if t_clear + 0.1 <= a < t_clear + 0.5]
    assert after and max(after) < 0.01, after
    # what the client decodes after the clear is the portrait itself (the idle image)
    decoded = match_stamps(got.video, got.stamps, FPS)
    idle_pts = {pts for _, pts, s in decoded if s["frame"] == -1 and s["sent"] > t_clear}
    ref = server.avatars.get("default").avatar.image.astype(np.float64)
    psnr = [10 * np.log10(255 ** 2 / max(np.mean((img.astype(np.float64) - ref) ** 2), 1e-9))
            for pts, img in got.images if pts in idle_pts]
    assert psnr and max(psnr) > 25, psnr


# ------------------------------------------------------------------------------------------ bad input


def test_bad_offers_get_a_json_error(live):
    offer = f"{live.base}/offer"

    async def scenario():
        out = {"not json": await _http("POST", offer, data=b"{nope", headers={"Content-Type": "application/json"}),
               "not an offer": await _http("POST", offer, json={"sdp": 3}),
               "malformed sdp": await _http("POST", offer, json={"sdp": "v=0\r\nthis is not sdp\r\n", "type": "offer"})}
        pc = __import__("aiortc").RTCPeerConnection(__import__("aiortc").RTCConfiguration(iceServers=[]))
        pc.addTransceiver("audio", direction="sendrecv")
        await pc.setLocalDescription(await pc.createOffer())
        out["no video"] = await _http("POST", offer, json={"sdp": pc.localDescription.sdp, "type": "offer"})
        out["unknown avatar"] = await _http("POST", offer, json={"sdp": pc.localDescription.sdp, "type": "offer",
                                                                 "avatar": "nobody"})
        await pc.close()
        return out

    out = live.loop.run(scenario())
    for case, status in [("not json", 400), ("not an offer", 400), ("malformed sdp", 400), ("no video", 400),
                         ("unknown avatar", 404)]:
        code, ctype, text = out[case]
        assert code == status, (case, code, text)
        assert ctype == "application/json" and json.loads(text)["error"], case
    assert "video transceiver" in json.loads(out["no video"][2])["error"]
    assert live.server.peers == {} and live.server.worker.session_count == 0


def test_one_session_too_many_gets_503(live):
    server = live.server
    saved = server.config.max_sessions
    server.config.max_sessions = 1

    async def scenario():
        first = LoopbackClient(live.base, None, stamps=False)
        await first.connect()
        second = LoopbackClient(live.base, None, stamps=False)
        try:
            await second.connect(timeout=5)
            refused = None
        except RuntimeError as err:
            refused = str(err)
        await second.pc.close()
        await first.close()
        await _until(lambda: not server.peers, 5)
        return refused

    try:
        refused = live.loop.run(scenario())
    finally:
        server.config.max_sessions = saved
    assert refused and "HTTP 503" in refused and "max_sessions" in refused


def _png(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def test_avatar_uploads(live):
    url = f"{live.base}/avatars"
    portrait = (ASSETS / "portrait.png").read_bytes()
    no_face = _png(np.full((128, 128, 3), 200, np.uint8))

    async def scenario():
        form = aiohttp.FormData()
        form.add_field("image", portrait, filename="me.png", content_type="image/png")
        return {
            "raw": await _http("POST", url, data=portrait),
            "multipart": await _http("POST", url, data=form),
            "not image": await _http("POST", url, data=b"hello, not an image" * 10),
            "empty": await _http("POST", url, data=b""),
            "too large": await _http("POST", url, data=os.urandom(10 * 1024 * 1024 + 1)),
            "no face": await _http("POST", url, data=no_face),
        }

    out = live.loop.run(scenario(), timeout=120)
    code, _, text = out["raw"]
    assert code == 200, text
    avatar_id = json.loads(text)["id"]
    assert json.loads(out["multipart"][2]) == {"id": avatar_id}  # same portrait, same id, computed once
    assert live.server.avatars.get(avatar_id) is not None
    for case, status, words in [("not image", 400, "not a readable image"), ("empty", 400, "empty upload"),
                                ("too large", 413, "too large"), ("no face", 400, "no face")]:
        code, ctype, text = out[case]
        assert code == status, (case, code, text)
        assert ctype == "application/json" and words in json.loads(text)["error"], (case, text)
        assert "/tmp" not in text


def test_token_guards_offer_and_avatars(live):
    server = live.server
    server.config.token = "s3cret"

    async def scenario():
        return [await _http("POST", f"{live.base}/offer", json={}),
                await _http("POST", f"{live.base}/avatars", data=b"x"),
                await _http("POST", f"{live.base}/offer", json={}, headers={"Authorization": "Bearer wrong"}),
                await _http("POST", f"{live.base}/offer", json={}, headers={"Authorization": "Bearer s3cret"})]

    try:
        out = live.loop.run(scenario())
    finally:
        server.config.token = None
    assert [code for code, _, _ in out] == [401, 401, 401, 400]


def test_serve_refuses_a_public_host_without_token(capsys):
    assert main(["serve", "--host", "0.0.0.0"]) == 2
    assert "--token" in capsys.readouterr().err


def test_page_health_and_metrics(live):
    async def scenario():
        return [await _http("GET", f"{live.base}{path}") for path in ("/", "/healthz", "/metrics")]

    (pc, ptype, page), (hc, _, health), (mc, mtype, metrics) = live.loop.run(scenario())
    assert pc == 200 and ptype == "text/html" and "<" in page
    assert hc == 200 and json.loads(health)["status"] == "ok" and json.loads(health)["latency_s"] > 0.48
    assert mc == 200 and mtype == "text/plain"
    for name in ("livehead_sessions ", "livehead_latency_seconds ", "livehead_video_fps", "livehead_frame_queue_depth",
                 "livehead_first_frame_delay", "livehead_av_offset_seconds"):
        assert name in metrics


# ------------------------------------------------------------------------------------------ lifecycle


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="reads RSS from /proc (Linux)")
def test_connect_disconnect_cycles_leave_memory_and_tasks_flat(live):
    server = live.server
    saved = server.config.latency
    server.config.latency = 0.25  # frames flow soon after connecting: every cycle runs the media path
    silence = np.zeros(48_000, np.float32)

    async def cycle():
        client = LoopbackClient(live.base, silence, stamps=False)
        await client.connect()
        assert await _until(lambda: client.got.video and client.got.audio, 5), "no media in a cycle"
        await client.close()
        assert await _until(lambda: not server.peers, 5), "the server kept a closed session"

    async def tasks() -> int:
        await asyncio.sleep(0.3)
        return len([t for t in asyncio.all_tasks() if t is not asyncio.current_task()])

    async def scenario():
        for _ in range(5):
            await cycle()
        gc.collect()
        before = (_rss_bytes(), await tasks())
        for _ in range(50):
            await cycle()
        gc.collect()
        return before, (_rss_bytes(), await tasks())

    try:
        (rss0, tasks0), (rss1, tasks1) = live.loop.run(scenario(), timeout=300)
    finally:
        server.config.latency = saved
    print(f"50 sessions: RSS {rss0 / 2**20:.1f} -> {rss1 / 2**20:.1f} MB, asyncio tasks {tasks0} -> {tasks1}")
    assert tasks1 <= tasks0, f"asyncio tasks grew from {tasks0} to {tasks1}"
    assert rss1 - rss0 < 40 * 2**20, f"RSS grew by {(rss1 - rss0) / 2**20:.1f} MB over 50 sessions"
    assert server.worker.session_count == 0 and not server.peers


def test_offer_whose_client_vanishes_is_freed(live):
    server = live.server
    saved = server.config.connect_timeout
    server.config.connect_timeout = 1.5
    from aiortc import RTCConfiguration, RTCPeerConnection

    async def scenario():
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        pc.addTransceiver("video", direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        code, _, _ = await _http("POST", f"{live.base}/offer", json={"sdp": pc.localDescription.sdp, "type": "offer"})
        await pc.close()  # never applies the answer: ICE cannot complete
        held = len(server.peers)
        return code, held, await _until(lambda: not server.peers, 10)

    try:
        code, held, freed = live.loop.run(scenario())
    finally:
        server.config.connect_timeout = saved
    assert code == 200 and held == 1
    assert freed and server.worker.session_count == 0


def test_shutdown_frees_live_sessions(runners):
    loop = LoopThread()
    try:
        app = create_app(runners, ServeConfig(latency=0.3))
        runner, base = loop.run(_start(app), timeout=120)
        server = app[APP_KEY]

        async def scenario():
            client = LoopbackClient(base, np.zeros(48_000 * 3, np.float32), stamps=False)
            await client.connect()
            await _until(lambda: client.got.video, 5)
            await runner.cleanup()
            closed = await _until(lambda: client.pc.connectionState == "closed", 10)
            await client.close()
            return closed

        assert loop.run(scenario(), timeout=60)
        assert not server.peers and server.worker.session_count == 0 and not server.worker.alive
    finally:
        loop.close()

"""The live server: aiohttp signalling + aiortc media, one generation worker for every session.

    app = create_app(runners, ServeConfig(max_sessions=4))
    web.run_app(app, host="127.0.0.1", port=8080)

Routes
    POST /offer    {"sdp", "type": "offer", "avatar"?} → {"sdp", "type": "answer", "session", "latency"}
                   400 bad JSON / SDP / no video transceiver, 401 missing token, 404 unknown avatar,
                   503 at --max-sessions (JSON reason)
    POST /avatars  image as the raw body or a multipart file → {"id"}; 400 not an image / no face, 413 > 10 MB
    GET  /         the page (server/static/index.html), GET /static/NAME its assets
    GET  /healthz  JSON status; GET /metrics  Prometheus text

Camera: an offer that sends video (the page's "camera" option) drives the avatar with the tracked face
(server/webrtc/camera.py): with a mic the camera moves head and eyes and the voice the mouth, without one the
camera moves everything (motion preset only; other presets ignore the camera, logged).

Data channel (any label, JSON text): {"type": "clear"} drops queued frames and audio (barge-in) and
answers {"type": "cleared"}; {"type": "neutral"} takes the camera's next face as its neutral (answers
{"type": "neutral"}); {"type": "stamps", "enable": true} sends a {"type": "frame"} stamp per
video tick (tick, pts, generated frame index, its source-audio time and arrival wall time, send time:
used by the tests and benchmarks to measure A/V offset); {"type": "ping", "t": x} → {"type": "pong"}.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from aiohttp import web
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription

from livehead.engine.common.errors import InputError
from livehead.engine.eval.bench import chunk_seconds
from livehead.engine.media.bundled import DEFAULT_IMAGE
from livehead.engine.runtime.session import Session
from livehead.server.webrtc import pacing
from livehead.server.webrtc.aiortc_private import negotiated_codec, shorten_audio_jitter_buffer, use_encoder
from livehead.server.webrtc.avatars import MAX_UPLOAD_BYTES, AvatarStore
from livehead.server.webrtc.camera import CameraFeed
from livehead.server.webrtc.tracks import (
    AvatarVideoTrack,
    DelayedAudioTrack,
    LiveMedia,
    consume_mic,
    video_frame_seconds,
)
from livehead.server.webrtc.video_encoder import RenderedVp8Encoder
from livehead.server.webrtc.worker import MODEL_NICE, GenerationWorker

log = logging.getLogger("livehead.server")
STATIC = Path(__file__).resolve().parent / "static"
MAX_MESSAGE = 4096  # data-channel message bound (bytes)
COMPUTE_HEADROOM = 1.5  # latency budget per clip = headroom × clip compute measured alone at start: on 2
# cores a clip takes 1.1-1.6× longer in the server (event loop, codecs and the decode stage share the cores)
WARMUP_CLIPS = 5
STEP_ROUNDS = 5  # rounds timed per shared step length at start (the median is taken)
PLACEHOLDER_PAGE = """<!doctype html><meta charset="utf-8"><title>livehead</title>
<p>livehead server is running. The browser page (server/static/index.html) is not installed;
POST an SDP offer to <code>/offer</code> (see server/app.py).</p>"""

APP_KEY = web.AppKey("livehead", object)


@dataclass
class ServeConfig:
    """Server options (the `livehead serve` flags).

    latency=None: chosen per session when it starts (`LiveServer.latency_for`): first clip's audio +
    COMPUTE_HEADROOM × the batch compute measured at start for that many sessions + margin; it then adapts
    while the call runs (`tracks.LiveMedia`). A given latency is fixed.
    max_sessions: the most sessions ever admitted; the measured capacity (`LiveServer.capacity`) may admit fewer.
    """

    max_sessions: int = 4
    capacity: int | None = None  # sessions admitted; None: measured at start (`pacing.capacity`)
    token: str | None = None
    ice_servers: tuple[str, ...] = ()
    latency: float | None = None
    margin: float = 0.04  # s added to first-clip audio + compute when the latency is measured
    max_batch: int = 4
    connect_timeout: float = 20.0  # s for ICE + DTLS before an offer's resources are freed
    no_audio_grace: float = 2.0  # s after connecting without mic audio before the clock starts on silence
    record_seconds: float = 0.0  # keep this much received mic audio per session (measurement only)
    seed: int = 0
    # motion tier: render in a child process (`MotionRunners.start_render_process`), off the interpreter lock the
    # event loop and the generation thread share
    render_process: bool = True
    portrait: Path = field(default_factory=lambda: DEFAULT_IMAGE)


def _error(status: int, message: str, **extra) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


class Peer:
    """Everything one WebRTC session holds; `close()` frees all of it (idempotent)."""

    def __init__(self, server: LiveServer, pc: RTCPeerConnection, avatar_entry):
        self.id = uuid.uuid4().hex[:12]
        self.server = server
        self.pc = pc
        self.avatar_entry = avatar_entry
        self.media: LiveMedia | None = None
        self.tracks: list = []
        self.tasks: set[asyncio.Task] = set()
        self.timers: list[asyncio.TimerHandle] = []
        self.has_mic = False
        self.camera: CameraFeed | None = None  # the peer's camera driving the avatar, if it sends one
        self.closed = False
        self.created = time.monotonic()

    def spawn(self, coro) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def later(self, delay: float, fn) -> None:
        self.timers.append(asyncio.get_running_loop().call_later(delay, fn))

    async def close(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        log.info("session %s closed: %s", self.id, reason)
        self.server.peers.pop(self.id, None)
        if self.media is not None:
            self.media.closed = True
            self.server.worker.remove(self.media.session)
            self.server.retire(self.media)
        for timer in self.timers:
            timer.cancel()
        for track in self.tracks:
            track.stop()
        current = asyncio.current_task()
        for task in list(self.tasks):
            if task is not current:
                task.cancel()
        try:
            await self.pc.close()
        except Exception as err:  # closing must never fail the caller
            log.warning("session %s: closing the peer connection raised %s", self.id, err)
        self.avatar_entry.in_use -= 1
        self.media = None


class LiveServer:
    def __init__(self, runners, config: ServeConfig):
        self.runners = runners
        self.cfg = runners.cfg
        self.config = config
        self.worker = GenerationWorker(runners, max_batch=config.max_batch)
        self.avatars = AvatarStore(self.worker, self.cfg)
        self.peers: dict[str, Peer] = {}
        self.latency = config.latency  # of a session on an idle server (reported); see latency_for
        self.compute_s: float | None = None  # one clip alone, measured at start
        self.compute_batch_s: float | None = None  # a batch of max_batch sessions' shortest shared steps (at start)
        self.video_frame_s = 0.0  # one outgoing frame's colour conversion + VP8 encoding at the output size (at start)
        self.step_costs: dict[int, tuple[float, float]] = {}  # step clips → (alone, batch of max_batch) s, at start
        self.first_clip_audio_s = 0.0
        self.capacity: int | None = None  # sessions the machine keeps at real time (measured at start)
        self.load_per_session: float | None = None  # CPU s/s one more session costs (measured at start)
        self.sessions_total = 0
        self.rejected: dict[str, int] = {"capacity": 0, "bad_request": 0, "unauthorized": 0}
        self.totals = {"frames_generated": 0, "video_ticks": 0, "repeat_ticks": 0, "skipped": 0,
                       "audio_frames": 0, "mic_dropped": 0, "clears": 0, "skipped_clips": 0}
        self.first_frame_delays: deque[float] = deque(maxlen=100)  # of the latest sessions (s)

    def retire(self, media: LiveMedia) -> None:
        """Fold a closed session's counters into the server totals (/metrics)."""
        t = self.totals
        t["frames_generated"] += media.generated
        t["video_ticks"] += media.video_ticks
        t["repeat_ticks"] += media.repeat_ticks
        t["skipped"] += media.skipped
        t["audio_frames"] += media.audio_frames
        t["mic_dropped"] += media.mic_dropped
        t["clears"] += media.clears
        t["skipped_clips"] += media.skipped_clips
        if media.first_frame_delay is not None:
            self.first_frame_delays.append(media.first_frame_delay)

    # ---- lifecycle -----------------------------------------------------------------------
    async def startup(self, app: web.Application) -> None:
        if self.config.render_process and hasattr(self.runners, "start_render_process"):
            await asyncio.get_running_loop().run_in_executor(None, self.runners.start_render_process, MODEL_NICE)
        self.worker.start()
        entry = await self.avatars.add_default(self.config.portrait)
        session = Session(self.runners, entry.avatar, seed=self.config.seed)
        s = self.cfg.stream
        self.first_clip_audio_s = session.audio_needed(0) / session.sample_rate
        times = await self.worker.run(chunk_seconds, self.runners, entry.avatar, 1, WARMUP_CLIPS)
        self.compute_s = float(np.median(times[1:]))
        batch = self.config.max_batch
        # sessions sharing the model take longer steps (`GenerationWorker.step_clips`): their cost is measured alone and
        # batched at the shortest and longest shared step, the steps between interpolated (`pacing.step_costs`)
        steps = {self.worker.step_clips(n) for n in range(2, max(self.config.max_sessions, 2) + 1)}
        costs = {}
        for step in sorted({min(steps), max(steps)}):
            alone_step_s = self.compute_s if step == 1 else float(np.median(
                await self.worker.run(chunk_seconds, self.runners, entry.avatar, 1, STEP_ROUNDS, step)))
            costs[step] = (alone_step_s, alone_step_s if batch == 1 else float(np.median(
                await self.worker.run(chunk_seconds, self.runners, entry.avatar, batch, STEP_ROUNDS, step))))
        self.step_costs = {1: (self.compute_s, self.compute_s), **costs}  # one session alone: 1-clip steps
        self.compute_batch_s = costs[min(steps)][1]
        self.latency = self.latency_for(1)
        # each session's frames are also converted and encoded (VP8) at the output size
        self.video_frame_s = await asyncio.get_running_loop().run_in_executor(
            None, video_frame_seconds, entry.avatar.image)
        self.load_per_session, measured = pacing.capacity_at_steps(
            self.step_costs, self.worker.step_clips, batch, s.clip_frames, s.fps, pacing.SESSION_SHARE,
            self.config.max_sessions, self.video_frame_s, pacing.SESSION_TRANSPORT)
        self.capacity = self.config.capacity or measured
        log.info("latency %.3f s alone (first clip waits for %.3f s of audio, one clip computes in %.3f s, "
                 "margin %.3f s); %d clips batched compute in %.3f s; capacity %d sessions of %s at %d px "
                 "(%.2f CPU s/s each)", self.latency, self.first_clip_audio_s, self.compute_s, self.config.margin,
                 batch, self.compute_batch_s, self.capacity, self.cfg.name, s.image_size, self.load_per_session)

    def min_latency(self) -> float:
        """The floor an adaptive session's latency may shrink to: its audio wait + one clip's compute."""
        return self.first_clip_audio_s + (self.compute_s or 0.0) + 0.02

    def latency_for(self, sessions: int) -> float:
        """Latency of a session starting with `sessions` live (itself included): its clips share batches."""
        if self.config.latency is not None:
            return self.config.latency
        batch = self.config.max_batch
        n = min(max(sessions, 1), batch)
        compute = self.compute_s
        if n > 1:  # n sessions' steps, batched
            alone_s, batch_s = pacing.step_costs(self.step_costs, self.worker.step_clips(n))
            compute = alone_s + (batch_s - alone_s) * (n - 1) / max(batch - 1, 1)
        s = self.cfg.stream  # shared: each step also waits for its further clips' audio
        wait = self.first_clip_audio_s + (self.worker.step_clips(n) - 1) * s.clip_frames / s.fps
        return pacing.choose_latency(wait, COMPUTE_HEADROOM * compute, self.config.margin)

    async def shutdown(self, app: web.Application) -> None:
        await asyncio.gather(*(peer.close("server shutdown") for peer in list(self.peers.values())))
        await asyncio.get_running_loop().run_in_executor(None, self.worker.stop)
        if hasattr(self.runners, "stop_render_process"):
            await asyncio.get_running_loop().run_in_executor(None, self.runners.stop_render_process)

    # ---- helpers -------------------------------------------------------------------------
    def authorized(self, request: web.Request) -> bool:
        token = self.config.token
        if not token:
            return True
        given = request.headers.get("Authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {token}".encode())

    def rtc_config(self) -> RTCConfiguration:
        return RTCConfiguration(iceServers=[RTCIceServer(urls=url) for url in self.config.ice_servers])

    # ---- POST /offer ---------------------------------------------------------------------
    async def offer(self, request: web.Request) -> web.Response:
        if not self.authorized(request):
            self.rejected["unauthorized"] += 1
            return _error(401, "missing or wrong token: send 'Authorization: Bearer <token>' (the --token value)")
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
            self.rejected["bad_request"] += 1
            return _error(400, "body is not JSON: send {\"sdp\": \"...\", \"type\": \"offer\"}")
        if not isinstance(body, dict) or not isinstance(body.get("sdp"), str) or body.get("type") != "offer":
            self.rejected["bad_request"] += 1
            return _error(400, "expected JSON {\"sdp\": \"<SDP offer>\", \"type\": \"offer\", \"avatar\": \"<id>\"?}")
        avatar_id = body.get("avatar") or "default"
        entry = self.avatars.get(avatar_id) if isinstance(avatar_id, str) else None
        if entry is None:
            return _error(404, f"unknown avatar {avatar_id!r}: upload a portrait with POST /avatars and use its id")
        if len(self.peers) >= self.config.max_sessions:
            self.rejected["capacity"] += 1
            return _error(503, f"server is at its limit of {self.config.max_sessions} live sessions; try again later",
                          reason="max_sessions", sessions=len(self.peers), max_sessions=self.config.max_sessions)
        if self.capacity is not None and len(self.peers) >= self.capacity:
            self.rejected["capacity"] += 1
            return _error(503, f"server is at its measured capacity of {self.capacity} real-time sessions "
                          f"({self.cfg.name}, {self.cfg.stream.image_size} px); one more would slow every call below "
                          "real time: try again later or another server",
                          reason="capacity", sessions=len(self.peers), capacity=self.capacity,
                          load_per_session=round(self.load_per_session or 0.0, 3))

        pc = RTCPeerConnection(self.rtc_config())
        peer = Peer(self, pc, entry)
        entry.in_use += 1
        self.peers[peer.id] = peer  # holds the slot while negotiating
        try:
            return await self._negotiate(peer, body["sdp"])
        except _BadOffer as err:
            self.rejected["bad_request"] += 1
            await peer.close(f"rejected offer: {err}")
            return _error(400, str(err))
        except BaseException:
            await peer.close("negotiation failed")
            raise

    def _grow_steps(self, joined: Peer) -> None:
        """A session joining makes every session's steps longer (`GenerationWorker.step_clips`: more audio to wait
        for) and their batches bigger (more compute): the others' latency grows at once by what `latency_for` adds
        for one more session (it shrinks back by itself once they are fewer again). Grown 20 ms at a time by the
        adaptive rule instead, each step shows a frame twice (the picture waits 20 ms for the sound)."""
        n = len(self.peers)
        extra = self.latency_for(n) - self.latency_for(n - 1) if self.config.latency is None else 0.0
        if extra > 0:
            for other in self.peers.values():
                if other is not joined and other.media is not None:
                    other.media.raise_latency(extra)

    async def _negotiate(self, peer: Peer, sdp: str) -> web.Response:
        pc = peer.pc
        session = Session(self.runners, peer.avatar_entry.avatar, seed=self.config.seed)
        media = LiveMedia(session, peer.avatar_entry.avatar.image, self.latency_for(len(self.peers)),
                          kick=self.worker.kick,
                          record_seconds=self.config.record_seconds,
                          compute_estimate=lambda: self.worker.batch_ema_s or self.compute_s,
                          min_latency=self.min_latency(), adaptive=self.config.latency is None, early_start=True)
        peer.media = media
        peer.spawn(media.run_clock())
        self._grow_steps(peer)

        @pc.on("track")
        def on_track(track):
            if track.kind == "audio" and not peer.has_mic:
                for receiver in pc.getReceivers():  # before media flows: release mic packets 60 ms sooner
                    if receiver.track is track:
                        shorten_audio_jitter_buffer(receiver)
                peer.has_mic = True
                media.mic_track = track
                if peer.camera is not None:  # a camera beside a voice moves head and eyes only
                    peer.camera.timeline.voice = True
                peer.spawn(consume_mic(track, media))
            elif track.kind == "video" and peer.camera is None:
                try:
                    peer.camera = CameraFeed(media, self.runners.space, voice=peer.has_mic)
                except (InputError, AttributeError):
                    log.warning("session %s: camera ignored: the %s preset cannot be driven by a camera (use the "
                                "motion preset)", peer.id, self.cfg.name)
                    return
                peer.spawn(peer.camera.consume(track))

        @pc.on("datachannel")
        def on_datachannel(channel):
            media.channel = channel

            @channel.on("message")
            def on_message(message):
                self._on_message(peer, channel, message)

        @pc.on("connectionstatechange")
        async def on_state():
            state = pc.connectionState
            if state == "connected":
                if peer.has_mic:  # the clock starts on the first mic audio, or on silence after a grace period
                    peer.later(self.config.no_audio_grace, lambda: media.anchor(time.monotonic()))
                else:
                    media.anchor(time.monotonic())
            elif state in ("failed", "closed"):
                await peer.close(f"connection {state}")

        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        except Exception as err:
            raise _BadOffer(f"malformed SDP offer ({_short(err)}); send the offer your RTCPeerConnection created") \
                from None
        kinds = {t.kind for t in pc.getTransceivers()}
        if "video" not in kinds:
            raise _BadOffer("the offer has no video transceiver: add pc.addTransceiver('video', "
                            "{direction: 'recvonly'}) before createOffer()")
        peer.tracks.append(AvatarVideoTrack(media))
        if "audio" in kinds:  # Opus (what browsers negotiate) is encoded in the track; others by aiortc
            peer.tracks.append(DelayedAudioTrack(media, opus=negotiated_codec(pc, "audio") == "audio/opus"))
        for track in peer.tracks:
            sender = pc.addTrack(track)
            if track.kind == "video" and negotiated_codec(pc, "video") == "video/vp8":
                use_encoder(sender, RenderedVp8Encoder())  # rendered frames: no denoiser, faster (video_encoder.py)
        await pc.setLocalDescription(await pc.createAnswer())
        if peer.closed:
            raise _BadOffer("the connection closed during negotiation")
        self.worker.add(session, media)
        self.sessions_total += 1
        peer.later(self.config.connect_timeout, lambda: self._connect_deadline(peer))
        log.info("session %s: offer accepted (avatar %s, mic %s, camera %s)", peer.id, peer.avatar_entry.id,
                 peer.has_mic, peer.camera is not None)
        return web.json_response({"sdp": pc.localDescription.sdp, "type": pc.localDescription.type,
                                  "session": peer.id, "latency": media.latency})

    def _connect_deadline(self, peer: Peer) -> None:
        if not peer.closed and peer.pc.connectionState != "connected":
            peer.spawn(peer.close(f"not connected within {self.config.connect_timeout:.0f} s"))

    def _on_message(self, peer: Peer, channel, message) -> None:
        media = peer.media
        if media is None:
            return
        try:
            if not isinstance(message, str) or len(message) > MAX_MESSAGE:
                raise ValueError("messages are JSON text under 4 KB")
            msg = json.loads(message)
            kind = msg.get("type") if isinstance(msg, dict) else None
        except ValueError as err:
            if channel.readyState == "open":
                channel.send(json.dumps({"type": "error", "error": f"bad message: {err}"}))
            return
        now = time.monotonic()
        reply = None
        if kind == "clear":
            media.clear(now)
            reply = {"type": "cleared", "at": now}
        elif kind == "stamps":
            media.stamps = bool(msg.get("enable", True))
        elif kind == "neutral":
            if peer.camera is None:
                reply = {"type": "error", "error": "no camera is driving this session: neutral needs one"}
            else:
                peer.camera.reset_neutral()
                reply = {"type": "neutral", "at": now}
        elif kind == "ping":
            reply = {"type": "pong", "t": msg.get("t"), "server": now}
        else:
            reply = {"type": "error", "error": f"unknown message type {kind!r}; use clear, stamps, neutral or ping"}
        if reply is not None and channel.readyState == "open":
            channel.send(json.dumps(reply))

    # ---- POST /avatars -------------------------------------------------------------------
    async def upload_avatar(self, request: web.Request) -> web.Response:
        if not self.authorized(request):
            self.rejected["unauthorized"] += 1
            return _error(401, "missing or wrong token: send 'Authorization: Bearer <token>' (the --token value)")
        too_large = _error(413, f"upload too large: the limit is {MAX_UPLOAD_BYTES // 2**20} MB; "
                                "send a smaller portrait")
        slack = 64 * 1024 if request.content_type.startswith("multipart/") else 0
        if request.content_length is not None and request.content_length > MAX_UPLOAD_BYTES + slack:
            return too_large
        try:
            data = await _read_image_body(request)
        except _TooLarge:
            return too_large
        except ValueError as err:
            return _error(400, str(err))
        try:
            avatar_id = await self.avatars.add_upload(data)
        except InputError as err:
            return _error(400, str(err))
        return web.json_response({"id": avatar_id})

    # ---- pages and figures -----------------------------------------------------------------
    async def index(self, request: web.Request) -> web.StreamResponse:
        page = STATIC / "index.html"
        if page.is_file():
            return web.FileResponse(page)
        return web.Response(text=PLACEHOLDER_PAGE, content_type="text/html")

    async def static(self, request: web.Request) -> web.StreamResponse:
        path = (STATIC / request.match_info["name"]).resolve()
        if STATIC.resolve() not in path.parents or not path.is_file():
            raise web.HTTPNotFound()
        return web.FileResponse(path)

    async def healthz(self, request: web.Request) -> web.Response:
        ok = self.worker.alive
        return web.json_response({
            "status": "ok" if ok else "generation worker stopped", "sessions": len(self.peers),
            "max_sessions": self.config.max_sessions, "capacity": self.capacity,
            "load": round(len(self.peers) / self.capacity, 3) if self.capacity else None,
            "load_per_session_cpu_s": self.load_per_session,
            "image_size": self.cfg.stream.image_size, "clip_frames": self.cfg.stream.clip_frames,
            "latency_s": self.latency, "clip_compute_s": self.compute_s,
            "batch_compute_s": self.compute_batch_s, "max_batch": self.config.max_batch,
            "first_clip_audio_s": self.first_clip_audio_s, "preset": self.cfg.name,
            "device": str(self.runners.device), "avatars": len(self.avatars.entries),
        }, status=200 if ok else 503)

    async def metrics(self, request: web.Request) -> web.Response:
        from livehead.server.webrtc.metrics import render

        return web.Response(text=render(self), content_type="text/plain", charset="utf-8",
                            headers={"X-Content-Type-Options": "nosniff"})


class _BadOffer(Exception):
    pass


class _TooLarge(Exception):
    pass


def _short(err: BaseException) -> str:
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    return text[:200]


async def _read_limited(read_chunk, limit: int) -> bytes:
    data = bytearray()
    while True:
        chunk = await read_chunk()
        if not chunk:
            return bytes(data)
        data += chunk
        if len(data) > limit:
            raise _TooLarge


async def _read_image_body(request: web.Request) -> bytes:
    """The first file part of a multipart body, or the raw body; _TooLarge beyond MAX_UPLOAD_BYTES."""
    if request.content_type.startswith("multipart/"):
        try:
            reader = await request.multipart()
            part = await reader.next()
            while part is not None and not getattr(part, "filename", None):
                part = await reader.next()
        except (ValueError, AssertionError) as err:
            raise ValueError(f"malformed multipart body ({_short(err)})") from None
        if part is None:
            raise ValueError("the multipart body has no file part; send the portrait as a file field")
        return await _read_limited(lambda: part.read_chunk(65536), MAX_UPLOAD_BYTES)
    return await _read_limited(lambda: request.content.read(65536), MAX_UPLOAD_BYTES)


async def serve_loopback(app: web.Application) -> tuple[web.AppRunner, str]:
    """Start `app` on 127.0.0.1 at a free port (benchmarks and tests) → (its runner, to `cleanup()` later; its base
    URL "http://127.0.0.1:PORT")."""
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    return runner, f"http://127.0.0.1:{port}"


def create_app(runners, config: ServeConfig | None = None) -> web.Application:
    """The aiohttp application; the model warms up and the latency is measured on startup."""
    config = config or ServeConfig()
    if config.max_sessions < 1:
        raise InputError(f"--max-sessions must be at least 1, got {config.max_sessions}")
    if config.capacity is not None and not 1 <= config.capacity <= config.max_sessions:
        raise InputError(f"--capacity must be between 1 and --max-sessions ({config.max_sessions}), "
                         f"got {config.capacity}")
    if config.latency is not None and not 0 < config.latency <= 10:
        raise InputError(f"--latency must be between 0 and 10 seconds, got {config.latency}")
    server = LiveServer(runners, config)
    app = web.Application(client_max_size=MAX_UPLOAD_BYTES + 64 * 1024)
    app[APP_KEY] = server
    app.on_startup.append(server.startup)
    app.on_shutdown.append(server.shutdown)
    app.router.add_post("/offer", server.offer)
    app.router.add_post("/avatars", server.upload_avatar)
    app.router.add_get("/", server.index)
    app.router.add_get("/static/{name:.+}", server.static)
    app.router.add_get("/healthz", server.healthz)
    app.router.add_get("/metrics", server.metrics)
    return app

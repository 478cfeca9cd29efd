"""A headless aiortc client of the live server, and the A/V measurements made with it.

    client = LoopbackClient("http://127.0.0.1:8080", speech_48k)   # float32 mono at 48 kHz, sent as the mic
    await client.connect()          # offer: mic audio (sendrecv) + a recvonly video transceiver + a data channel
                                    # (camera=frames: the video transceiver sends them as the camera, sendrecv)
    await client.run(5.0)           # receive for 5 s (video frames, audio, per-tick stamps)
    await client.close()

Used by the end-to-end tests and benchmarks/webrtc_latency.py. All times are `time.monotonic()`;
`source_wall` stamps compare with the client's clock only when client and server share a host.

A/V offset method (`av_offset`). Content is timed when its RTP packets reach the client: aiortc's
receiver then buffers each kind differently (audio: 4 packets = 80 ms of prefetch; video: a frame is
released when the next one starts, +40 ms) and does no lip sync, unlike a browser, which aligns the
tracks with the RTCP sender reports; those report send times, so packet arrival is what a receiver
synchronises on. Reference time of timeline content = its arrival at the server (the `source_wall`
of stamps; the capture time of the samples).
  audio delay = median over received audio packets of (arrival − reference time of the timeline
      sample it carries); which sample = its position in the received stream − the latency change
      made so far (each stamp's `shift`: a server whose latency grew by s sent s of silence, and the
      stream runs s behind the timeline from then on) − the content lag found by cross-correlating
      that with the server's timeline audio (Opus adds ~6.5 ms);
  video delay = median over generated frames of (arrival of the last packet of the first tick that
      shows it − reference time of the frame's first audio sample); ticks that repeat a frame on
      underrun bring nothing new and are not counted (their share is reported); tick identity from
      the RTP timestamp (`match_stamps`);
  A/V offset = median over those frames of (its video delay − the audio delay of the packets arriving
      with it, interpolated), > 0: the picture trails the sound. Pairing by arrival keeps a call whose
      latency changed on the way honest; the difference of the two medians is reported beside it.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from fractions import Fraction

import aiohttp
import av
import numpy as np
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

RATE = 48_000
FRAME = 960  # 20 ms
VIDEO_CLOCK = 90_000


class PacedAudioTrack(MediaStreamTrack):
    """Mic stand-in: float32 mono 48 kHz audio sent as 20 ms s16 frames in real time, then silence.

    `sent[m]` = the wall time frame m left (its first sample's capture time is that minus 20 ms).
    """

    kind = "audio"

    def __init__(self, pcm48: np.ndarray):
        super().__init__()
        self.pcm = (np.clip(pcm48, -1, 1) * 32767).round().astype(np.int16)
        self.start: float | None = None
        self.m = 0
        self.sent: list[float] = []

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self.start is None:
            self.start = time.monotonic()
        due = self.start + (self.m + 1) * FRAME / RATE  # a frame leaves once its 20 ms are captured
        wait = due - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        chunk = self.pcm[self.m * FRAME:(self.m + 1) * FRAME]
        if chunk.size < FRAME:
            chunk = np.concatenate([chunk, np.zeros(FRAME - chunk.size, np.int16)])
        frame = av.AudioFrame.from_ndarray(chunk[None, :], format="s16", layout="mono")
        frame.sample_rate = RATE
        frame.pts = self.m * FRAME
        frame.time_base = Fraction(1, RATE)
        self.sent.append(time.monotonic())
        self.m += 1
        return frame


class PacedVideoTrack(MediaStreamTrack):
    """Camera stand-in: uint8 RGB frames [F, H, W, 3] sent in real time at `fps`, looping.

    `sent` = (wall time frame i left, i modulo F) for every frame sent."""

    kind = "video"

    def __init__(self, frames: np.ndarray, fps: float = 25.0):
        super().__init__()
        self.frames = np.asarray(frames, np.uint8)
        self.fps = fps
        self.start: float | None = None
        self.i = 0
        self.sent: list[tuple[float, int]] = []

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self.start is None:
            self.start = time.monotonic()
        wait = self.start + self.i / self.fps - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        j = self.i % len(self.frames)
        frame = av.VideoFrame.from_ndarray(self.frames[j], format="rgb24")
        frame.pts = round(self.i * VIDEO_CLOCK / self.fps)
        frame.time_base = Fraction(1, VIDEO_CLOCK)
        self.sent.append((time.monotonic(), j))
        self.i += 1
        return frame


@dataclass
class Received:
    video: list[tuple[float, int]] = field(default_factory=list)  # decoded: (arrival, pts in 1/90000 s from the first)
    images: list[tuple[int, np.ndarray]] = field(default_factory=list)  # (pts, rgb24 [S, S, 3]), when kept
    audio: list[tuple[int, float, np.ndarray]] = field(default_factory=list)  # (pts, packet arrival, mono 48 kHz)
    video_packets: dict[int, float] = field(default_factory=dict)  # pts from the first → arrival of its last packet
    audio_packets: dict[int, float] = field(default_factory=dict)  # pts from the first → packet arrival
    stamps: list[dict] = field(default_factory=list)
    messages: list[tuple[float, dict]] = field(default_factory=list)  # other data-channel messages


class LoopbackClient:
    def __init__(self, base_url: str, pcm48: np.ndarray | None, avatar: str | None = None,
                 token: str | None = None, keep_images: bool = False, stamps: bool = True, decode_video: bool = True,
                 camera: np.ndarray | None = None, camera_fps: float = 25.0):
        """decode_video=False: video packets are only timed (`got.video_packets`), never decoded (saves CPU).
        camera: uint8 RGB frames [F, H, W, 3] sent as the camera (looping, `self.camera.sent` times them)."""
        self.base_url = base_url.rstrip("/")
        self.mic = PacedAudioTrack(pcm48) if pcm48 is not None else None
        self.camera = PacedVideoTrack(camera, camera_fps) if camera is not None else None
        self.avatar = avatar
        self.token = token
        self.keep_images = keep_images
        self.stamps = stamps
        self.decode_video = decode_video
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.channel = self.pc.createDataChannel("control")
        self.got = Received()
        self.tasks: list[asyncio.Task] = []
        self.session_id: str | None = None
        self.opened = asyncio.Event()
        self.connected_at: float | None = None

    async def connect(self, timeout: float = 20.0) -> None:
        pc = self.pc
        if self.mic is not None:
            pc.addTrack(self.mic)
        if self.camera is not None:
            pc.addTrack(self.camera)  # sendrecv: the camera goes out, the avatar comes back
        else:
            pc.addTransceiver("video", direction="recvonly")

        @pc.on("track")
        def on_track(track):
            consume = self._video if track.kind == "video" else self._audio
            self.tasks.append(asyncio.ensure_future(consume(track)))

        @self.channel.on("open")
        def on_open():
            if self.stamps:
                self.channel.send(json.dumps({"type": "stamps", "enable": True}))
            self.opened.set()

        @self.channel.on("message")
        def on_message(message):
            msg = json.loads(message)
            if msg.get("type") == "frame":
                self.got.stamps.append(msg)
            else:
                self.got.messages.append((time.monotonic(), msg))

        await pc.setLocalDescription(await pc.createOffer())
        for transceiver in pc.getTransceivers():
            self._time_packets(transceiver.receiver, transceiver.kind)
        body = {"sdp": pc.localDescription.sdp, "type": pc.localDescription.type}
        if self.avatar:
            body["avatar"] = self.avatar
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{self.base_url}/offer", json=body, headers=headers) as resp:
                answer = await resp.json()
                if resp.status != 200:
                    raise RuntimeError(f"offer refused: HTTP {resp.status} {answer}")
        self.session_id = answer.get("session")
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type=answer["type"]))
        await asyncio.wait_for(self.opened.wait(), timeout)
        self.connected_at = time.monotonic()

    def _time_packets(self, receiver, kind: str) -> None:
        """Record when each RTP packet arrives, keyed like the decoded frames' pts (from the first one)."""
        handle = receiver._handle_rtp_packet
        arrivals = self.got.video_packets if kind == "video" else self.got.audio_packets
        first: list[int] = []

        decode = kind != "video" or self.decode_video

        async def timed(packet, arrival_time_ms):
            if not first:
                first.append(packet.timestamp)
            arrivals[(packet.timestamp - first[0]) % (1 << 32)] = time.monotonic()
            if decode:
                await handle(packet, arrival_time_ms)

        receiver._handle_rtp_packet = timed

    async def _video(self, track) -> None:
        try:
            while True:
                frame = await track.recv()
                self.got.video.append((time.monotonic(), int(frame.pts)))
                if self.keep_images:
                    self.got.images.append((int(frame.pts), frame.to_ndarray(format="rgb24")))
        except MediaStreamError:
            pass

    async def _audio(self, track) -> None:
        try:
            while True:
                frame = await track.recv()
                pts = int(frame.pts)
                arrival = self.got.audio_packets.get(pts, time.monotonic())
                a = frame.to_ndarray().astype(np.float32) / 32768.0  # s16 packed: [1, n * channels]
                channels = len(frame.layout.channels)
                self.got.audio.append((pts, arrival, a.reshape(-1, channels).mean(axis=1)))
        except MediaStreamError:
            pass

    async def run(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def receive_video(self, seconds: float, timeout: float = 30.0) -> None:
        """Wait until video has been arriving for `seconds` since its first packet: a measurement window that
        starts at the first frame ends inside the call however long the call took to start (a loaded machine's
        first frames come later). Raises TimeoutError when that takes more than `timeout` s."""
        async def enough() -> None:
            while not self.got.video_packets or time.monotonic() - min(self.got.video_packets.values()) < seconds:
                await asyncio.sleep(0.02)

        await asyncio.wait_for(enough(), timeout)

    def send(self, message: dict) -> float:
        self.channel.send(json.dumps(message))
        return time.monotonic()

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.pc.close()


# ---------------------------------------------------------------------------------------------- analysis


def place(chunks: list[tuple[int, np.ndarray]], n: int) -> np.ndarray:
    """Chunks (first sample index, samples) → one signal [n]; later chunks win."""
    out = np.zeros(n, np.float32)
    for i, pcm in chunks:
        lo, hi = max(i, 0), min(i + pcm.size, n)
        if hi > lo:
            out[lo:hi] = pcm[lo - i:hi - i]
    return out


def content_lag(ref: list[tuple[int, np.ndarray]], rec: list[tuple[int, np.ndarray]],
                max_lag: int = RATE) -> tuple[int, float]:
    """Samples by which `rec` content trails `ref` (|lag| ≤ max_lag), and the normalised peak (0..1)."""
    n = max(max(i + p.size for i, p in ref), max(i + p.size for i, p in rec)) + 1
    a, b = place(ref, n), place(rec, n)
    size = 1 << int(np.ceil(np.log2(2 * n)))
    corr = np.fft.irfft(np.conj(np.fft.rfft(a, size)) * np.fft.rfft(b, size), size)  # corr[k] = Σ a[i] b[i+k]
    lags = np.concatenate([np.arange(0, max_lag + 1), np.arange(-max_lag, 0)])
    k = int(lags[np.argmax(corr[lags % size])])
    norm = float(np.sqrt(np.sum(a * a) * np.sum(b * b))) or 1.0
    return k, float(corr[k % size] / norm)


def match_stamps(video: list[tuple[float, int]], stamps: list[dict], fps: int) -> list[tuple[float, int, dict]]:
    """Pair received frames (arrival, pts) with the server's per-tick stamps: [(arrival, pts, stamp)].

    A received frame's pts counts 90 kHz ticks from the first frame the client decoded (aiortc maps RTP
    timestamps from the first one received), so tick = pts·fps/90000 + shift. The shift is the largest
    one for which no frame arrives before the server sent it (causality); a smaller shift would pair
    frames with earlier ticks, a larger one breaks causality for some frame on a fast loopback.
    """
    by_tick = {s["tick"]: s for s in stamps}
    if not video or not by_tick:
        return []
    rel = [(arrival, round(pts * fps / VIDEO_CLOCK)) for arrival, pts in video]
    best = None
    for shift in range(0, max(by_tick) + 1):
        pairs = [(a, pts, by_tick[r + shift]) for (a, r), (_, pts) in zip(rel, video) if r + shift in by_tick]
        if not pairs:
            break
        if all(a >= s["sent"] for a, _, s in pairs):
            best = pairs
    return best or []


def av_offset(recording: list[tuple[int, float, np.ndarray]], got: Received, fps: int) -> dict:
    """Audio delay, video delay and A/V offset (s) of one session (see the module docstring).

    recording: the server's timeline audio, (first sample, arrival, float32 mono 48 kHz) per chunk
    (LiveMedia.recording).
    """
    from livehead.server.webrtc.pacing import source_wall_time

    # audio frame m carries timeline samples from m·960 − shift (the latency change so far, in samples): undo the
    # shift the stamps report at its arrival, so a call whose latency changed maps every packet to its own content
    shifts = sorted((s["sent"], s["shift"]) for s in got.stamps if "shift" in s and "sent" in s)
    sent_at = np.array([t for t, _ in shifts])

    def shift_at(t: float) -> int:
        return shifts[max(int(np.searchsorted(sent_at, t)) - 1, 0)][1] if shifts else 0

    received = [(pts - shift_at(arrival), arrival, pcm) for pts, arrival, pcm in got.audio]
    lag, peak = content_lag([(first, pcm) for first, _, pcm in recording], [(pts, pcm) for pts, _, pcm in received])
    sources = [(first, pcm.size, arrival) for first, arrival, pcm in recording]
    audio = []
    for pts, arrival, _ in received:
        source = source_wall_time(sources, pts - lag, RATE)
        if source is not None:
            audio.append((arrival, arrival - source))
    packets = sorted((arrival, pts) for pts, arrival in got.video_packets.items())
    pairs = match_stamps(packets, got.stamps, fps)
    first: dict[int, tuple[float, float]] = {}  # generated frame → (arrival, delay) at its first showing
    for arrival, _, stamp in pairs:
        if stamp.get("source_wall") is not None and stamp["frame"] not in first:
            first[stamp["frame"]] = (arrival, arrival - stamp["source_wall"])
    video = np.array([delay for _, delay in first.values()])
    audio_delay = float(np.median([d for _, d in audio])) if audio else float("nan")
    video_delay = float(np.median(video)) if video.size else float("nan")
    paired = float("nan")
    if audio and video.size:  # each frame against the sound arriving with it (the latency may change in a call)
        audio_at, audio_d = np.array(sorted(audio)).T
        shown_at = np.array([at for at, _ in first.values()])
        paired = float(np.median(video - np.interp(shown_at, audio_at, audio_d)))
    return {"audio_delay_s": audio_delay, "audio_content_lag_samples": lag, "xcorr_peak": peak,
            "video_delay_s": video_delay, "av_offset_s": paired, "av_offset_of_medians_s": video_delay - audio_delay,
            "audio_matched": len(audio), "ticks_matched": len(pairs), "frames_matched": int(video.size),
            "repeat_share": 1 - len(first) / len(pairs) if pairs else float("nan")}


def signal_lag(sent: list[tuple[float, float]], received: list[tuple[float, float]], max_lag: float = 1.5,
               step: float = 0.005) -> tuple[float, float]:
    """The delay (s) with which a signal sent as (time, value) pairs comes back as (time, value) pairs, and the
    correlation at that delay: both are resampled on a common grid of `step` s and the received one is shifted
    back by 0 … max_lag s; the shift with the highest Pearson correlation wins. E.g. the mouth opening of
    camera frames as they left against that of the avatar's frames as they arrived: camera-to-screen delay."""
    ts, vs = np.asarray(sent, np.float64).T
    tr, vr = np.asarray(received, np.float64).T
    best = (0.0, -1.0)
    for lag in np.arange(0.0, max_lag + step / 2, step):
        lo, hi = max(ts[0], tr[0] - lag), min(ts[-1], tr[-1] - lag)
        if hi - lo < 1.0:
            continue
        grid = np.arange(lo, hi, step)
        a, b = np.interp(grid, ts, vs), np.interp(grid + lag, tr, vr)
        if a.std() > 0 and b.std() > 0:
            r = float(np.corrcoef(a, b)[0, 1])
            if r > best[1]:
                best = (float(lag), r)
    return best


def received_fps(video: list[tuple[float, int]], t_from: float, seconds: float) -> float:
    """Frames that arrived in [t_from, t_from + seconds) per second."""
    return sum(t_from <= a < t_from + seconds for a, _ in video) / seconds

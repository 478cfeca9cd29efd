"""Media of one live session: the clock, the timeline, the mic consumer and the two outgoing tracks.

    media = LiveMedia(session, idle_image, latency=1.0, kick=worker.kick)
    task = asyncio.create_task(consume_mic(remote_audio_track, media))   # mic → timeline
    pc.addTrack(AvatarVideoTrack(media)); pc.addTrack(DelayedAudioTrack(media))

Timeline: every 20 ms of mic audio is resampled twice (PyAV, one resampler pair per session): to
16 kHz mono for `Session.push_audio` and to 48 kHz mono for playback. Both copies advance together, as
does padded silence, so the session's frames and the played audio describe the same timeline τ.
`t0` (the clock) is the capture time of timeline sample 0, set once when the first mic audio arrives;
content at τ leaves at `t0 + latency + τ` on both tracks (server/pacing.py). Everything runs on the
event loop except `Session.prepare_clip/finish_clip`, which the generation worker calls under the
session's lock.

Adaptive latency: the tracks tick on a fixed clock, `t0 + base_latency + k/fps` (video) and
`t0 + base_latency + m·20 ms` (audio), so RTP timing stays regular; `latency = base_latency + shift`, where
the shift (whole 20 ms audio frames) moves which timeline content a tick carries. The session's chunks report
their slack (due time − ready time, `on_frames`); `pacing.latency_step` turns the recent slack into a step
of ±20 ms, applied only on a quiet 20 ms of outgoing audio (a silent frame is sent once more or one is left
out), so speech never jumps and picture and sound move together.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections import deque
from fractions import Fraction

import av
import cv2
import numpy as np
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from livehead.engine.common.constants import SAMPLE_RATE
from livehead.engine.runtime.session import Session, VideoFrame
from livehead.server.webrtc import pacing
from livehead.server.webrtc.aiortc_private import queued_frames
from livehead.server.webrtc.pacing import AUDIO_FRAME, AUDIO_RATE
from livehead.server.webrtc.video_encoder import RenderedVp8Encoder

log = logging.getLogger("livehead.tracks")
SESSION_RATE = SAMPLE_RATE  # Session input rate
QUIET_RMS = 10 ** (-50 / 20)  # below −50 dBFS a mic chunk counts as silence (may be compacted)
PAD_AFTER_S = 0.06  # pad silence once the timeline lags the wall clock by this much
COMPACT_AFTER_S = 0.05  # drop quiet mic chunks once the timeline runs this far ahead
MAX_AHEAD_S = 0.5  # drop every mic chunk beyond this (a peer sending faster than real time)
KEEP_PLAYED_S = 0.1  # playback audio kept behind the play position
LOG_SECONDS = 6.0  # source-arrival log kept for stamps (beyond the latency)
OPUS_BITRATE = 64_000  # outgoing mono speech
MAX_STALE_FRAMES = 2  # a generated frame more than this many ticks late is not shown (hold the last one)
STATS_WINDOW = 50  # video ticks in the fps / A/V-offset windows (2 s at 25 fps)
SLACK_WINDOW_S = 3.0  # recent chunk slacks the latency adapts to
MAX_LATENCY_S = 2.0  # the latency never grows beyond this
KEEPING_UP = 0.9  # a session making fewer frames than this share of real time is overloaded: latency holds
OVERLOAD_HEADROOM = 1.5  # ... once it covers a step's audio wait + this × the compute measured now


class ChunkBuffer:
    """Mono float32 samples addressed by absolute index, stored as appended chunks (no big copies)."""

    def __init__(self):
        self.chunks: deque[tuple[int, np.ndarray]] = deque()
        self.end = 0

    def append(self, pcm: np.ndarray) -> None:
        if pcm.size:
            self.chunks.append((self.end, pcm))
            self.end += pcm.size

    def read(self, a: int, n: int) -> np.ndarray:
        """Samples [a, a + n); zeros where nothing (or nothing any more) is stored."""
        out = np.zeros(n, dtype=np.float32)
        for start, pcm in self.chunks:
            lo, hi = max(a, start), min(a + n, start + pcm.size)
            if hi > lo:
                out[lo - a:hi - a] = pcm[lo - start:hi - start]
            if start >= a + n:
                break
        return out

    def forget_before(self, a: int) -> None:
        while self.chunks and self.chunks[0][0] + self.chunks[0][1].size <= a:
            self.chunks.popleft()

    def truncate(self, e: int) -> None:
        """Drop every sample at or after e (the timeline is cut back there)."""
        while self.chunks and self.chunks[-1][0] >= e:
            self.chunks.pop()
        if self.chunks and self.chunks[-1][0] + self.chunks[-1][1].size > e:
            start, pcm = self.chunks.pop()
            self.chunks.append((start, pcm[:e - start]))
        self.end = min(self.end, e)


class LiveMedia:
    """Clock, timeline and output selection of one session (event-loop side)."""

    def __init__(self, session: Session, idle_image: np.ndarray, latency: float, kick=lambda: None,
                 record_seconds: float = 0.0, compute_estimate=lambda: None, min_latency: float | None = None,
                 adaptive: bool = True, early_start: bool = False):
        self.session = session
        self.fps = session.cfg.stream.fps
        self.adaptive = adaptive
        self.min_latency = latency if min_latency is None else min(min_latency, latency)
        # the tracks' fixed tick clock, t0 + base_latency + ...; with early_start an adaptive session ticks from its
        # latency floor, its latency above it being a shift from the start: its picture (the idle photo until the
        # first frame) and its sound (silence until the first audio is due) start at once even when it starts
        # well above the floor (a caller joining a busy server, whose steps are long)
        floor = self.min_latency if adaptive and early_start else latency
        # latency − base_latency in 48 kHz samples, whole 20 ms frames
        self.shift48 = self.target_shift48 = round((latency - floor) * AUDIO_RATE / AUDIO_FRAME) * AUDIO_FRAME
        self.base_latency = latency - self.shift48 / AUDIO_RATE  # so the latency is the one asked for, exactly
        self.slacks: deque[tuple[float, float, int]] = deque()  # (ready time, due − ready, frames) of recent steps
        self.latency_changes = 0
        self.latency_range = (latency, latency)  # the lowest and highest latency this session ran at
        self.kick = kick
        self.compute_estimate = compute_estimate  # () → seconds one clip takes now (the worker's), or None
        self.idle_image = idle_image  # shown before the first frame and right after a barge-in
        self.t0: float | None = None  # capture time of timeline sample 0 (monotonic s)
        self.first_audio_at: float | None = None
        self.anchored = asyncio.Event()
        self.playback = ChunkBuffer()  # 48 kHz timeline, what DelayedAudioTrack plays
        self.sources: deque[tuple[int, int, float]] = deque()  # (first48, n48, arrival) of timeline chunks
        self.source_keep_s = latency + LOG_SECONDS
        self.record_seconds = record_seconds
        self.recording: deque[tuple[int, float, np.ndarray]] = deque()  # (first48, arrival, pcm48), tests only
        self.current = idle_image
        self.current_index = -1  # generated frame shown now; −1 = idle image
        self.audio_next = 0  # next outgoing audio frame m
        self.channel = None  # the peer's data channel, once open
        self.mic_track = None  # the peer's incoming audio track, if any
        self.stamps = False  # send a {"type": "frame"} stamp per video tick on the data channel
        self.closed = False
        # figures
        self.mic_chunks = self.mic_dropped = self.padded_samples = 0
        self.generated = self.video_ticks = self.fresh_ticks = self.repeat_ticks = self.skipped = 0
        self.audio_frames = 0
        self.first_frame_delay: float | None = None
        self.clears = 0
        self.skipped_clips = 0
        self.tick_times: deque[float] = deque(maxlen=STATS_WINDOW)
        self.video_delays: deque[float] = deque(maxlen=STATS_WINDOW)
        self.audio_delays: deque[float] = deque(maxlen=2 * STATS_WINDOW)

    # ---- clock and timeline --------------------------------------------------------------
    @property
    def latency(self) -> float:
        """Input-to-output delay now (s): the tick clock's plus the adaptive shift."""
        return self.base_latency + self.shift48 / AUDIO_RATE

    def raise_latency(self, seconds: float) -> None:
        """Add `seconds` to the latency (whole 20 ms audio frames, applied in quiet moments as every change is; at
        most MAX_LATENCY_S): when this session's steps grow because another session joined, its frames need
        that much more audio first. A fixed latency (not adaptive) stays."""
        if not self.adaptive or seconds <= 0:
            return
        room = max(0.0, MAX_LATENCY_S - self.base_latency - self.target_shift48 / AUDIO_RATE)
        self.target_shift48 += math.ceil(min(seconds, room) * AUDIO_RATE / AUDIO_FRAME - 1e-9) * AUDIO_FRAME
        self.slacks.clear()  # measured at the old steps

    @property
    def timeline48(self) -> int:
        return self.playback.end

    def anchor(self, t0: float) -> None:
        if self.t0 is None:
            self.t0 = t0
            self.anchored.set()

    def _log_source(self, first: int, n: int, arrival: float, pcm: np.ndarray | None) -> None:
        self.sources.append((first, n, arrival))
        while self.sources and self.sources[0][2] < arrival - self.source_keep_s:
            self.sources.popleft()
        if self.record_seconds > 0 and pcm is not None:
            self.recording.append((first, arrival, pcm))
            while self.recording and self.recording[0][1] < arrival - self.record_seconds:
                self.recording.popleft()

    def _append(self, pcm16: np.ndarray, pcm48: np.ndarray, arrival: float, record: np.ndarray | None) -> None:
        self.session.push_audio(pcm16, SESSION_RATE)
        self._log_source(self.playback.end, pcm48.size, arrival, record)
        self.playback.append(pcm48)
        self.kick()

    def push_mic(self, pcm16: np.ndarray, pcm48: np.ndarray, now: float) -> None:
        """One decoded mic chunk (float32 mono at 16 and 48 kHz) that arrived at `now`."""
        if self.closed or pcm48.size == 0:
            return
        if self.first_audio_at is None:
            self.first_audio_at = now
        self.anchor(now - pcm48.size / AUDIO_RATE)
        self.mic_chunks += 1
        quiet = _quiet(pcm48)
        after = (self.timeline48 + pcm48.size) / AUDIO_RATE
        if not pacing.keep_input(after, now - self.t0, quiet, COMPACT_AFTER_S, MAX_AHEAD_S):
            self.mic_dropped += 1
            return
        self._append(pcm16, pcm48, now, pcm48)
        self._forget(now)

    def pad(self, now: float, pad_after: float = PAD_AFTER_S) -> None:
        """Keep the timeline level with the wall clock: fill a lag longer than `pad_after` with silence.

        Not while mic frames wait in aiortc's queue (a stalled loop, not a silent mic: they fill the gap).
        """
        if self.t0 is None or self.closed or (pad_after > 0 and self.mic_queue_depth()):
            return
        n48 = pacing.silence_to_pad(self.timeline48, now - self.t0, AUDIO_RATE, pad_after)
        if n48 <= 0:
            return
        n16 = n48 * SESSION_RATE // AUDIO_RATE
        self.padded_samples += n48
        self._append(np.zeros(n16, np.float32), np.zeros(n48, np.float32), now, np.zeros(n48, np.float32))
        self._forget(now)

    async def run_clock(self, period: float = 0.02) -> None:
        """From the anchor on, keep the timeline level with the wall clock (silence when no mic audio comes)."""
        await self.anchored.wait()
        while not self.closed:
            self.pad(time.monotonic())
            await asyncio.sleep(period)

    def _play_position(self, now: float) -> int:
        """Timeline sample (48 kHz) being sent now: the audio track's next frame, or the clock's."""
        by_clock = int(max(0.0, now - self.t0 - self.latency) * AUDIO_RATE) // AUDIO_FRAME * AUDIO_FRAME
        return max(self.audio_next * AUDIO_FRAME - self.shift48, by_clock)

    def _forget(self, now: float) -> None:
        self.playback.forget_before(self._play_position(now) - int(KEEP_PLAYED_S * AUDIO_RATE))

    def clear(self, now: float) -> None:
        """Barge-in: drop queued frames and audio (engine and playback); idle image and silence at once."""
        self.clears += 1
        self.session.clear()
        self.current, self.current_index = self.idle_image, -1
        if self.t0 is None:
            return
        with self.session.lock:
            boundary16 = self.session.ring.end  # the next clip's first sample: the timeline continues there
        boundary = boundary16 * AUDIO_RATE // SESSION_RATE
        self.playback.truncate(min(self._play_position(now), boundary))
        if self.playback.end < boundary:
            self.playback.append(np.zeros(boundary - self.playback.end, np.float32))
        while self.sources and self.sources[-1][0] >= boundary:
            self.sources.pop()
        self.pad(now, pad_after=0.0)

    def _clip_ready(self, clip: int) -> bool:
        return self.session.audio_needed(clip) <= self.session.ring.end

    def catch_up(self, now: float, step_clips: int = 1) -> None:
        """Skip clips that could only arrive stale (generation slower than real time): stay in sync.

        Called by the generation worker right before `prepare_clip` (so no clip is in flight), with the clips
        a step of this session waits for (`GenerationWorker.step_clips`).
        """
        compute = self.compute_estimate()
        session = self.session
        if compute is None or self.t0 is None or self.closed:
            return
        with session.lock:
            if session.total_frames is not None:
                return
            newest = session.next_clip
            while self._clip_ready(newest + 1):
                newest += 1
            audio_wait = session.audio_needed(0) / SESSION_RATE
            target = pacing.catch_up_clip(session.next_clip, newest, session.cfg.stream.clip_frames, self.fps,
                                          self.t0, self.latency, now, compute, audio_wait, step_clips)
            self.skipped_clips += session.skip_to(target)

    # ---- generation callbacks (from the worker, on the loop) ---------------------------------
    def on_frames(self, frames: list[VideoFrame], now: float | None = None) -> None:
        self.generated += len(frames)
        if self.t0 is None:
            return
        now = time.monotonic() if now is None else now
        # slack on the tick clock (no shift): the slack at a latency shift S is this + S
        slack = pacing.video_due(self.t0, self.base_latency, frames[0].index, self.fps) - now
        log.debug("frames %d-%d ready %.3f s before the first is due", frames[0].index, frames[-1].index,
                  slack + self.shift48 / AUDIO_RATE)
        self.slacks.append((now, slack, len(frames)))
        while self.slacks and self.slacks[0][0] < now - SLACK_WINDOW_S:
            self.slacks.popleft()
        if self.adaptive:  # steps are taken from the target, which the audio track reaches in quiet moments
            target = self.target_shift48 / AUDIO_RATE
            span = now - self.slacks[0][0]
            made = sum(n for _, _, n in self.slacks)  # frames generated in the window
            keeping_up = span < 1.0 or made >= KEEPING_UP * self.fps * span
            room = MAX_LATENCY_S
            if not keeping_up:
                # Overloaded: more latency makes no more frames, but up to what one step needs now (its audio wait
                # and the measured compute, with headroom) it lets the frames that are made arrive in time; below
                # that every frame of the session could come late and none be shown.
                clips = max(1, len(frames) // self.session.cfg.stream.clip_frames)
                wait = self.session.audio_span(0, clips)[2] / SESSION_RATE  # the audio a step this long waits for
                room = wait + OVERLOAD_HEADROOM * (self.compute_estimate() or 0.0)
                keeping_up = self.base_latency + target < room
            step = pacing.latency_step([sl + target for _, sl, _ in self.slacks], span, self.base_latency + target,
                                       self.min_latency, min(room, MAX_LATENCY_S), AUDIO_FRAME / AUDIO_RATE,
                                       keeping_up=keeping_up)
            if step:
                self.target_shift48 += round(step * AUDIO_RATE / AUDIO_FRAME) * AUDIO_FRAME
                if step < 0:  # the next shrink waits for a full window measured at the new latency
                    self.slacks.clear()

    def on_generation_error(self) -> None:
        self.clear(time.monotonic())

    # ---- output selection ----------------------------------------------------------------
    def frame_for_tick(self, k: int) -> tuple[np.ndarray, int, bool]:
        """(image [S, S, 3] uint8, generated frame index or −1 for idle, fresh?) to show at tick k: the
        newest frame due by the tick's timeline time (k/fps on the tick clock, less the latency shift)."""
        pending = self.session.pending
        target = pacing.tick_frame(k, self.fps, self.shift48 / AUDIO_RATE)
        with self.session.lock:
            indices = [f.index for f in pending]
            take = pacing.frames_to_take(indices, target)
            frame = None
            for _ in range(take):
                frame = pending.popleft()
        if frame is None:
            return self.current, self.current_index, False
        if not pacing.show_popped(frame.index, target, MAX_STALE_FRAMES):
            self.skipped += take
            return self.current, self.current_index, False
        self.skipped += take - 1
        self.current, self.current_index = frame.image, frame.index
        return self.current, self.current_index, True

    def video_sent(self, k: int, index: int, fresh: bool, now: float) -> None:
        self.video_ticks += 1
        self.tick_times.append(now)
        if fresh:
            self.fresh_ticks += 1
        elif index >= 0:
            self.repeat_ticks += 1
        if index >= 0:
            if self.first_frame_delay is None:
                self.first_frame_delay = now - self.first_audio_at if self.first_audio_at else now - self.t0
            self.video_delays.append(pacing.content_delay(now, self.t0, self.latency, index / self.fps))
        if self.stamps and self.channel is not None and self.channel.readyState == "open":
            source = pacing.source_wall_time(self.sources, index * AUDIO_RATE // self.fps, AUDIO_RATE) \
                if index >= 0 else None
            self.channel.send(json.dumps({"type": "frame", "tick": k, "pts": pacing.video_pts(k, self.fps),
                                          "frame": index, "source_time": index / self.fps if index >= 0 else None,
                                          "source_wall": source, "sent": now, "shift": self.shift48}))

    def audio_for_frame(self, m: int, now: float) -> np.ndarray:
        """Timeline samples of outgoing audio frame m (at tick m − shift): float32 [960]."""
        self.audio_next = m + 1
        self.audio_frames += 1
        first = m * AUDIO_FRAME - self.shift48
        pcm = self.playback.read(first, AUDIO_FRAME)
        if self.target_shift48 != self.shift48 and _quiet(pcm) and _quiet(self.playback.read(first - AUDIO_FRAME,
                                                                                              AUDIO_FRAME)):
            # one quiet 20 ms: grow (send silence, the timeline waits) or shrink (leave this frame out)
            grow = self.target_shift48 > self.shift48
            self.shift48 += AUDIO_FRAME if grow else -AUDIO_FRAME
            self.latency_changes += 1
            self.latency_range = (min(self.latency_range[0], self.latency), max(self.latency_range[1], self.latency))
            first = m * AUDIO_FRAME - self.shift48
            pcm = np.zeros(AUDIO_FRAME, np.float32) if grow else self.playback.read(first, AUDIO_FRAME)
        self.audio_delays.append(pacing.content_delay(now, self.t0, self.latency, first / AUDIO_RATE))
        self._forget(now)
        return pcm

    # ---- figures -------------------------------------------------------------------------
    @property
    def fps_now(self) -> float:
        t = self.tick_times
        return (len(t) - 1) / (t[-1] - t[0]) if len(t) > 1 and t[-1] > t[0] else 0.0

    @property
    def av_offset(self) -> float | None:
        """Mean video content delay − mean audio content delay over the last ~2 s (s); > 0: picture late."""
        if not self.video_delays or not self.audio_delays:
            return None
        return float(np.mean(self.video_delays) - np.mean(self.audio_delays))

    def mic_queue_depth(self) -> int | None:
        return queued_frames(self.mic_track)

    def buffered_audio_s(self, now: float) -> float:
        return 0.0 if self.t0 is None else max(0, self.timeline48 - self._play_position(now)) / AUDIO_RATE


def _quiet(pcm: np.ndarray) -> bool:
    return float(np.sqrt(np.mean(pcm * pcm))) < QUIET_RMS if pcm.size else True


def _mono(frames: list) -> np.ndarray:
    """Resampled PyAV frames (flt, mono: [1, n]) → float32 [N]."""
    if not frames:
        return np.zeros(0, np.float32)
    return np.concatenate([f.to_ndarray().reshape(-1) for f in frames]).astype(np.float32, copy=False)


async def consume_mic(track: MediaStreamTrack, media: LiveMedia) -> None:
    """Pull the peer's mic track until it ends; each frame goes straight into the timeline.

    aiortc's incoming queue is unbounded, so this never waits on anything but `track.recv()`.
    """
    to16 = av.AudioResampler(format="flt", layout="mono", rate=SESSION_RATE)
    to48 = av.AudioResampler(format="flt", layout="mono", rate=AUDIO_RATE)
    try:
        while not media.closed:
            frame = await track.recv()
            now = time.monotonic()
            try:
                media.push_mic(_mono(to16.resample(frame)), _mono(to48.resample(frame)), now)
            except Exception as err:  # a bad frame loses 20 ms, never the session
                log.warning("dropped a mic frame: %s", err)
    except MediaStreamError:
        pass


async def _sleep_until(track: MediaStreamTrack, due: float) -> None:
    """Pace a track: sleep until the monotonic time `due`; a track stopped meanwhile ends its stream."""
    wait = due - time.monotonic()
    if wait > 0:
        await asyncio.sleep(wait)
    if track.readyState != "live":
        raise MediaStreamError


def to_i420(image: np.ndarray) -> av.VideoFrame:
    """uint8 RGB [H, W, 3] → a yuv420p frame, converted by OpenCV (BT.601 limited range, as libswscale's;
    chroma by 2 × 2 average): about 0.1 ms at 256², where the encoder's own conversion from rgb24 (libswscale)
    costs about 0.6 ms a frame on its thread. Odd sizes stay rgb24 (the encoder converts them)."""
    height, width = image.shape[:2]
    if height % 2 or width % 2:
        return av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
    return av.VideoFrame.from_ndarray(cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2YUV_I420),
                                      format="yuv420p")


def video_frame_seconds(image: np.ndarray, frames: int = 12) -> float:
    """Seconds one outgoing frame of this size costs on the way out (`to_i420` + the VP8 encoder sessions use,
    `RenderedVp8Encoder`), the median over `frames` frames of a slowly moving picture: uint8 RGB [H, W, 3]. Part
    of a session's load in the server's capacity (`pacing.capacity_at_steps`); VP8 is what aiortc and browsers
    pick first."""
    encoder = RenderedVp8Encoder()
    times = []
    for k in range(frames + 1):
        t = time.perf_counter()
        frame = to_i420(np.roll(image, k % 3, axis=0))
        frame.pts, frame.time_base = pacing.video_pts(k, 25), Fraction(1, pacing.VIDEO_CLOCK)
        encoder.encode(frame, k == 0)
        if k:  # the first one is a keyframe and opens the codec
            times.append(time.perf_counter() - t)
    return float(np.median(times))


class AvatarVideoTrack(MediaStreamTrack):
    """Outgoing video: tick k (pts k·90000/fps) is sent at t0 + base_latency + k/fps; yuv420p frames (`to_i420`)."""

    kind = "video"

    def __init__(self, media: LiveMedia):
        super().__init__()
        self.media = media
        self._k = 0

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        media = self.media
        await media.anchored.wait()
        k = self._k
        self._k += 1
        await _sleep_until(self, pacing.video_due(media.t0, media.base_latency, k, media.fps))
        now = time.monotonic()
        image, index, fresh = media.frame_for_tick(k)
        frame = to_i420(image)
        frame.pts = pacing.video_pts(k, media.fps)
        frame.time_base = Fraction(1, pacing.VIDEO_CLOCK)
        media.video_sent(k, index, fresh, now)
        return frame


class DelayedAudioTrack(MediaStreamTrack):
    """Outgoing audio: the timeline delayed by exactly `latency`; 20 ms frames at 48 kHz, pts = sample count,
    sent on the tick clock (t0 + base_latency + m·20 ms).

    With `opus=True` (the negotiated codec is Opus) recv() encodes here and returns the packet: aiortc
    then only packetizes it. Encoding 20 ms of mono takes ~0.3 ms on the loop, while handing every frame
    to aiortc's thread-pool encoder costs two thread switches, each waiting for the GIL when the
    generation thread is busy: on a loaded CPU that made the sound leave up to ~40 ms late.
    """

    kind = "audio"

    def __init__(self, media: LiveMedia, opus: bool = False):
        super().__init__()
        self.media = media
        self._m = 0
        self._opus = None
        if opus:
            self._opus = av.CodecContext.create("libopus", "w")
            self._opus.sample_rate = AUDIO_RATE
            self._opus.layout = "mono"
            self._opus.format = "s16"
            self._opus.bit_rate = OPUS_BITRATE
            self._opus.time_base = Fraction(1, AUDIO_RATE)

    async def recv(self) -> av.AudioFrame | av.Packet:
        if self.readyState != "live":
            raise MediaStreamError
        media = self.media
        await media.anchored.wait()
        m = self._m
        self._m += 1
        await _sleep_until(self, pacing.audio_due(media.t0, media.base_latency, m))
        pcm = media.audio_for_frame(m, time.monotonic())
        s16 = (np.clip(pcm, -1.0, 1.0) * 32767.0).round().astype(np.int16)
        frame = av.AudioFrame.from_ndarray(s16[None, :], format="s16", layout="mono")
        frame.sample_rate = AUDIO_RATE
        frame.pts = pacing.audio_pts(m)
        frame.time_base = Fraction(1, AUDIO_RATE)
        if self._opus is None:
            return frame
        packets = self._opus.encode(frame)  # libopus: one packet per 20 ms frame, no buffering
        packet = packets[0] if packets else av.Packet(b"\xf8\xff\xfe")  # Opus DTX/silence TOC as a fallback
        packet.pts = pacing.audio_pts(m)
        packet.time_base = Fraction(1, AUDIO_RATE)
        return packet

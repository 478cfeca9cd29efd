"""One avatar as a paced audio + video stream, the part the Pipecat and LiveKit adapters share.

    stream = AvatarStream(runners, avatar, audio_rate=24000)
    await stream.start()
    stream.push(pcm, 24000)          # TTS audio, any size, any time (faster than real time is fine)
    stream.end_segment()             # end of a turn: a tick with `segment_end` follows its last sample
    stream.clear()                   # barge-in
    async for tick in stream.ticks():   # 25 per second: tick.image and tick.audio leave together
        ...

The stream owns a timeline: the audio pushed into its `Session`, speech where TTS audio came in and
silence elsewhere. Silence is written at real-time pace while nobody speaks, so the avatar idles (blinks,
breathes) between turns; TTS audio is written at the timeline's end, no earlier than "now". Timeline frame
j (audio [j/fps, (j+1)/fps)) is what the session's frame j is generated from, and tick k carries frame
j = k + shift with exactly that audio, so picture and sound leave together. The shift starts at −L, where
L = the latency in frames: the audio a clip waits for beyond its frames (look-ahead) + 1.5 × the clip's
measured compute + a margin. TTS audio that arrives at time t is heard at t + latency.

Barge-in (`clear`): `Session.clear`, queued frames and audio dropped; the next tick shows the rest portrait
(the avatar's photo) with silence, the timeline jumps to the session's clip boundary and silence is written
ahead at once, so generated idle frames follow after about one clip's compute.

Model work runs in a worker thread (`asyncio.to_thread`), one clip per call, at most `max_ahead_s` ahead of
the playout, so the event loop stays free for the transport.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass

import numpy as np

from livehead.engine.common.errors import InputError
from livehead.engine.media.audio_video import AudioResampleStream
from livehead.engine.runtime.runners import Runners
from livehead.engine.runtime.session import Avatar, Session

COMPUTE_HEADROOM = 1.5   # latency covers 1.5 × the measured clip compute (a busy CPU is slower than the probe)
LATENCY_MARGIN_S = 0.1   # scheduling jitter of the loop and the worker thread
MAX_BUFFERED_S = 120.0   # TTS audio may run at most this far ahead of the playout


@dataclass
class Tick:
    """One 1/fps slot of output: `image` [H, W, 3] uint8 RGB and `audio` int16 mono [audio_rate / fps]."""

    tick: int              # output slot number since start
    frame: int | None      # session frame shown; None: the rest portrait (start, after a barge-in)
    image: np.ndarray
    audio: np.ndarray
    speech: bool           # the audio holds pushed speech (not only silence)
    segment_end: bool      # the last sample of a segment (`end_segment`) is in this tick's audio
    due: float             # time.monotonic() at which the tick was due
    repeated: bool = False  # the frame was late: the previous image is shown again


@dataclass
class LatencyProbe:
    clip_frames: int
    lookahead_s: float  # audio a clip needs beyond its last frame's end
    compute_s: float    # one clip, warm

    def latency(self, fps: int) -> float:
        return self.clip_frames / fps + self.lookahead_s + COMPUTE_HEADROOM * self.compute_s + LATENCY_MARGIN_S


def probe_latency(runners: Runners, avatar: Avatar, clips: int = 3) -> LatencyProbe:
    """Measure on a throwaway session fed the bundled speech (a talking clip costs more than a silent one: the
    motion tier's mouth layer and refiner run): the look-ahead a clip waits for and a warm clip's compute."""
    from livehead.engine.media.bundled import looped_speech, speech_samples

    session = Session(runners, avatar)
    cfg = runners.cfg
    sr, fps, step = cfg.audio.sample_rate, cfg.stream.fps, cfg.audio.sample_rate // 100
    start = speech_samples(sr) // 3  # inside the speech, not its leading silence
    pushed, lookahead, compute, frames = 0, 0.0, [], 0
    for _ in range(clips):
        while not session.clip_ready():
            session.push_audio(looped_speech(sr, start + pushed, step), sr)
            pushed += step
        t = time.perf_counter()
        made = session.run_clip()
        compute.append(time.perf_counter() - t)
        frames += len(made)
        lookahead = pushed / sr - frames / fps
    return LatencyProbe(cfg.stream.clip_frames, max(lookahead, 0.0), min(compute[1:] or compute))


def pcm_to_float(pcm: np.ndarray | bytes, channels: int = 1) -> np.ndarray:
    """int16 or float samples (bytes are int16 little-endian), interleaved `channels` → float32 mono."""
    if isinstance(pcm, (bytes, bytearray, memoryview)):
        if len(pcm) % (2 * channels):
            raise InputError(f"16-bit audio bytes must come in whole frames of {channels} channel(s), got {len(pcm)}")
        pcm = np.frombuffer(pcm, dtype="<i2")
    pcm = np.asarray(pcm)
    if pcm.dtype == np.int16:
        pcm = pcm.astype(np.float32) / 32768.0
    elif np.issubdtype(pcm.dtype, np.floating):
        pcm = pcm.astype(np.float32)
    else:
        raise InputError(f"audio must be int16 or float samples, got {pcm.dtype}")
    if pcm.ndim != 1:
        raise InputError(f"audio must be interleaved samples [n * channels], got shape {pcm.shape}")
    if channels < 1 or pcm.size % channels:
        raise InputError(f"{pcm.size} samples do not split into {channels} channel(s)")
    if not np.isfinite(pcm).all():
        raise InputError("audio contains NaN or infinite samples")
    return pcm.reshape(-1, channels).mean(axis=1) if channels > 1 else pcm


class AvatarStream:
    """A `Session` behind a real-time clock: pushed audio in, ticks of (image, audio) out at the session's fps."""

    def __init__(self, runners: Runners, avatar: Avatar, *, audio_rate: int = 24_000, latency: float | None = None,
                 seed: int = 0, max_ahead_s: float = 2.0):
        cfg = runners.cfg
        self.fps = cfg.stream.fps
        if not isinstance(audio_rate, int) or audio_rate <= 0 or audio_rate % self.fps:
            raise InputError(f"audio_rate must be a positive multiple of {self.fps} Hz (e.g. 16000, 24000, 48000), "
                             f"got {audio_rate}")
        if latency is not None and not 0.0 < latency <= 10.0:
            raise InputError(f"latency must be between 0 and 10 s, got {latency}")
        self.audio_rate = audio_rate
        self.chunk = audio_rate // self.fps
        self.clip_frames = cfg.stream.clip_frames
        self.probe = probe_latency(runners, avatar) if latency is None else None
        self.latency = latency if latency is not None else self.probe.latency(self.fps)
        self.lead = math.ceil(self.latency * self.fps)  # L: frames between writing audio and showing its frame
        compute = self.probe.compute_s if self.probe else self.latency / 2
        # a clip started at tick p shows from tick p + restart on: its compute (with headroom) and one tick
        self.restart = min(self.lead, math.ceil(COMPUTE_HEADROOM * compute * self.fps) + 1)
        self.max_ahead = max(int(max_ahead_s * self.fps), self.lead + self.clip_frames)
        self.session = Session(runners, avatar, seed=seed)
        self.rest = np.ascontiguousarray(avatar.image)
        self._resamplers: dict[int, AudioResampleStream] = {}
        self._audio = np.zeros(0, np.float32)  # timeline samples [self._audio_from, self._written)
        self._audio_from = 0
        self._written = 0
        self._speech: list[list[int]] = []     # [start, end) timeline samples of pushed speech
        self._ends: list[int] = []              # timeline samples where a segment ends
        self._frames: dict[int, np.ndarray] = {}
        self._shift = -self.lead
        self._tick = 0
        self._t0: float | None = None
        self._epoch = 0
        self._last = self.rest
        self._wake = asyncio.Event()
        self._worker: asyncio.Task | None = None
        self._closed = False
        self.generated = 0
        self.late = 0
        self.skipped = 0
        self.cleared = 0

    # ---- clock ---------------------------------------------------------------------------
    def _head(self, now: float) -> int:
        """Timeline sample being written "now": the frame playing now + the latency."""
        assert self._t0 is not None
        return int(((now - self._t0) * self.fps + self._shift + self.lead) * self.chunk)

    def _write(self, pcm: np.ndarray) -> None:
        if pcm.size:
            self._audio = np.concatenate([self._audio, pcm])
            self._written += pcm.size
            self.session.push_audio(pcm, self.audio_rate)
            self._wake.set()

    def _pad_to_head(self, now: float) -> None:
        gap = self._head(now) - self._written
        if gap > 0:
            self._write(np.zeros(gap, np.float32))

    # ---- input ---------------------------------------------------------------------------
    async def start(self) -> None:
        """Start the clock and the generation worker (idempotent)."""
        if self._t0 is None:
            self._t0 = time.monotonic()
            self._worker = asyncio.get_running_loop().create_task(self._generate_loop())

    def push(self, pcm: np.ndarray | bytes, sample_rate: int, channels: int = 1) -> None:
        """Speech to say: int16 / float samples (interleaved if channels > 1) or int16 bytes, at any rate."""
        if self._closed:
            raise InputError("this avatar stream is closed")
        if not isinstance(sample_rate, (int, np.integer)) or not 4000 <= sample_rate <= 384_000:
            raise InputError(f"sample rate must be an integer between 4000 and 384000 Hz, got {sample_rate}")
        pcm = np.clip(pcm_to_float(pcm, channels), -1.0, 1.0)
        if sample_rate != self.audio_rate:
            stream = self._resamplers.setdefault(int(sample_rate), AudioResampleStream(int(sample_rate),
                                                                                        to_rate=self.audio_rate))
            pcm = stream.push(pcm)
        if self._t0 is not None:
            self._pad_to_head(time.monotonic())
            ahead = (self._written - (self._tick + self._shift) * self.chunk) / self.audio_rate
            if ahead > MAX_BUFFERED_S:
                raise InputError(f"more than {MAX_BUFFERED_S:.0f} s of audio is queued; push at most real time")
        start = self._written
        self._write(pcm.astype(np.float32))
        if self._speech and self._speech[-1][1] == start:
            self._speech[-1][1] = self._written
        elif pcm.size:
            self._speech.append([start, self._written])

    def end_segment(self) -> None:
        """The current turn's audio is complete: the tick that plays its last sample carries `segment_end`."""
        for stream in self._resamplers.values():
            self._write(stream.flush())
        self._resamplers.clear()
        if self._speech and (not self._ends or self._ends[-1] < self._speech[-1][1]):
            self._ends.append(self._speech[-1][1])

    def clear(self) -> bool:
        """Barge-in: drop queued speech and frames; the next tick shows the rest portrait and silence.

        Returns True when speech was still queued or playing (it was cut)."""
        playing = (self._tick + self._shift) * self.chunk
        cut = any(b > playing for _, b in self._speech)
        self.session.clear()
        with self.session.lock:
            boundary = self.session.next_clip * self.clip_frames  # the session's timeline continues here
        self._epoch += 1
        self.cleared += 1
        self._frames.clear()
        self._speech.clear()
        self._ends.clear()
        self._resamplers.clear()
        self._audio = np.zeros(0, np.float32)
        self._audio_from = self._written = boundary * self.chunk
        # tick `self._tick + restart` shows frame `boundary`; everything before it is rest + silence
        self._shift = boundary - (self._tick + self.restart)
        self._last = self.rest
        if self._t0 is not None:
            self._pad_to_head(time.monotonic())
        return cut

    # ---- generation ----------------------------------------------------------------------
    def _run_one_clip(self, playing: int) -> list:
        """One clip in the worker thread; clips that would come entirely late are skipped (the picture holds)."""
        ready_at = playing + self.restart  # the first frame a clip started now can still show
        if (self.session.next_clip + 1) * self.clip_frames <= ready_at:
            self.skipped += self.session.skip_to(ready_at // self.clip_frames)
        frames = []
        for frame in self.session.frames():
            frames.append(frame)
            if len(frames) >= self.clip_frames:
                break
        return frames

    async def _generate_loop(self) -> None:
        while not self._closed:
            playing = self._tick + self._shift
            if self._frames and max(self._frames) >= playing + self.max_ahead:
                await self._sleep_or_wake(1 / self.fps)
                continue
            epoch = self._epoch
            frames = await asyncio.to_thread(self._run_one_clip, playing)
            if not frames:
                await self._sleep_or_wake(1 / self.fps)
                continue
            if epoch != self._epoch:
                continue  # generated before a barge-in
            playing = self._tick + self._shift
            for frame in frames:
                if frame.index >= playing:
                    self._frames[frame.index] = frame.image
                else:
                    self.late += 1
                self.generated += 1

    async def _sleep_or_wake(self, seconds: float) -> None:
        self._wake.clear()
        try:
            await asyncio.wait_for(self._wake.wait(), seconds)
        except TimeoutError:
            pass

    # ---- output --------------------------------------------------------------------------
    def _audio_for(self, j: int) -> np.ndarray:
        a, b = j * self.chunk, (j + 1) * self.chunk
        out = np.zeros(self.chunk, np.float32)
        lo, hi = max(a, self._audio_from), min(b, self._written)
        if hi > lo:
            out[lo - a:hi - a] = self._audio[lo - self._audio_from:hi - self._audio_from]
        keep = max(b - self._audio_from, 0)
        if keep:
            self._audio = self._audio[keep:]
            self._audio_from += keep
        return out

    def _next_tick(self, due: float) -> Tick:
        self._pad_to_head(time.monotonic())
        j = self._tick + self._shift
        for stale in [i for i in self._frames if i < j]:
            del self._frames[stale]
        image = self._frames.pop(j, None)
        repeated = image is None and j >= 0 and self._last is not self.rest
        if image is not None:
            self._last = image
        a, b = j * self.chunk, (j + 1) * self.chunk
        speech = any(s < b and e > a for s, e in self._speech)
        self._speech = [se for se in self._speech if se[1] > b]
        segment_end = bool(self._ends) and self._ends[0] <= b
        self._ends = [e for e in self._ends if e > b]
        pcm = (np.clip(self._audio_for(j), -1.0, 1.0) * 32767).round().astype(np.int16)
        tick = Tick(self._tick, j if image is not None else None, self._last, pcm, speech, segment_end, due,
                    repeated)
        self._tick += 1
        return tick

    async def ticks(self):
        """Ticks at the session's fps, each due at start + k/fps; a late consumer gets them back to back."""
        await self.start()
        while not self._closed:
            due = self._t0 + self._tick / self.fps
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if self._closed:
                return
            yield self._next_tick(due)

    async def aclose(self) -> None:
        self._closed = True
        self._wake.set()
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)

"""LiveKit Agents avatar: a `VideoGenerator` backed by a livehead `Session`, and an avatar worker (extra `livekit`).

    gen = LiveheadVideoGenerator(runners, avatar)
    runner = AvatarRunner(room, audio_recv=DataStreamAudioReceiver(room), video_gen=gen, options=gen.options)
    await runner.start()

The generator takes the agent's speech (`push_audio`: `rtc.AudioFrame`s, then `AudioSegmentEnd` at the end of a
turn) and yields, 25 times a second, an RGBA `rtc.VideoFrame` followed by the `rtc.AudioFrame` of the same
40 ms (speech delayed by the stream's latency, silence between turns while the avatar idles), and an
`AudioSegmentEnd` after a turn's last audio has been yielded. `clear_buffer` (barge-in) drops queued speech
and frames; the next frame is the rest portrait.

`run_worker` (`livehead livekit-worker`) registers an avatar worker with a LiveKit server: each job joins its
room, receives the agent's audio over LiveKit data streams and publishes the avatar's video and audio.
Its load is active sessions / its capacity (measured at start as `livehead serve` measures its admission capacity,
or `--max-sessions`); LiveKit dispatches new jobs to workers below `load_threshold`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import numpy as np

from livehead.engine.common.errors import InputError
from livehead.engine.runtime.runners import Runners
from livehead.engine.runtime.session import Avatar
from livehead.server.agents.stream import AvatarStream

try:
    from livekit import rtc
    from livekit.agents.voice.avatar import AudioSegmentEnd, AvatarOptions, VideoGenerator
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError("the LiveKit adapter needs livekit-agents: pip install 'livehead[livekit]'") from err

log = logging.getLogger("livehead.livekit")


class LiveheadVideoGenerator(VideoGenerator):
    """livekit-agents' avatar `VideoGenerator` contract over an `AvatarStream` (see the module docstring)."""

    def __init__(self, runners: Runners, avatar: Avatar, *, audio_rate: int = 48_000, latency: float | None = None,
                 seed: int = 0):
        self.stream = AvatarStream(runners, avatar, audio_rate=audio_rate, latency=latency, seed=seed)
        height, width = self.stream.rest.shape[:2]
        self.options = AvatarOptions(video_width=width, video_height=height, video_fps=float(self.stream.fps),
                                     audio_sample_rate=audio_rate, audio_channels=1)

    async def push_audio(self, frame: rtc.AudioFrame | AudioSegmentEnd) -> None:
        if isinstance(frame, AudioSegmentEnd):
            self.stream.end_segment()
            return
        if not isinstance(frame, rtc.AudioFrame):
            raise InputError(f"push_audio takes rtc.AudioFrame or AudioSegmentEnd, got {type(frame).__name__}")
        pcm = np.frombuffer(frame.data, dtype=np.int16)
        self.stream.push(pcm, frame.sample_rate, frame.num_channels)

    def clear_buffer(self) -> None:
        self.stream.clear()

    def __aiter__(self) -> AsyncIterator[rtc.VideoFrame | rtc.AudioFrame | AudioSegmentEnd]:
        return self._frames()

    async def _frames(self) -> AsyncIterator[rtc.VideoFrame | rtc.AudioFrame | AudioSegmentEnd]:
        width, height = self.options.video_width, self.options.video_height
        alpha = np.full((height, width, 1), 255, np.uint8)
        async for tick in self.stream.ticks():
            rgba = np.concatenate([tick.image, alpha], axis=2)
            yield rtc.VideoFrame(width, height, rtc.VideoBufferType.RGBA, rgba.tobytes())
            yield rtc.AudioFrame(tick.audio.tobytes(), self.stream.audio_rate, 1, tick.audio.size)
            if tick.segment_end:
                yield AudioSegmentEnd()

    async def aclose(self) -> None:
        await self.stream.aclose()


class WorkerLoad:
    """A worker's load for LiveKit's dispatch: active sessions / capacity (1.0 = full)."""

    def __init__(self, capacity: int):
        if capacity < 1:
            raise InputError(f"--max-sessions must be at least 1, got {capacity}")
        self.capacity = capacity
        self.active = 0

    def __call__(self, *_args) -> float:
        return min(self.active / self.capacity, 1.0)


def worker_capacity(runners, avatar, max_sessions: int = 16, batch: int = 4) -> int:
    """The sessions this machine keeps at real time, measured as `livehead serve` measures its admission
    capacity (`pacing.measured_capacity`): one chunk alone and a batch of `batch` chunks, on the bundled speech."""
    from livehead.engine.eval.bench import chunk_seconds
    from livehead.server.webrtc.pacing import MODEL_SHARE, measured_capacity

    s = runners.cfg.stream
    alone = float(np.median(chunk_seconds(runners, avatar, 1, 5)[1:]))
    batched = float(np.median(chunk_seconds(runners, avatar, batch, 3)))
    return measured_capacity(alone, batched, batch, s.clip_frames, s.fps, MODEL_SHARE, max_sessions)[1]


def run_worker(url: str, api_key: str, api_secret: str, *, preset: str = "motion", image=None,
               max_sessions: int | None = None, agent_name: str = "livehead-avatar",
               threads: int | None = None) -> None:
    """Register an avatar worker with the LiveKit server at `url` and serve jobs until interrupted."""
    import torch
    from livekit.agents import JobContext, JobExecutorType, Worker, WorkerOptions, WorkerType
    from livekit.agents.voice.avatar import AvatarRunner, DataStreamAudioReceiver

    from livehead import ModelConfig, bundled_demo, load_model, portrait_for, prepare_avatar, torch_runners

    if not url.startswith(("ws://", "wss://", "http://", "https://")):
        raise InputError(f"--url must be the LiveKit server's ws(s):// or http(s):// address, got {url!r}")
    if not api_key or not api_secret:
        raise InputError("--api-key and --api-secret are required (or LIVEKIT_API_KEY / LIVEKIT_API_SECRET)")
    if max_sessions is not None and max_sessions < 1:
        raise InputError(f"--max-sessions must be at least 1, got {max_sessions}")
    if threads:
        torch.set_num_threads(threads)
    cfg = ModelConfig.from_name(preset)
    runners = torch_runners(load_model(cfg))
    picture = portrait_for(cfg, image) if image is not None else bundled_demo(cfg)[0]
    avatar = prepare_avatar(runners, picture.image, picture.mask)
    load = WorkerLoad(max_sessions or worker_capacity(runners, avatar))
    log.info("livehead worker: capacity %d sessions of %s at %d px", load.capacity, cfg.name, cfg.stream.image_size)

    async def entrypoint(ctx: JobContext) -> None:
        await ctx.connect()
        load.active += 1  # counted from the start, so dispatch sees a job that is still being set up
        try:
            generator = await asyncio.to_thread(LiveheadVideoGenerator, runners, avatar)
            runner = AvatarRunner(ctx.room, audio_recv=DataStreamAudioReceiver(ctx.room), video_gen=generator,
                                  options=generator.options)
        except BaseException:
            load.active -= 1  # a job that never started holds no slot
            raise

        async def shutdown(*_args) -> None:
            try:
                await runner.aclose()
                await generator.aclose()
            finally:
                load.active -= 1

        ctx.add_shutdown_callback(shutdown)
        await runner.start()
        log.info("avatar joined room %s (latency %.2f s)", ctx.room.name, generator.stream.latency)

    options = WorkerOptions(entrypoint_fnc=entrypoint, worker_type=WorkerType.ROOM, agent_name=agent_name,
                            ws_url=url, api_key=api_key, api_secret=api_secret, load_fnc=load,
                            load_threshold=0.999, job_executor_type=JobExecutorType.THREAD)
    # jobs run as threads of this process, so every session shares the one loaded model
    asyncio.run(_run(Worker(options, devmode=False)))


async def _run(worker) -> None:
    try:
        await worker.run()
    finally:
        await worker.aclose()

"""A Pipecat frame processor that gives a pipeline's TTS voice a livehead face (extra `pipecat`).

    from livehead.server.agents.pipecat import LiveheadVideoService
    face = LiveheadVideoService(runners, avatar)               # or LiveheadVideoService.from_photo(...)
    pipeline = Pipeline([transport.input(), stt, llm, tts, face, transport.output()])

Place it right after the TTS service. It takes the `TTSAudioRawFrame`s (it does not pass them on) and, 25 times
a second, pushes an `OutputImageRawFrame` and the `OutputAudioRawFrame` of the same 40 ms of timeline: the
speech delayed by the stream's latency so the lips and the sound leave together, silence between turns
(the avatar keeps idling). `StartInterruptionFrame` (barge-in) clears the session and the queued speech;
the next tick shows the rest portrait. Every other frame passes through unchanged. Works with any transport
whose output takes image and audio frames (enable its camera and audio out at the avatar's size).
"""

from __future__ import annotations

from livehead.engine.common.errors import InputError
from livehead.engine.runtime.runners import Runners
from livehead.engine.runtime.session import Avatar
from livehead.server.agents.stream import AvatarStream, Tick

try:
    from pipecat.frames.frames import (
        CancelFrame,
        EndFrame,
        Frame,
        OutputAudioRawFrame,
        OutputImageRawFrame,
        StartFrame,
        StartInterruptionFrame,
        TTSAudioRawFrame,
    )
    from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError("the Pipecat adapter needs pipecat-ai: pip install 'livehead[pipecat]'") from err

NS = 1_000_000_000


class LiveheadImageFrame(OutputImageRawFrame):
    """An avatar frame: `tick` (output slot), `frame` (session frame index, None for the rest portrait)."""

    def __init__(self, tick: Tick):
        height, width = tick.image.shape[:2]
        super().__init__(image=tick.image.tobytes(), size=(width, height), format="RGB")
        self.tick = tick.tick
        self.frame = tick.frame
        self.speech = tick.speech


class LiveheadAudioFrame(OutputAudioRawFrame):
    """The 1/fps of audio that leaves with the image frame of the same `tick`."""

    def __init__(self, tick: Tick, sample_rate: int):
        super().__init__(audio=tick.audio.tobytes(), sample_rate=sample_rate, num_channels=1)
        self.tick = tick.tick
        self.speech = tick.speech


class LiveheadVideoService(FrameProcessor):
    """TTS audio frames in → synchronized avatar video + delayed audio frames out (see the module docstring)."""

    def __init__(self, runners: Runners, avatar: Avatar, *, audio_rate: int = 24_000, latency: float | None = None,
                 seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.stream = AvatarStream(runners, avatar, audio_rate=audio_rate, latency=latency, seed=seed)
        self._task = None

    @classmethod
    def from_photo(cls, image, preset: str = "motion", **kwargs) -> LiveheadVideoService:
        """A photo (uint8 RGB array) and a preset name → a service with the preset's shipped weights."""
        from livehead import ModelConfig, load_model, portrait_for, prepare_avatar, torch_runners

        cfg = ModelConfig.from_name(preset)
        runners = torch_runners(load_model(cfg))
        picture = portrait_for(cfg, image)
        return cls(runners, prepare_avatar(runners, picture.image, picture.mask), **kwargs)

    @property
    def latency(self) -> float:
        """Seconds between TTS audio arriving and its sound + picture leaving."""
        return self.stream.latency

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, TTSAudioRawFrame):
            try:
                self.stream.push(frame.audio, frame.sample_rate, frame.num_channels)
            except InputError as err:
                await self.push_error_message(str(err))
            return
        if isinstance(frame, StartFrame):
            await self.push_frame(frame, direction)
            await self._start()
            return
        if isinstance(frame, StartInterruptionFrame):
            self.stream.clear()
        elif isinstance(frame, (EndFrame, CancelFrame)):
            await self._stop()
        await self.push_frame(frame, direction)

    async def push_error_message(self, message: str) -> None:
        from pipecat.frames.frames import ErrorFrame

        await self.push_error(ErrorFrame(error=f"livehead: {message}"))

    async def _start(self) -> None:
        if self._task is None:
            await self.stream.start()
            self._task = self.get_event_loop().create_task(self._emit())

    async def _stop(self) -> None:
        await self.stream.aclose()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except BaseException:
                pass
            self._task = None

    async def _emit(self) -> None:
        rate = self.stream.audio_rate
        async for tick in self.stream.ticks():
            image = LiveheadImageFrame(tick)
            audio = LiveheadAudioFrame(tick, rate)
            image.pts = audio.pts = tick.tick * NS // self.stream.fps
            await self.push_frame(image)
            await self.push_frame(audio)

    async def cleanup(self):
        await self._stop()
        await super().cleanup()

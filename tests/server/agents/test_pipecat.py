"""The Pipecat service in a real Pipecat pipeline: TTS audio frames in → 25 fps avatar video + aligned audio out."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

pytest.importorskip("pipecat")

from pipecat.frames.frames import (
    EndFrame,
    StartInterruptionFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.runner import PipelineRunner
from pipecat.pipeline.task import PipelineParams, PipelineTask
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from livehead.engine.runtime.session import Session
from livehead.server.agents.pipecat import LiveheadAudioFrame, LiveheadImageFrame, LiveheadVideoService
from tests.server.agents.conftest import content_lag, resample

RATE = 24_000
FPS = 25


class Recorder(FrameProcessor):
    """The transport's place: records every frame with its arrival time."""

    def __init__(self):
        super().__init__()
        self.frames: list[tuple[float, object]] = []

    async def process_frame(self, frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        self.frames.append((time.monotonic(), frame))
        await self.push_frame(frame, direction)

    def of(self, kind):
        return [(t, f) for t, f in self.frames if isinstance(f, kind)]


def tts_frames(pcm24: np.ndarray, chunk: int = 480) -> list:
    s16 = (np.clip(pcm24, -1, 1) * 32767).astype(np.int16)
    return [TTSStartedFrame()] + [TTSAudioRawFrame(audio=s16[i:i + chunk].tobytes(), sample_rate=RATE,
                                                   num_channels=1) for i in range(0, s16.size, chunk)] + [
        TTSStoppedFrame()]


async def run_pipeline(make_service, script):
    """Processors need the running loop: build the service inside it, run `script(task, recorder, service)`."""
    service = make_service()
    recorder = Recorder()
    task = PipelineTask(Pipeline([service, recorder]), PipelineParams(allow_interruptions=True))
    runner = asyncio.create_task(PipelineRunner(handle_sigint=False).run(task))
    try:
        await script(task, recorder, service)
        await task.queue_frame(EndFrame())
        await asyncio.wait_for(runner, 10)
    finally:
        if not runner.done():
            await task.cancel()
    return recorder, service


def test_pipeline_video_at_25fps_aligned_with_the_delayed_speech(avatar_model):
    runners, avatar, pcm16k = avatar_model
    speech = resample(pcm16k[: 16000 * 3], 16000, RATE)
    sent: list[float] = []

    async def script(task, recorder, service):
        await asyncio.sleep(1.0)  # idle first
        sent.append(time.monotonic())
        await task.queue_frames(tts_frames(speech))  # a TTS burst, faster than real time
        await asyncio.sleep(speech.size / RATE + service.latency + 1.5)

    rec, service = asyncio.run(run_pipeline(lambda: LiveheadVideoService(runners, avatar, audio_rate=RATE), script))
    images, audio = rec.of(LiveheadImageFrame), rec.of(LiveheadAudioFrame)
    assert len(images) == len(audio) > 100
    # 25 fps: every tick after the start-up, at the tick's pace
    t = np.array([a for a, _ in images])
    steady = t[t > t[0] + 0.5]
    fps = (steady.size - 1) / (steady[-1] - steady[0])
    assert 24.0 <= fps <= 26.0, fps
    generated = [f for _, f in images[service.stream.lead + 5:] if f.frame is not None]
    share = len(generated) / len(images[service.stream.lead + 5:])
    assert share >= 0.8, f"only {share:.0%} of the ticks showed a newly generated frame"
    # picture and sound of the same tick leave together
    audio_at = {f.tick: a for a, f in audio}
    offsets = np.array([audio_at[f.tick] - a for a, f in images if f.tick in audio_at])
    assert np.abs(offsets).max() <= 0.040, np.abs(offsets).max()
    # the sound is the TTS speech, delayed by the stream's latency
    out = np.concatenate([np.frombuffer(f.audio, np.int16) for _, f in audio]).astype(np.float32) / 32768
    lag, peak = content_lag(speech, out)
    assert peak > 0.95, peak
    chunk = RATE // FPS
    onset_tick = lag // chunk
    onset_time = audio_at[onset_tick] + (lag % chunk) / RATE
    delay = onset_time - sent[0]
    assert abs(delay - service.latency) <= 0.1, (delay, service.latency)
    # each shown frame is the one the session makes from the audio that leaves with it: regenerate the
    # timeline (what the ticks carried, from frame 0) in one piece and compare the pictures
    first = service.stream.lead  # tick of timeline frame 0 (no barge-in in this run)
    timeline = out[first * chunk:]
    ref = Session(runners, avatar)
    ref.push_audio(timeline, RATE)
    reference = {f.index: f.image for f in ref.frames()}
    shown = [(f.frame, np.frombuffer(f.image, np.uint8).reshape(f.size[1], f.size[0], 3))
             for _, f in images if f.frame is not None and f.frame in reference]
    assert len(shown) > 60
    for index, image in shown:
        assert index == next(f.tick for _, f in images if f.frame == index) - first
        diff = np.abs(image.astype(np.int16) - reference[index].astype(np.int16)).mean()
        assert diff < 1.0, (index, diff)
    print(f"\npipecat: {fps:.2f} fps, {share:.0%} generated, A/V |offset| max {np.abs(offsets).max() * 1000:.1f} ms,"
          f" speech delay {delay:.3f} s (latency {service.latency:.3f} s)")


def test_pipeline_interruption_clears_within_100ms(avatar_model):
    runners, avatar, pcm16k = avatar_model
    speech = resample(pcm16k[: 16000 * 4], 16000, RATE)
    marks: dict[str, float] = {}

    async def script(task, recorder, service):
        await asyncio.sleep(0.3)
        await task.queue_frames(tts_frames(speech))
        for _ in range(300):  # until the speech is heard
            await asyncio.sleep(0.02)
            if any(f.speech for _, f in recorder.of(LiveheadAudioFrame)):
                break
        await asyncio.sleep(0.6)
        marks["interrupt"] = time.monotonic()
        await task.queue_frame(StartInterruptionFrame())
        await asyncio.sleep(1.5)

    rec, _service = asyncio.run(run_pipeline(lambda: LiveheadVideoService(runners, avatar, audio_rate=RATE), script))
    t_int = marks["interrupt"]
    images = rec.of(LiveheadImageFrame)
    audio = rec.of(LiveheadAudioFrame)
    before = [f for t, f in audio if t < t_int]
    assert sum(f.speech for f in before) > 10, "the speech was playing before the barge-in"
    after_images = [(t, f) for t, f in images if t >= t_int]
    first_idle = next(t for t, f in after_images if not f.speech)
    clear_latency = first_idle - t_int
    assert clear_latency <= 0.100, clear_latency
    # nothing of the cut speech is heard after that
    late = [f for t, f in audio if t > first_idle]
    assert late and not any(f.speech for f in late)
    assert all(not np.frombuffer(f.audio, np.int16).any() for f in late)
    # the avatar keeps moving: generated idle frames follow the rest portrait
    first_generated = next(t for t, f in after_images if t > first_idle and f.frame is not None)
    assert first_generated - t_int < 1.0, first_generated - t_int
    fps = (len(after_images) - 1) / (after_images[-1][0] - after_images[0][0])
    assert 24.0 <= fps <= 26.0, fps
    print(f"\npipecat barge-in: first idle frame after {clear_latency * 1000:.1f} ms, generated idle frames after "
          f"{(first_generated - t_int) * 1000:.0f} ms, {fps:.2f} fps")

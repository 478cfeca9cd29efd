"""The LiveKit `VideoGenerator` contract with the real livekit-agents classes: frames, timing, segment ends, clear."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

pytest.importorskip("livekit.agents")

from livekit import rtc
from livekit.agents.voice.avatar import AudioSegmentEnd, QueueAudioOutput, VideoGenerator

from livehead.engine.common.errors import InputError
from livehead.server.agents.livekit import LiveheadVideoGenerator, WorkerLoad
from tests.server.agents.conftest import content_lag, resample

TTS_RATE = 24_000  # what an agent's TTS sends; the avatar publishes at 48 kHz


def agent_frames(pcm24: np.ndarray, chunk: int = 480) -> list[rtc.AudioFrame]:
    s16 = (np.clip(pcm24, -1, 1) * 32767).astype(np.int16)
    return [rtc.AudioFrame(s16[i:i + chunk].tobytes(), TTS_RATE, 1, s16[i:i + chunk].size)
            for i in range(0, s16.size, chunk)]


async def drive(generator: LiveheadVideoGenerator, speech: np.ndarray, seconds: float, clear_after: float | None):
    """The avatar runner's side: an agent's QueueAudioOutput feeding push_audio, its clear_buffer event wired to the
    generator, and one consumer of the generator's stream; returns [(arrival, item)] and marks."""
    output = QueueAudioOutput(sample_rate=TTS_RATE)
    output.on("clear_buffer", generator.clear_buffer)
    got: list[tuple[float, object]] = []
    marks: dict[str, float] = {}

    async def read_audio():
        async for frame in output:
            await generator.push_audio(frame)

    async def consume():
        async for item in generator:
            got.append((time.monotonic(), item))

    tasks = [asyncio.create_task(read_audio()), asyncio.create_task(consume())]
    await asyncio.sleep(0.5)
    marks["sent"] = time.monotonic()
    for frame in agent_frames(speech):
        await output.capture_frame(frame)
    output.flush()  # end of the turn → AudioSegmentEnd
    if clear_after is not None:
        while not any(isinstance(i, rtc.AudioFrame) and np.frombuffer(i.data, np.int16).any() for _, i in got):
            await asyncio.sleep(0.01)
        await asyncio.sleep(clear_after)
        marks["clear"] = time.monotonic()
        output.clear_buffer()
    await asyncio.sleep(seconds)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await generator.aclose()
    return got, marks


def test_generator_yields_paced_video_with_its_audio_and_the_segment_end(avatar_model):
    runners, avatar, pcm16k = avatar_model
    speech = resample(pcm16k[: 16000 * 2], 16000, TTS_RATE)

    async def main():
        generator = LiveheadVideoGenerator(runners, avatar)
        assert isinstance(generator, VideoGenerator)
        return generator, *(await drive(generator, speech, speech.size / TTS_RATE + 2.0, None))

    generator, got, marks = asyncio.run(main())
    opts = generator.options
    assert (opts.video_width, opts.video_height) == avatar.image.shape[1::-1]
    assert opts.video_fps == 25 and opts.audio_sample_rate == 48_000 and opts.audio_channels == 1
    video = [(t, i) for t, i in got if isinstance(i, rtc.VideoFrame)]
    audio = [(t, i) for t, i in got if isinstance(i, rtc.AudioFrame)]
    ends = [(t, n) for n, (t, i) in enumerate(got) if isinstance(i, AudioSegmentEnd)]
    assert all(f.width == opts.video_width and f.height == opts.video_height and f.type == rtc.VideoBufferType.RGBA
               and len(f.data) == f.width * f.height * 4 for _, f in video)
    assert all(f.sample_rate == 48_000 and f.num_channels == 1 and f.samples_per_channel == 1920 for _, f in audio)
    # every video frame is followed by its 40 ms of audio, at 25 fps
    kinds = [type(i) for _, i in got if not isinstance(i, AudioSegmentEnd)]
    assert kinds == [rtc.VideoFrame, rtc.AudioFrame] * (len(kinds) // 2)
    t = np.array([a for a, _ in video])
    fps = (t.size - 1) / (t[-1] - t[0])
    assert 24.0 <= fps <= 26.0, fps
    pairs = np.array([a - v for (v, _), (a, _) in zip(video, audio)])
    assert np.abs(pairs).max() <= 0.040
    # the speech comes out (resampled to 48 kHz), delayed by the stream's latency; one AudioSegmentEnd after it
    out = np.concatenate([np.frombuffer(f.data, np.int16) for _, f in audio]).astype(np.float32) / 32768
    lag, peak = content_lag(resample(speech, TTS_RATE, 48_000), out)
    assert peak > 0.95, peak
    onset = audio[lag // 1920][0]
    assert abs(onset - marks["sent"] - generator.stream.latency) <= 0.1
    assert len(ends) == 1
    speech_end = lag + round(speech.size * 2)  # the last sample, at 48 kHz
    end_frame = speech_end // 1920
    audio_items = [n for n, (_, i) in enumerate(got) if isinstance(i, rtc.AudioFrame)]
    assert audio_items[end_frame] < ends[0][1] < audio_items[end_frame + 1]
    print(f"\nlivekit: {fps:.2f} fps, video→audio ≤ {np.abs(pairs).max() * 1000:.1f} ms, "
          f"speech delay {onset - marks['sent']:.3f} s (latency {generator.stream.latency:.3f} s)")


def test_clear_buffer_cuts_the_speech_within_100ms(avatar_model):
    runners, avatar, pcm16k = avatar_model
    speech = resample(pcm16k[: 16000 * 4], 16000, TTS_RATE)

    async def main():
        generator = LiveheadVideoGenerator(runners, avatar)
        return await drive(generator, speech, 1.5, clear_after=0.5)

    got, marks = asyncio.run(main())
    rest = np.concatenate([avatar.image, np.full((*avatar.image.shape[:2], 1), 255, np.uint8)], axis=2).tobytes()
    after = [(t, i) for t, i in got if t >= marks["clear"]]
    first_rest = next(t for t, i in after if isinstance(i, rtc.VideoFrame) and bytes(i.data) == rest)
    assert first_rest - marks["clear"] <= 0.100, first_rest - marks["clear"]
    late_audio = [i for t, i in after if t > first_rest and isinstance(i, rtc.AudioFrame)]
    assert late_audio and not any(np.frombuffer(i.data, np.int16).any() for i in late_audio)
    assert not any(isinstance(i, AudioSegmentEnd) for _, i in after)  # the cut turn never "finished playing"
    moving = [t for t, i in after if isinstance(i, rtc.VideoFrame) and bytes(i.data) != rest and t > first_rest]
    assert moving and moving[0] - marks["clear"] < 1.0
    print(f"\nlivekit clear: rest portrait after {(first_rest - marks['clear']) * 1000:.1f} ms, "
          f"idle motion after {(moving[0] - marks['clear']) * 1000:.0f} ms")


def test_bad_input_and_load(avatar_model):
    runners, avatar, _ = avatar_model

    async def main():
        generator = LiveheadVideoGenerator(runners, avatar, latency=0.5)
        with pytest.raises(InputError, match="rtc.AudioFrame"):
            await generator.push_audio(b"\0\0")
        await generator.aclose()

    asyncio.run(main())
    with pytest.raises(InputError, match="audio_rate"):
        LiveheadVideoGenerator(runners, avatar, audio_rate=44_101, latency=0.5)
    load = WorkerLoad(2)
    assert load() == 0.0
    load.active = 1
    assert load() == 0.5
    with pytest.raises(InputError, match="max-sessions"):
        WorkerLoad(0)


def test_a_worker_measures_its_capacity_as_the_server_does(avatar_model):
    from livehead.server.agents.livekit import worker_capacity

    runners, avatar, _ = avatar_model
    capacity = worker_capacity(runners, avatar, max_sessions=8)
    assert isinstance(capacity, int) and 1 <= capacity <= 8
    assert worker_capacity(runners, avatar, max_sessions=1) == 1

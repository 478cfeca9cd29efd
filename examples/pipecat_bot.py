"""A Pipecat voice bot with a livehead face: a stub LLM/TTS that "answers" with an audio file, local output.

    pip install 'livehead[pipecat]'
    python examples/pipecat_bot.py --audio speech.wav --out bot.mp4      # default: the bundled speech

The pipeline is what a real bot runs (transport.input() → STT → LLM → TTS → face → transport.output()), with the
TTS replaced by `FileTTS`, which sends a file as TTSAudioRawFrames, and the transport output replaced by
`Mp4Writer`, which records the avatar's image and audio frames. Swap in a real TTS and a transport (local,
Daily, WebRTC) with its camera and audio output enabled at the avatar's size.
"""

from __future__ import annotations

import argparse
import asyncio

import av
import numpy as np
from pipecat.frames.frames import EndFrame, TTSAudioRawFrame, TTSStartedFrame, TTSStoppedFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.runner import PipelineRunner
from pipecat.pipeline.task import PipelineParams, PipelineTask
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from livehead import ModelConfig, bundled_demo, load_audio, load_model, prepare_avatar, torch_runners
from livehead.server.agents.pipecat import LiveheadAudioFrame, LiveheadImageFrame, LiveheadVideoService

RATE = 24_000


def file_tts(pcm24: np.ndarray) -> list:
    """The stub LLM + TTS: one turn whose speech is the file, in 20 ms TTS frames."""
    s16 = (np.clip(pcm24, -1, 1) * 32767).astype(np.int16)
    return [TTSStartedFrame(), *(TTSAudioRawFrame(audio=s16[i:i + 480].tobytes(), sample_rate=RATE, num_channels=1)
                                 for i in range(0, s16.size, 480)), TTSStoppedFrame()]


class Mp4Writer(FrameProcessor):
    """Stands in for a transport output: writes the avatar's frames and audio to an MP4."""

    def __init__(self, path: str, fps: int):
        super().__init__()
        self.out = av.open(path, "w")
        self.video = self.audio = None
        self.fps = fps

    async def process_frame(self, frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, LiveheadImageFrame):
            if self.video is None:
                self.video = self.out.add_stream("libx264", rate=self.fps)
                self.video.width, self.video.height = frame.size
                self.video.pix_fmt = "yuv420p"
                self.audio = self.out.add_stream("aac", rate=RATE, layout="mono")
            image = np.frombuffer(frame.image, np.uint8).reshape(frame.size[1], frame.size[0], 3)
            self.out.mux(self.video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        elif isinstance(frame, LiveheadAudioFrame) and self.audio is not None:
            pcm = np.frombuffer(frame.audio, np.int16)[None]
            chunk = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
            chunk.sample_rate = RATE
            self.out.mux(self.audio.encode(chunk))
        elif isinstance(frame, EndFrame):
            self.close()
        await self.push_frame(frame, direction)

    def close(self):
        if self.video is not None:
            self.out.mux(self.video.encode(None))
            self.out.mux(self.audio.encode(None))
        self.out.close()


async def main(args) -> None:
    cfg = ModelConfig.from_name("motion")
    runners = torch_runners(load_model(cfg))
    picture, pcm16k = bundled_demo(cfg)
    speech = load_audio(args.audio, RATE) if args.audio else np.interp(
        np.arange(round(pcm16k.size * 1.5)) / 1.5, np.arange(pcm16k.size), pcm16k).astype(np.float32)
    face = LiveheadVideoService(runners, prepare_avatar(runners, picture.image, picture.mask), audio_rate=RATE)
    task = PipelineTask(Pipeline([face, Mp4Writer(args.out, 25)]), PipelineParams(allow_interruptions=True))
    runner = asyncio.create_task(PipelineRunner(handle_sigint=False).run(task))
    await asyncio.sleep(1.0)                      # idle before the bot speaks
    await task.queue_frames(file_tts(speech))     # the bot's turn
    await asyncio.sleep(speech.size / RATE + face.latency + 1.0)
    await task.queue_frame(EndFrame())
    await runner
    print(f"wrote {args.out} (latency {face.latency:.2f} s)")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--audio", help="what the bot says (default: the bundled speech)")
    p.add_argument("--out", default="pipecat_bot.mp4")
    asyncio.run(main(p.parse_args()))

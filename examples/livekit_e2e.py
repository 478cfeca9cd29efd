"""End-to-end check against a running LiveKit server (none can be installed on the project's CI machines).

    pip install 'livehead[livekit]'
    livekit-server --dev &                  # or any server: LIVEKIT_URL / LIVEKIT_API_KEY / LIVEKIT_API_SECRET
    python examples/livekit_e2e.py --url ws://127.0.0.1:7880 --api-key devkey --api-secret secret

Three participants join one room: the avatar (AvatarRunner + LiveheadVideoGenerator, as a worker's job runs
it), an "agent" that sends speech to the avatar with livekit-agents' DataStreamAudioOutput, and a "user" that
subscribes to the avatar's tracks. It prints the video frames per second the user receives, the first-frame
delay after the speech was sent, and fails (exit 1) when the user gets no video or under 20 fps.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

import numpy as np
from livekit import api, rtc
from livekit.agents.voice.avatar import AvatarRunner, DataStreamAudioOutput, DataStreamAudioReceiver

from livehead import ModelConfig, bundled_demo, load_model, prepare_avatar, torch_runners
from livehead.server.agents.livekit import LiveheadVideoGenerator


def token(args, identity: str, room: str) -> str:
    grant = api.VideoGrants(room_join=True, room=room)
    return api.AccessToken(args.api_key, args.api_secret).with_identity(identity).with_grants(grant).to_jwt()


async def main(args) -> int:
    cfg = ModelConfig.from_name("motion")
    runners = torch_runners(load_model(cfg))
    picture, pcm16k = bundled_demo(cfg)
    avatar_room, agent_room, user_room = rtc.Room(), rtc.Room(), rtc.Room()
    await avatar_room.connect(args.url, token(args, "livehead-avatar", args.room))
    generator = LiveheadVideoGenerator(runners, prepare_avatar(runners, picture.image, picture.mask))
    runner = AvatarRunner(avatar_room, audio_recv=DataStreamAudioReceiver(avatar_room), video_gen=generator,
                          options=generator.options)
    await runner.start()

    arrivals: list[float] = []
    readers: list[asyncio.Task] = []

    @user_room.on("track_subscribed")
    def on_track(track, publication, participant):
        if track.kind == rtc.TrackKind.KIND_VIDEO:
            async def read():
                async for _ in rtc.VideoStream(track):
                    arrivals.append(time.monotonic())
            readers.append(asyncio.ensure_future(read()))

    await user_room.connect(args.url, token(args, "user", args.room))
    await agent_room.connect(args.url, token(args, "agent", args.room))
    output = DataStreamAudioOutput(agent_room, destination_identity="livehead-avatar", sample_rate=16_000)
    await output.start()
    await asyncio.sleep(2.0)
    sent = time.monotonic()
    s16 = (np.clip(pcm16k, -1, 1) * 32767).astype(np.int16)
    for i in range(0, s16.size, 320):
        await output.capture_frame(rtc.AudioFrame(s16[i:i + 320].tobytes(), 16_000, 1, s16[i:i + 320].size))
    output.flush()
    await asyncio.sleep(pcm16k.size / 16_000 + generator.stream.latency + 2.0)
    window = [t for t in arrivals if t >= sent]
    fps = (len(window) - 1) / (window[-1] - window[0]) if len(window) > 1 else 0.0
    print(f"user received {len(arrivals)} video frames, {fps:.1f} fps after the speech was sent; "
          f"avatar latency {generator.stream.latency:.2f} s, generated {generator.stream.generated} frames")
    await runner.aclose()
    await generator.aclose()
    for room in (agent_room, user_room, avatar_room):
        await room.disconnect()
    return 0 if fps >= 20.0 else 1


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True)
    p.add_argument("--api-key", required=True)
    p.add_argument("--api-secret", required=True)
    p.add_argument("--room", default="livehead-e2e")
    sys.exit(asyncio.run(main(p.parse_args())))

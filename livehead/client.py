"""Python client of `livehead serve`: send speech over WebRTC, receive the avatar's video and audio (extra `server`).

    import asyncio
    from livehead.client import Client, RATE, load_speech

    async def main():
        client = Client("http://127.0.0.1:8080", load_speech("hello.wav"), keep_images=True)
        await client.connect()          # POST /offer: the speech as a paced mic track + a recvonly video track
        await client.run(5.0)           # receive for 5 s
        await client.close()
        print(len(client.got.video), "frames,", len(client.got.audio), "audio packets")

    asyncio.run(main())

`Client` (the `LoopbackClient` of `livehead.server.client.client`) also takes `avatar` (an id from
`POST /avatars`), `token` (the server's `--token`), `stamps` (per-tick stamps for measurements),
`decode_video=False` (time packets only), `camera` (uint8 RGB frames [F, H, W, 3] sent as a looping camera
that drives the avatar); `client.send({"type": "clear"})` is a barge-in. The measurement helpers (`av_offset`,
`match_stamps`, `received_fps`, `signal_lag`) are the ones the tests and benchmarks use.
Reference: docs/client.md.
"""

from __future__ import annotations

import numpy as np

from livehead.server.client.client import (
    FRAME,
    RATE,
    LoopbackClient,
    PacedAudioTrack,
    PacedVideoTrack,
    Received,
    av_offset,
    content_lag,
    match_stamps,
    received_fps,
    signal_lag,
)

Client = LoopbackClient


def load_speech(path: str) -> np.ndarray:
    """An audio file → float32 mono at the client's 48 kHz, what `Client` sends as its microphone."""
    from livehead.engine.media.audio_video import load_audio

    return load_audio(path, sample_rate=RATE).astype(np.float32)


__all__ = ["FRAME", "RATE", "Client", "LoopbackClient", "PacedAudioTrack", "PacedVideoTrack", "Received", "av_offset",
           "content_lag", "load_speech", "match_stamps", "received_fps", "signal_lag"]

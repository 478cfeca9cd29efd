"""`livehead.client` is the public face of the WebRTC test client: what the tests and benchmarks import is there."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("aiortc")


def test_public_client_offers_what_the_benchmarks_and_tests_use():
    import livehead.client as client
    from livehead.server.client import client as private

    for name in ["RATE", "LoopbackClient", "av_offset", "match_stamps", "received_fps", "Received", "PacedAudioTrack"]:
        assert getattr(client, name) is getattr(private, name)
    assert client.Client is private.LoopbackClient and client.RATE == 48_000


def test_load_speech_gives_48k_mono_and_refuses_a_missing_file(tmp_path):
    import av

    from livehead.client import load_speech

    path = tmp_path / "tone.wav"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("pcm_s16le", rate=16_000, layout="mono")
        tone = (np.sin(np.arange(16_000) / 16_000 * 2 * np.pi * 440) * 10_000).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(tone[None], format="s16", layout="mono")
        frame.sample_rate = 16_000
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    pcm = load_speech(str(path))
    assert pcm.dtype == np.float32 and pcm.ndim == 1 and abs(pcm.size - 48_000) < 480
    with pytest.raises(Exception, match="missing.wav"):
        load_speech(str(tmp_path / "missing.wav"))


def test_receive_video_waits_from_the_first_packet_and_times_out_without_one():
    import asyncio
    import time

    from livehead.client import Client

    async def scenario():
        client = Client("http://127.0.0.1:9", None)
        try:
            with pytest.raises(asyncio.TimeoutError):
                await client.receive_video(0.1, timeout=0.2)  # no video at all
            client.got.video_packets[0] = time.monotonic()  # the first packet arrives now
            t = time.monotonic()
            await client.receive_video(0.3, timeout=2.0)
            waited = time.monotonic() - t
            with pytest.raises(asyncio.TimeoutError):
                await client.receive_video(5.0, timeout=0.2)  # video too short so far
        finally:
            await client.pc.close()
        return waited

    waited = asyncio.run(scenario())
    assert 0.28 <= waited < 1.0, waited

"""aiortc's private attributes livehead reads (server/webrtc/aiortc_private.py) still exist and mean the same:
these fail loudly when an aiortc release renames or changes them."""

from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("aiortc", reason="needs the 'server' extra: pip install 'livehead[server]'")

from aiortc import RTCPeerConnection
from aiortc.rtcrtpreceiver import RemoteStreamTrack

from livehead.server.webrtc.aiortc_private import (
    CODECS_ATTRIBUTE,
    QUEUE_ATTRIBUTE,
    negotiated_codec,
    queued_frames,
)


def test_the_negotiated_codec_is_read_once_the_offer_is_set():
    async def negotiate():
        offerer, answerer = RTCPeerConnection(), RTCPeerConnection()
        try:
            offerer.addTransceiver("audio", direction="sendrecv")
            offerer.addTransceiver("video", direction="sendrecv")
            await offerer.setLocalDescription(await offerer.createOffer())
            await answerer.setRemoteDescription(offerer.localDescription)
            transceivers = answerer.getTransceivers()
            assert transceivers and all(isinstance(getattr(t, CODECS_ATTRIBUTE, None), list) for t in transceivers), \
                f"aiortc's RTCRtpTransceiver no longer has a list {CODECS_ATTRIBUTE}: update aiortc_private"
            return negotiated_codec(answerer, "audio"), negotiated_codec(answerer, "video")
        finally:
            await offerer.close()
            await answerer.close()

    audio, video = asyncio.run(negotiate())
    assert audio == "audio/opus"
    assert video in ("video/vp8", "video/h264")


def test_queued_frames_counts_what_a_remote_track_has_not_read():
    async def fill():
        track = RemoteStreamTrack(kind="audio")
        queue = getattr(track, QUEUE_ATTRIBUTE, None)
        assert isinstance(queue, asyncio.Queue), \
            f"aiortc's RemoteStreamTrack no longer has an asyncio.Queue {QUEUE_ATTRIBUTE}: update aiortc_private"
        assert queued_frames(track) == 0
        await queue.put(object())
        await queue.put(object())
        return queued_frames(track)

    assert asyncio.run(fill()) == 2
    assert queued_frames(None) is None

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
    JITTER_ATTRIBUTE,
    QUEUE_ATTRIBUTE,
    negotiated_codec,
    queued_frames,
    shorten_audio_jitter_buffer,
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


def test_a_shortened_audio_jitter_buffer_releases_each_packet_on_the_next():
    from aiortc.jitterbuffer import JitterBuffer
    from aiortc.rtp import RtpPacket

    async def receiver():
        pc = RTCPeerConnection()
        try:
            pc.addTransceiver("audio", direction="recvonly")
            return pc.getReceivers()[0]
        finally:
            await pc.close()

    rx = asyncio.run(receiver())
    original = getattr(rx, JITTER_ATTRIBUTE, None)
    assert isinstance(original, JitterBuffer), \
        f"aiortc's RTCRtpReceiver no longer has a JitterBuffer {JITTER_ATTRIBUTE}: update aiortc_private"
    assert shorten_audio_jitter_buffer(rx)
    buffer = getattr(rx, JITTER_ATTRIBUTE)
    def packet(seq: int) -> RtpPacket:  # one 20 ms Opus packet per timestamp, depacketized as the receiver does
        p = RtpPacket(payload_type=111, sequence_number=seq, timestamp=960 * seq, payload=b"x")
        p._data = p.payload
        return p

    released = []
    for seq in range(5):
        _, frame = buffer.add(packet(seq))
        released.append(None if frame is None else frame.timestamp)
    assert released == [None, 0, 960, 1920, 2880]  # each packet out as soon as the next one is in
    # aiortc's own buffer would still be holding the first packet here (prefetch 4)
    held = []
    for seq in range(4):
        _, frame = original.add(packet(seq))
        held.append(frame)
    assert held == [None] * 4


def test_a_sender_encodes_with_the_encoder_it_was_given():
    from aiortc import VideoStreamTrack
    from aiortc.codecs.vpx import Vp8Encoder

    from livehead.server.webrtc.aiortc_private import ENCODER_ATTRIBUTE, use_encoder

    class CountingEncoder(Vp8Encoder):
        frames = 0

        def encode(self, frame, force_keyframe=False):
            CountingEncoder.frames += 1
            return super().encode(frame, force_keyframe)

    async def call() -> tuple[bool, bool, int]:
        viewer, sender_pc = RTCPeerConnection(), RTCPeerConnection()
        tracks: asyncio.Queue = asyncio.Queue()
        viewer.on("track", tracks.put_nowait)

        try:
            viewer.addTransceiver("video", direction="recvonly")
            await viewer.setLocalDescription(await viewer.createOffer())
            await sender_pc.setRemoteDescription(viewer.localDescription)
            sender = sender_pc.addTrack(VideoStreamTrack())
            assert hasattr(sender, ENCODER_ATTRIBUTE), \
                f"aiortc's RTCRtpSender no longer has {ENCODER_ATTRIBUTE}: update aiortc_private"
            installed = use_encoder(sender, CountingEncoder())
            await sender_pc.setLocalDescription(await sender_pc.createAnswer())
            await viewer.setRemoteDescription(sender_pc.localDescription)
            track = await asyncio.wait_for(tracks.get(), 20)
            await asyncio.wait_for(track.recv(), 20)
            again = use_encoder(sender, Vp8Encoder())  # too late: the sender has one
            return installed, again, CountingEncoder.frames
        finally:
            await viewer.close()
            await sender_pc.close()

    installed, again, frames = asyncio.run(call())
    assert installed and not again
    assert frames >= 1  # the frame the viewer received went through the given encoder

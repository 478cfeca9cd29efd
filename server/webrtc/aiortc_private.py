"""The two things livehead reads from aiortc that it has no public API for, in one place.

- `negotiated_codec`: the codec a transceiver will send, known once the remote offer is set (aiortc keeps it in
  `RTCRtpTransceiver._codecs`; the answer's SDP would say it only after `createAnswer`).
- `queued_frames`: frames waiting in a remote track's incoming queue (`RemoteStreamTrack._queue`), which tells a
  stalled event loop (frames waiting) from a silent microphone (none): the audio track pads silence only then.

tests/server/webrtc/test_aiortc_private.py fails loudly when an aiortc release renames either attribute.
"""

from __future__ import annotations

from aiortc import MediaStreamTrack, RTCPeerConnection

CODECS_ATTRIBUTE = "_codecs"  # RTCRtpTransceiver: list[RTCRtpCodecParameters], the negotiated ones first
QUEUE_ATTRIBUTE = "_queue"  # RemoteStreamTrack: asyncio.Queue of received frames


def negotiated_codec(pc: RTCPeerConnection, kind: str) -> str | None:
    """MIME type (lower case) of the codec aiortc will send on the first `kind` transceiver, or None."""
    for transceiver in pc.getTransceivers():
        codecs = getattr(transceiver, CODECS_ATTRIBUTE, None)
        if transceiver.kind == kind and codecs:
            return codecs[0].mimeType.lower()
    return None


def queued_frames(track: MediaStreamTrack | None) -> int | None:
    """Frames received on a remote track and not yet read; None for a track without such a queue."""
    queue = getattr(track, QUEUE_ATTRIBUTE, None)
    return queue.qsize() if queue is not None else None

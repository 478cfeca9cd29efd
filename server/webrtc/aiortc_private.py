"""The things livehead reads or sets in aiortc that it has no public API for, in one place.

- `negotiated_codec`: the codec a transceiver will send, known once the remote offer is set (aiortc keeps it in
  `RTCRtpTransceiver._codecs`; the answer's SDP would say it only after `createAnswer`).
- `queued_frames`: frames waiting in a remote track's incoming queue (`RemoteStreamTrack._queue`), which tells a
  stalled event loop (frames waiting) from a silent microphone (none): the audio track pads silence only then.
- `shorten_audio_jitter_buffer`: an incoming audio receiver's jitter buffer (`RTCRtpReceiver.__jitter_buffer`)
  holds 4 packets before it releases the first (80 ms of mic audio); with 1 it releases each packet when the
  next one arrives (20 ms). Lost packets are handled the same way either way (it waits on a gap until the
  buffer is full), so this cuts 60 ms of mouth-to-screen delay and nothing else.
- `use_encoder`: the encoder a sender uses (`RTCRtpSender.__encoder`); aiortc makes its own from the codec on the
  first frame unless one is set, and calls its `encode(frame, force_keyframe)` and `target_bitrate` the same way.

tests/server/webrtc/test_aiortc_private.py fails loudly when an aiortc release renames any of them.
"""

from __future__ import annotations

from aiortc import MediaStreamTrack, RTCPeerConnection, RTCRtpReceiver, RTCRtpSender
from aiortc.codecs.base import Encoder
from aiortc.jitterbuffer import JitterBuffer

CODECS_ATTRIBUTE = "_codecs"  # RTCRtpTransceiver: list[RTCRtpCodecParameters], the negotiated ones first
QUEUE_ATTRIBUTE = "_queue"  # RemoteStreamTrack: asyncio.Queue of received frames
JITTER_ATTRIBUTE = "_RTCRtpReceiver__jitter_buffer"  # RTCRtpReceiver: its JitterBuffer (name-mangled private)
ENCODER_ATTRIBUTE = "_RTCRtpSender__encoder"  # RTCRtpSender: its Encoder, None until the first frame (private)
AUDIO_JITTER_CAPACITY = 16  # packets, as aiortc's own audio buffer
AUDIO_JITTER_PREFETCH = 1  # packets held before the first is released (aiortc: 4)


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


def shorten_audio_jitter_buffer(receiver: RTCRtpReceiver) -> bool:
    """Give an audio receiver a jitter buffer that holds 1 packet instead of 4 (see the module doc); call it
    before media flows (on the peer connection's "track" event). False if the receiver has no such buffer."""
    if not isinstance(getattr(receiver, JITTER_ATTRIBUTE, None), JitterBuffer):
        return False
    setattr(receiver, JITTER_ATTRIBUTE, JitterBuffer(capacity=AUDIO_JITTER_CAPACITY, prefetch=AUDIO_JITTER_PREFETCH))
    return True


def use_encoder(sender: RTCRtpSender, encoder: Encoder) -> bool:
    """Make `sender` encode with `encoder` instead of the one aiortc would make on the first frame; call it before
    media flows. False (and nothing changed) if the sender has no such slot or has already made its encoder."""
    if not hasattr(sender, ENCODER_ATTRIBUTE) or getattr(sender, ENCODER_ATTRIBUTE) is not None:
        return False
    setattr(sender, ENCODER_ATTRIBUTE, encoder)
    return True

"""Helpers several tests share: media probing and speech with exactly known timing."""

from __future__ import annotations

import os

import av
import numpy as np

from livehead.engine.common.errors import InputError
from livehead.engine.motion.synthetic import talking_camera  # noqa: F401  (the tests' camera stand-in)
from livehead.engine.synth.speech_alignment import SAMPLE_RATE, VISEMES, AlignedSpeech, Phone


def probe_mp4(path: str | os.PathLike) -> dict:
    """Decode a media file fully and describe it.

    Returns: frames, fps, width, height, video_codec, frame_times (seconds of each decoded frame),
    audio_codec, audio_sample_rate, audio_channels, audio_seconds (the track's declared duration,
    else decoded samples / rate), audio_decoded_seconds, or None / 0 for a missing stream.
    """
    info: dict = {
        "frames": 0,
        "fps": None,
        "width": None,
        "height": None,
        "video_codec": None,
        "frame_times": [],
        "audio_codec": None,
        "audio_sample_rate": None,
        "audio_channels": None,
        "audio_seconds": 0.0,
        "audio_decoded_seconds": 0.0,
    }
    with av.open(str(path)) as container:
        if container.streams.video:
            vs = container.streams.video[0]
            rate = vs.average_rate or vs.guessed_rate
            info.update(
                fps=float(rate) if rate else None,
                width=vs.codec_context.width,
                height=vs.codec_context.height,
                video_codec=vs.codec_context.name,
            )
            for frame in container.decode(vs):
                info["frames"] += 1
                info["frame_times"].append(float(frame.time) if frame.time is not None else None)
    with av.open(str(path)) as container:  # reopened: decoding one stream to the end drains the demuxer
        if container.streams.audio:
            aus = container.streams.audio[0]
            info.update(
                audio_codec=aus.codec_context.name,
                audio_sample_rate=aus.codec_context.sample_rate,
                audio_channels=aus.codec_context.channels,
            )
            samples = 0
            for frame in container.decode(aus):
                samples += frame.samples
            decoded = samples / aus.codec_context.sample_rate
            info["audio_decoded_seconds"] = decoded
            # The container's track duration excludes the encoder's padding of the last AAC frame
            # (up to 1023 samples), which the decoder still outputs.
            declared = float(aus.duration * aus.time_base) if aus.duration and aus.time_base else None
            info["audio_seconds"] = declared if declared else decoded
    return info


def buzz_speech(phones: list[Phone], sample_rate: int = SAMPLE_RATE, pitch: float = 120.0) -> AlignedSpeech:
    """A stand-in for speech with exactly known timing (tests, no TTS needed): a harmonic buzz whose
    loudness follows each phone's viseme opening (silent in pauses, quiet on closures)."""
    if not phones:
        raise InputError("no phones to voice")
    duration = max(p.end for p in phones)
    t = np.arange(int(round(duration * sample_rate))) / sample_rate
    carrier = sum(np.sin(2 * np.pi * pitch * h * t) / h for h in range(1, 8))
    level = np.zeros_like(t)
    for p in phones:
        v = VISEMES[p.viseme]
        amp = 0.0 if p.viseme == "sil" else 0.15 + 0.85 * min(1.0, v.open / 0.2)
        level[(t >= p.start) & (t < p.end)] = amp
    k = max(1, int(0.01 * sample_rate))  # 10 ms ramps
    level = np.convolve(level, np.ones(k) / k, mode="same")
    pcm = (0.3 * level * carrier / np.abs(carrier).max()).astype(np.float32)
    return AlignedSpeech(pcm=pcm, sample_rate=sample_rate, phones=list(phones), text="")

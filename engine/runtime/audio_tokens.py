"""A whole clip's per-frame audio tokens, computed exactly as a streaming `Session` computes them.

Training and evaluation use it so that a model sees the same audio features it will get live: the rolling
Whisper window, the running log-mel maximum and the look-ahead of the session's clip schedule.

    tokens = session_audio_tokens(audio_stack, cfg, pcm)   # [N, Ta, Ca] for N = ⌈duration · fps⌉ frames
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from livehead.engine.model.audio_encoder import StreamingAudioFeatures
from livehead.engine.model.config import ModelConfig


def session_audio_tokens(audio_stack: Callable[[torch.Tensor], torch.Tensor], cfg: ModelConfig,
                         pcm: np.ndarray) -> torch.Tensor:
    """pcm float32 [T] at cfg.audio.sample_rate → tokens [N, Ta, Ca] (float32, CPU): frame i's tokens as the
    session computes them for the clip that makes frame i (its new frames, not its motion prefix)."""
    s, rate = cfg.stream, cfg.audio.sample_rate
    features = StreamingAudioFeatures(audio_stack, cfg.audio)
    total = -(-len(pcm) * s.fps // rate)
    padded = np.asarray(pcm, np.float32)  # beyond its end the stream reads as silence, as after flush()
    out = []
    for first_new in range(0, total, s.clip_frames):
        window_first = first_new - s.motion_frames  # the clip's window: its motion prefix, then its new frames
        first, count = max(window_first, 0), s.window_frames - max(-window_first, 0)
        a, b = features.required_span(first, count, s.fps)
        b_read = s.audio_needed(first + count - 1, rate, b)  # past the look-ahead the session reads silence
        window = np.zeros(b - a, np.float32)
        lo, hi = max(a, 0), min(b_read, len(padded))
        if hi > lo:
            window[lo - a:hi - a] = padded[lo:hi]
        out.append(features.tokens_for_frames(window, a, first, count, s.fps)[-s.clip_frames:].float().cpu())
    return torch.cat(out)[:total]

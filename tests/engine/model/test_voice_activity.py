"""The voice gate: the shipped probe tells silence from voice on the session's Whisper tokens, and its gate
depends on the window alone (any clip size gives the same gate), attacks at once and releases over the hold."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from livehead.engine.model.config import ModelConfig
from livehead.engine.model.voice_activity import VoiceGateConfig, load_voice_probe, voice_gate
from livehead.engine.runtime.audio_tokens import session_audio_tokens

CFG = ModelConfig.from_name("motion")
RATE = CFG.audio.sample_rate
GATE = VoiceGateConfig()


def test_silence_scales_by_one_minus_depth_and_voice_opens_at_once():
    known = CFG.stream.motion_frames
    p = torch.zeros(1, known + 12)
    p[0, known + 2] = 1.0  # one voiced frame
    scale = voice_gate(p, known, GATE)[0]
    assert scale.shape == (12,)
    assert torch.allclose(scale[:2], torch.full((2,), 1 - GATE.depth))
    expected = [1 - GATE.depth * (1 - w) for w in GATE.release]
    assert torch.allclose(scale[2:2 + len(expected)], torch.tensor(expected))  # attack at once, then release
    assert torch.allclose(scale[2 + len(expected):], torch.full((12 - 2 - len(expected),), 1 - GATE.depth))


@pytest.mark.parametrize("clip_frames", [1, 2, 3, 5])
def test_the_gate_is_the_same_for_any_clip_size(clip_frames):
    """Windows of `known` prefix frames + clip_frames new ones, as a session cuts them (frames before 0 take
    frame 0's probability): the new frames' gates, put together, are the same sequence for every clip size."""
    known = CFG.stream.motion_frames
    probs = torch.rand(60, generator=torch.Generator().manual_seed(0)) ** 3
    padded = torch.cat([probs[:1].expand(known), probs])
    whole = voice_gate(padded[None], known, GATE)[0]
    parts = [voice_gate(padded[None, first:first + known + clip_frames], known, GATE)[0]
             for first in range(0, len(probs), clip_frames)]
    torch.testing.assert_close(torch.cat(parts)[:len(probs)], whole)
    assert whole.min() < 1 - GATE.depth + 1e-6 and whole.max() == 1.0  # the sequence moves the gate both ways


def test_a_gate_that_looks_further_back_than_the_window_is_refused():
    with pytest.raises(ValueError, match="known frames"):
        voice_gate(torch.zeros(1, 8), GATE.hold - 1, GATE)


@pytest.fixture(scope="module")
def tokens_of():
    from livehead.engine.training.motion import load_audio_stack

    stack = load_audio_stack(CFG)
    return lambda pcm: session_audio_tokens(stack, CFG, np.asarray(pcm, np.float32))


def test_the_shipped_probe_hears_silence_as_silence(tokens_of):
    probe = load_voice_probe()
    assert probe is not None, "engine/assets/motion/voice_activity.safetensors is missing"
    quiet = np.random.default_rng(0).standard_normal(2 * RATE).astype(np.float32) * 1e-4  # a quiet room
    for pcm in (np.zeros(2 * RATE, np.float32), quiet):
        assert float(probe.probability(tokens_of(pcm)).max()) < GATE.floor


def test_the_shipped_probe_keeps_a_held_vowel_voiced(tokens_of):
    pytest.importorskip("piper", reason="the held vowel is spoken by Piper TTS (the 'data' extra)")
    from livehead.engine.synth.speech_alignment import synthesize_speech

    speech = synthesize_speech("Aaaaaah.", length_scale=4.0)
    probe = load_voice_probe()
    p = probe.probability(tokens_of(speech.pcm))
    vowel = [ph for ph in speech.phones if ph.viseme != "sil"]
    fps = CFG.stream.fps
    start, end = int(min(ph.start for ph in vowel) * fps) + 2, int(max(ph.end for ph in vowel) * fps) - 2
    assert end - start >= 10
    gate = voice_gate(p[None], 0 if GATE.hold == 0 else GATE.hold, GATE)  # every frame after the first `hold`
    held = gate[0, start - GATE.hold:end - GATE.hold]
    assert float((held == 1.0).float().mean()) >= 0.9, p[start:end]
    assert float(p[-5:].max()) < GATE.floor  # and the silence after it is silent

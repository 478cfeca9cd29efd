"""Audio front-end against the EchoMimic reference fixtures (whisper_* files, audio.wav), plus streaming checks."""

from __future__ import annotations

import wave
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from livehead.engine.common.errors import InputError
from livehead.engine.model.audio_encoder import (
    StreamingAudioFeatures,
    WhisperEncoder,
    encode_file_features,
    frame_audio_tokens,
    frame_token_index,
    log_mel,
    mel_filterbank,
    normalise_log_mel,
    offline_frame_count,
)
from livehead.engine.model.config import AudioConfig
from tests.conftest import fixture_path

CFG = AudioConfig()
FPS = 24  # the fixtures' pipeline fps


@pytest.fixture(scope="module")
def fixtures() -> Path:
    return fixture_path("whisper_tiny.safetensors").parent


@pytest.fixture(scope="module")
def pcm(fixtures) -> np.ndarray:
    with wave.open(str(fixtures / "audio.wav"), "rb") as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 16000)
        data = w.readframes(w.getnframes())
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0


@pytest.fixture(scope="module")
def encoder(fixtures) -> WhisperEncoder:
    from safetensors.torch import load_file

    state = load_file(str(fixtures / "whisper_tiny.safetensors"))
    state = {k.removeprefix("encoder."): v.float() for k, v in state.items()}
    enc = WhisperEncoder(CFG)
    enc.load_state_dict(state, strict=True)
    return enc.eval()


@pytest.fixture(scope="module")
def stack_from_fixture_mel(fixtures, encoder) -> torch.Tensor:
    """The encoder run once on whisper_mel.npy padded to 3000 frames: [100, 5, 384]."""
    mel = torch.from_numpy(np.load(fixtures / "whisper_mel.npy"))
    padded = torch.nn.functional.pad(mel, (0, 2 * CFG.n_ctx - mel.shape[1]))
    with torch.no_grad():
        return encoder(padded[None])[0, : mel.shape[1] // 2]


# --- offline reference ------------------------------------------------------------------------------


def test_mel_filterbank_shape_and_positivity():
    fb = mel_filterbank(16000, 400, 80)
    assert fb.shape == (80, 201) and fb.dtype == np.float64
    assert (fb >= 0).all()
    assert (fb.max(axis=1) > 0).all()  # no empty filter
    assert fb[:, -1].max() == 0.0  # the top edge is Nyquist: the last bin gets no weight
    # Slaney area normalisation: every triangle has unit area in Hz (sampled every 40 Hz, so only roughly).
    np.testing.assert_allclose(fb.sum(axis=1) * 40.0, 1.0, atol=0.1)
    assert fb[0, 1] == pytest.approx(0.02486259, rel=1e-6)  # Whisper's mel_filters.npz ["mel_80"][0, 1]


def test_log_mel_matches_fixture(fixtures, pcm):
    logmel = log_mel(pcm, CFG)
    mel = normalise_log_mel(logmel, logmel.max())
    ref = np.load(fixtures / "whisper_mel.npy")
    assert mel.shape == ref.shape == (80, 200)
    np.testing.assert_allclose(mel.numpy(), ref, atol=1e-4, rtol=0)


def test_encoder_stack_matches_fixture(fixtures, stack_from_fixture_mel):
    ref = np.load(fixtures / "whisper_stack.npy")
    assert stack_from_fixture_mel.shape == ref.shape == (100, 5, 384)
    np.testing.assert_allclose(stack_from_fixture_mel.numpy(), ref, atol=1e-4, rtol=0)


def test_encoder_state_dict_keys(fixtures, encoder):
    keys = set(encoder.state_dict())
    assert "positional_embedding" in keys and "blocks.3.attn.key.weight" in keys
    assert "blocks.0.attn.key.bias" not in keys and "ln_post.weight" in keys
    assert len(keys) == 67


def test_encoder_rejects_too_many_frames():
    small = WhisperEncoder(AudioConfig(n_ctx=4, n_state=8, n_head=2, n_layer=1))
    assert small(torch.zeros(1, 80, 8)).shape == (1, 4, 2, 8)
    with pytest.raises(InputError):
        small(torch.zeros(1, 80, 10))


def test_encode_file_features_matches_fixture(fixtures, pcm, encoder):
    stack = encode_file_features(pcm, CFG, encoder)
    ref = np.load(fixtures / "whisper_stack.npy")
    assert stack.shape == ref.shape
    np.testing.assert_allclose(stack.numpy(), ref, atol=1e-4, rtol=0)


def test_frame_token_index_matches_fixture(fixtures):
    ref = np.load(fixtures / "whisper_chunk_index.npy")
    index = frame_token_index(50, FPS, 100, CFG)
    assert index.dtype == np.int64 and index.shape == (50, 10)
    np.testing.assert_array_equal(index, ref)
    np.testing.assert_array_equal(frame_token_index(10, FPS, 100, CFG, first_frame=40), ref[40:])


def test_offline_frame_count():
    assert offline_frame_count(100, FPS) == 50


def test_chunks_match_fixture(fixtures, stack_from_fixture_mel):
    ref_chunks = np.load(fixtures / "whisper_chunks.npy")
    ref_index = np.load(fixtures / "whisper_chunk_index.npy")
    # The gather/flatten order alone is exact on the reference stack.
    exact = frame_audio_tokens(torch.from_numpy(np.load(fixtures / "whisper_stack.npy")), ref_index)
    np.testing.assert_array_equal(exact.numpy(), ref_chunks)
    ours = frame_audio_tokens(stack_from_fixture_mel, frame_token_index(50, FPS, 100, CFG))
    assert ours.shape == (50, 50, 384)
    np.testing.assert_allclose(ours.numpy(), ref_chunks, atol=1e-4, rtol=0)


# --- streaming --------------------------------------------------------------------------------------

TINY = replace(CFG, window_seconds=2.0, pad_to_ctx=False)  # the "tiny" preset's audio settings
CALLS = [(0, 8), (8, 8), (16, 8), (24, 8), (32, 8)]  # (first_frame, n_frames), all within the 2 s file at 24 fps


def _exact_span(stream: np.ndarray, start: int, end: int) -> np.ndarray:
    """The stream's samples [start, end), zeros before sample 0."""
    out = np.zeros(end - start, dtype=np.float32)
    lo = max(start, 0)
    out[lo - start :] = stream[lo:end]
    return out


def test_streaming_tokens_shape(pcm, encoder):
    stream = StreamingAudioFeatures(encoder, TINY)
    start, end = stream.required_span(0, 8, FPS)
    assert start == 0 and end == (int(7 * 50 / FPS) + 6) * 320  # the window starts at the stream start
    late_start, late_end = stream.required_span(200, 8, FPS)
    assert late_end - late_start == 32000  # later: a full 2 s rolling window
    tokens = stream.tokens_for_frames(_exact_span(pcm, start, end), start, 0, 8, FPS)
    assert tokens.shape == (8, 50, 384) and tokens.dtype == torch.float32
    assert torch.isfinite(tokens).all()


def test_streaming_independent_of_audio_delivery(pcm, encoder):
    """Exact spans, the whole file, or a live buffer fed in random chunk sizes: identical tokens."""
    exact = StreamingAudioFeatures(encoder, TINY)
    whole = StreamingAudioFeatures(encoder, TINY)
    live = StreamingAudioFeatures(encoder, TINY)
    rng = np.random.default_rng(0)
    buffer = np.zeros(0, dtype=np.float32)  # live: everything received so far, from sample 0
    fed = 0
    for first, n in CALLS:
        start, end = exact.required_span(first, n, FPS)
        a = exact.tokens_for_frames(_exact_span(pcm, start, end), start, first, n, FPS)
        b = whole.tokens_for_frames(pcm, 0, first, n, FPS)
        while buffer.shape[0] < end:  # network packets of 1..2000 samples
            step = int(rng.integers(1, 2000))
            buffer = np.concatenate([buffer, pcm[fed : fed + step]])
            fed += step
        hold_from = max(start - 37, 0)  # a live caller holds a little more than the window, from anywhere before it
        c = live.tokens_for_frames(buffer[hold_from:], hold_from, first, n, FPS)
        assert torch.equal(a, b) and torch.equal(a, c)
    assert exact.running_max == whole.running_max == live.running_max


def test_streaming_same_request_same_tokens_across_call_patterns(pcm, encoder):
    """The tokens of (first_frame, n_frames) depend only on the stream and the running max, not on earlier calls."""
    a = StreamingAudioFeatures(encoder, TINY)
    first_a = a.tokens_for_frames(pcm, 0, 0, 8, FPS)
    second_a = a.tokens_for_frames(pcm, 0, 8, 8, FPS)

    b = StreamingAudioFeatures(encoder, TINY)  # other history: [0, 16) at once, then [0, 4), then [8, 16)
    b.tokens_for_frames(pcm, 0, 0, 16, FPS)
    b.tokens_for_frames(pcm, 0, 0, 4, FPS)
    assert b.running_max == a.running_max  # same windows' loudest frame: the precondition
    torch.testing.assert_close(b.tokens_for_frames(pcm, 0, 8, 8, FPS), second_a, rtol=0, atol=0)

    a.reset()
    assert a.running_max == -np.inf
    torch.testing.assert_close(a.tokens_for_frames(pcm, 0, 0, 8, FPS), first_a, rtol=0, atol=0)


class _PositionEncoder(nn.Module):
    """Stub encoder: every feature of position p equals p. Records the mel it was given."""

    def __init__(self, cfg: AudioConfig):
        super().__init__()
        self.cfg = cfg
        self.last_mel = None

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        self.last_mel = mel
        n = (mel.shape[-1] + 1) // 2
        pos = torch.arange(n, dtype=torch.float32)[None, :, None, None]
        return pos.expand(mel.shape[0], n, self.cfg.n_layer + 1, self.cfg.n_state).clone()


@pytest.mark.parametrize("pad_to_ctx", [False, True])
@pytest.mark.parametrize("first_frame,n_frames,fps", [(0, 9, 25.0), (3, 12, 24.0), (200, 9, 25.0), (301, 5, 30.0)])
def test_streaming_position_mapping(first_frame, n_frames, fps, pad_to_ctx):
    cfg = replace(CFG, window_seconds=2.0, pad_to_ctx=pad_to_ctx, n_layer=1, n_state=3)
    stub = _PositionEncoder(cfg)
    stream = StreamingAudioFeatures(stub, cfg)
    audio = np.random.default_rng(1).standard_normal(16000 * 12).astype(np.float32) * 0.1
    start, end = stream.required_span(first_frame, n_frames, fps)
    tokens = stream.tokens_for_frames(audio, 0, first_frame, n_frames, fps)
    assert tokens.shape == (n_frames, 10 * 2, 3)
    assert stub.last_mel.shape[-1] == (2 * cfg.n_ctx if pad_to_ctx else (end - start) // 160)
    if pad_to_ctx:
        assert (stub.last_mel[..., (end - start) // 160 :] == 0).all()  # padding in the normalised domain
    for i in range(n_frames):
        c = int((first_frame + i) * 50 / fps)
        expected = np.repeat(np.clip(np.arange(c - 4, c + 6), 0, None) - start // 320, 2)  # 2 layers per position
        np.testing.assert_array_equal(tokens[i, :, 0].numpy(), expected)
    assert int(tokens.max()) == (end - start) // 320 - 1  # the last frame's last look-ahead ends the window


def test_streaming_rejects_bad_requests():
    cfg = replace(CFG, window_seconds=2.0, pad_to_ctx=False, n_layer=1, n_state=3)
    stream = StreamingAudioFeatures(_PositionEncoder(cfg), cfg)
    with pytest.raises(InputError):
        stream.required_span(0, 100, 25.0)  # 4 s of frames in a 2 s window
    start, end = stream.required_span(50, 8, 25.0)
    with pytest.raises(InputError):  # audio ends before the look-ahead
        stream.tokens_for_frames(np.zeros(end - start - 1, np.float32), start, 50, 8, 25.0)
    with pytest.raises(InputError):  # audio starts after the window start
        stream.tokens_for_frames(np.zeros(end, np.float32), start + 320, 50, 8, 25.0)

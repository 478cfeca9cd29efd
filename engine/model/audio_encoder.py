"""Audio front-end: Whisper log-mel, the Whisper-tiny encoder layer stack and per-frame audio tokens.

Offline (EchoMimic's reference behaviour, `encode_file_features`):

    pcm [T] 16 kHz -> log_mel [80, T/160] -> normalise with the whole-file max -> 3000-frame chunks,
    each zero-padded to 3000 -> WhisperEncoder -> stack [T50, 5, 384] (50 Hz, input of block 0 + 4 block
    outputs, all before ln_post) -> per video frame i: positions c-4 .. c+5 with c = int(i*50/fps),
    clamped, flattened time-major -> tokens [N, 50, 384] (token = 5*position + layer).

Live (`StreamingAudioFeatures`): the same per window of `cfg.window_seconds` ending at the last needed
look-ahead position, normalised with a running max instead of the whole-file max.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from livehead.engine.common.constants import SAMPLE_RATE
from livehead.engine.common.errors import InputError
from livehead.engine.model.config import AudioConfig

# ---------------------------------------------------------------------------------------------------
# Log-mel spectrogram
# ---------------------------------------------------------------------------------------------------

_SLANEY_F_SP = 200.0 / 3.0  # Hz per mel in the linear part
_SLANEY_MIN_LOG_HZ = 1000.0
_SLANEY_MIN_LOG_MEL = _SLANEY_MIN_LOG_HZ / _SLANEY_F_SP  # 15
_SLANEY_LOGSTEP = math.log(6.4) / 27.0


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney mel scale: linear below 1 kHz, logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    linear = hz / _SLANEY_F_SP
    log = _SLANEY_MIN_LOG_MEL + np.log(np.maximum(hz, _SLANEY_MIN_LOG_HZ) / _SLANEY_MIN_LOG_HZ) / _SLANEY_LOGSTEP
    return np.where(hz >= _SLANEY_MIN_LOG_HZ, log, linear)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    linear = mel * _SLANEY_F_SP
    log = _SLANEY_MIN_LOG_HZ * np.exp(_SLANEY_LOGSTEP * (np.maximum(mel, _SLANEY_MIN_LOG_MEL) - _SLANEY_MIN_LOG_MEL))
    return np.where(mel >= _SLANEY_MIN_LOG_MEL, log, linear)


@functools.lru_cache(maxsize=8)
def mel_filterbank(sample_rate: int = SAMPLE_RATE, n_fft: int = 400, n_mels: int = 80) -> np.ndarray:
    """Triangular mel filters, float64 [n_mels, n_fft//2 + 1] (read-only, cached).

    Slaney mel scale from 0 Hz to Nyquist and Slaney area normalisation (each triangle scaled by
    2 / its width in Hz): the filters of librosa.filters.mel(sr, n_fft, n_mels), i.e. Whisper's
    mel_filters.npz for (16000, 400, 80).
    """
    fft_hz = np.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1)
    edges_hz = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(sample_rate / 2.0), n_mels + 2))
    widths = np.diff(edges_hz)  # [n_mels + 1]
    offsets = edges_hz[:, None] - fft_hz[None, :]  # [n_mels + 2, n_freq]
    rising = -offsets[:-2] / widths[:-1, None]
    falling = offsets[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling)) + 0.0  # + 0.0: no negative zeros
    weights *= (2.0 / (edges_hz[2:] - edges_hz[:-2]))[:, None]
    weights.setflags(write=False)
    return weights


@functools.lru_cache(maxsize=8)
def _mel_filterbank_f32(sample_rate: int, n_fft: int, n_mels: int) -> torch.Tensor:
    return torch.from_numpy(mel_filterbank(sample_rate, n_fft, n_mels).astype(np.float32))


def log_mel(pcm: np.ndarray | torch.Tensor, cfg: AudioConfig) -> torch.Tensor:
    """Un-normalised log10 mel power spectrogram, float32 [n_mels, T // hop] on the CPU.

    pcm: mono float [T] at cfg.sample_rate. STFT (periodic Hann, centred with reflect padding), last
    frame dropped, |.|^2, mel filters, log10(max(., 1e-10)). Computed in float32 like Whisper.
    """
    x = pcm if torch.is_tensor(pcm) else torch.from_numpy(np.ascontiguousarray(pcm, dtype=np.float32))
    x = x.detach().to("cpu", torch.float32)
    if x.ndim != 1:
        raise InputError(f"audio must be mono 1-D samples, got shape {tuple(x.shape)}")
    if x.shape[0] <= cfg.n_fft // 2:
        raise InputError(
            f"audio is too short: {x.shape[0]} samples, need more than {cfg.n_fft // 2} ({cfg.sample_rate} Hz)"
        )
    window = torch.hann_window(cfg.n_fft, periodic=True, dtype=torch.float32)
    spec = torch.stft(
        x, cfg.n_fft, cfg.hop_length, window=window, center=True, pad_mode="reflect", return_complex=True
    )
    power = spec[:, :-1].abs() ** 2  # [n_freq, frames]
    mel = _mel_filterbank_f32(cfg.sample_rate, cfg.n_fft, cfg.n_mels) @ power
    return torch.clamp(mel, min=1e-10).log10()


def normalise_log_mel(logmel: torch.Tensor, max_value: float | torch.Tensor) -> torch.Tensor:
    """Whisper's dynamic-range clamp and scaling: (max(x, max_value - 8) + 4) / 4, same shape.

    Whisper passes the whole-file max of `logmel`; a streaming caller passes a running max.
    """
    floor = torch.as_tensor(max_value, dtype=logmel.dtype, device=logmel.device) - 8.0
    return (torch.maximum(logmel, floor) + 4.0) / 4.0


# ---------------------------------------------------------------------------------------------------
# Encoder
# ---------------------------------------------------------------------------------------------------


def sinusoids(length: int, channels: int, max_timescale: float = 10000.0) -> torch.Tensor:
    """Whisper's positional embedding [length, channels]: [sin | cos] over channels/2 log-spaced timescales."""
    half = channels // 2
    increment = math.log(max_timescale) / (half - 1)
    inv_timescales = torch.exp(-increment * torch.arange(half, dtype=torch.float32))
    t = torch.arange(length, dtype=torch.float32)[:, None] * inv_timescales[None, :]
    return torch.cat([torch.sin(t), torch.cos(t)], dim=1)


class _SelfAttention(nn.Module):
    def __init__(self, n_state: int, n_head: int):
        super().__init__()
        self.n_head = n_head
        self.query = nn.Linear(n_state, n_state)
        self.key = nn.Linear(n_state, n_state, bias=False)
        self.value = nn.Linear(n_state, n_state)
        self.out = nn.Linear(n_state, n_state)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, T, C] -> [B, T, C]; bidirectional, q and k each scaled by head_dim^-0.25."""
        b, t, c = x.shape
        head_dim = c // self.n_head
        scale = head_dim**-0.25
        q = self.query(x).view(b, t, self.n_head, head_dim).transpose(1, 2) * scale  # [B, H, T, D]
        k = self.key(x).view(b, t, self.n_head, head_dim).permute(0, 2, 3, 1) * scale  # [B, H, D, T]
        v = self.value(x).view(b, t, self.n_head, head_dim).transpose(1, 2)
        weights = torch.softmax(q @ k, dim=-1)
        return self.out((weights @ v).transpose(1, 2).reshape(b, t, c))


class _ResidualAttentionBlock(nn.Module):
    def __init__(self, n_state: int, n_head: int):
        super().__init__()
        self.attn = _SelfAttention(n_state, n_head)
        self.attn_ln = nn.LayerNorm(n_state, eps=1e-5)
        self.mlp = nn.Sequential(nn.Linear(n_state, 4 * n_state), nn.GELU(), nn.Linear(4 * n_state, n_state))
        self.mlp_ln = nn.LayerNorm(n_state, eps=1e-5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.attn_ln(x))
        return x + self.mlp(self.mlp_ln(x))


class WhisperEncoder(nn.Module):
    """Whisper audio encoder returning its hidden-state stack (state-dict keys = Whisper's `encoder.*` minus the
    prefix).

    forward(mel [B, n_mels, T_mel]) -> [B, ceil(T_mel / 2), n_layer + 1, n_state] (T_mel // 2 for the even T_mel
    every caller uses): entry 0 is gelu(conv2(gelu(conv1(mel)))) + positional_embedding[:T], entry l+1 the
    output of block l, all before `ln_post` (which is kept only so that checkpoints load strictly).
    """

    def __init__(self, cfg: AudioConfig):
        super().__init__()
        self.n_ctx = cfg.n_ctx
        self.conv1 = nn.Conv1d(cfg.n_mels, cfg.n_state, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(cfg.n_state, cfg.n_state, kernel_size=3, stride=2, padding=1)
        self.register_buffer("positional_embedding", sinusoids(cfg.n_ctx, cfg.n_state))
        self.blocks = nn.ModuleList(_ResidualAttentionBlock(cfg.n_state, cfg.n_head) for _ in range(cfg.n_layer))
        self.ln_post = nn.LayerNorm(cfg.n_state, eps=1e-5)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        n_positions = (mel.shape[-1] + 1) // 2
        if n_positions > self.n_ctx:
            raise InputError(
                f"mel has {mel.shape[-1]} frames; the encoder takes at most {2 * self.n_ctx} "
                f"({self.n_ctx} positions): split the audio into shorter windows"
            )
        x = F.gelu(self.conv1(mel))
        x = F.gelu(self.conv2(x)).transpose(1, 2)  # [B, T, C]
        x = x + self.positional_embedding[:n_positions].to(x.dtype)
        states = [x]
        for block in self.blocks:
            x = block(x)
            states.append(x)
        return torch.stack(states, dim=2)


# ---------------------------------------------------------------------------------------------------
# Per-frame token windows
# ---------------------------------------------------------------------------------------------------


def _centre(frame: int, fps: float, cfg: AudioConfig) -> int:
    """50 Hz position of video frame `frame`: int(frame * 50 / fps), the reference's float expression."""
    return int(frame * cfg.positions_per_second / fps)


def frame_token_index(
    n_frames: int, fps: float, n_positions: int, cfg: AudioConfig, first_frame: int = 0
) -> np.ndarray:
    """Stack positions of frames first_frame .. first_frame+n_frames-1: int64 [n_frames, before+after+1].

    Row i holds c-tokens_before .. c+tokens_after with c = int((first_frame+i) * 50 / fps), clamped to
    [0, n_positions - 1].
    """
    if fps <= 0:
        raise InputError(f"fps must be positive, got {fps}")
    centres = np.array([_centre(first_frame + i, fps, cfg) for i in range(n_frames)], dtype=np.int64)
    offsets = np.arange(-cfg.tokens_before, cfg.tokens_after + 1, dtype=np.int64)
    return np.clip(centres[:, None] + offsets[None, :], 0, n_positions - 1)


def frame_audio_tokens(stack: torch.Tensor, index: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Gather per-frame tokens: stack [T50, L, C], index [N, K] -> [N, K*L, C], token = L*k + layer."""
    index = torch.as_tensor(index, device=stack.device)
    n, k = index.shape
    return stack[index.long()].reshape(n, k * stack.shape[1], stack.shape[2])


def offline_frame_count(n_positions: int, fps: float) -> int:
    """Number of frames EchoMimic yields for T50 = n_positions: i = 0, 1, ... up to and including the
    first i with int(i*50/fps) > n_positions (2 s at 24 fps: 50)."""
    if fps <= 0:
        raise InputError(f"fps must be positive, got {fps}")
    i = max(0, int(n_positions * fps / 50) - 2)  # just below the answer; the loop settles the float rounding
    while i > 0 and int((i - 1) * 50 / fps) > n_positions:
        i -= 1
    while int(i * 50 / fps) <= n_positions:
        i += 1
    return i + 1


def _model_device_dtype(encoder) -> tuple[torch.device, torch.dtype]:
    """Device/dtype of an encoder module; a plain callable (a backend runner) takes CPU float32."""
    if not isinstance(encoder, nn.Module):
        return torch.device("cpu"), torch.float32
    p = next(encoder.parameters(), None)
    return (p.device, p.dtype) if p is not None else (torch.device("cpu"), torch.float32)


@torch.no_grad()
def encode_file_features(pcm: np.ndarray | torch.Tensor, cfg: AudioConfig, encoder: nn.Module) -> torch.Tensor:
    """Offline reference features of a whole file: stack [T50, n_layer+1, n_state] (T50 = mel frames // 2).

    Whole-file log-mel normalised with its global max, cut into 2*n_ctx-frame chunks, each zero-padded
    (normalised domain) to 2*n_ctx frames when cfg.pad_to_ctx, encoded; the first chunk_frames//2
    positions of each chunk are kept. Output on the encoder's device and dtype.
    """
    logmel = log_mel(pcm, cfg)
    mel = normalise_log_mel(logmel, logmel.max())
    device, dtype = _model_device_dtype(encoder)
    chunk = 2 * cfg.n_ctx
    parts = []
    for start in range(0, mel.shape[1], chunk):
        piece = mel[:, start : start + chunk]
        frames = piece.shape[1]
        if cfg.pad_to_ctx:
            piece = F.pad(piece, (0, chunk - frames))
        parts.append(encoder(piece[None].to(device, dtype))[0, : frames // 2])
    return torch.cat(parts, dim=0)


# ---------------------------------------------------------------------------------------------------
# Streaming
# ---------------------------------------------------------------------------------------------------


class StreamingAudioFeatures:
    """Per-frame audio tokens for a live stream, without whole-file statistics.

    For frames [first_frame, first_frame + n_frames) the encoder sees one window of
    `window_seconds` (rounded to whole 20 ms positions) that ends right after the last frame's
    look-ahead: position c_last + tokens_after. Sample 0 is the stream start; while the stream is
    shorter than the window, the window is [0, end) so encoder position 0 is the stream start, as in
    Whisper's offline chunks (padded to n_ctx when cfg.pad_to_ctx). The log-mel is normalised with a running max
    over every window seen since `reset()`.

    The result is a function of the stream samples inside `required_span(...)`, (first_frame,
    n_frames, fps) and the running max, so it does not depend on how the audio arrived.
    """

    def __init__(self, encoder: nn.Module | Callable[[torch.Tensor], torch.Tensor], cfg: AudioConfig):
        """encoder: a WhisperEncoder or any callable mel [1, n_mels, T] → stack [1, T/2, L, C]."""
        self.encoder = encoder
        self.cfg = cfg
        self.samples_per_position = 2 * cfg.hop_length  # 320: one 50 Hz encoder position
        self.window_positions = round(cfg.window_seconds * cfg.sample_rate / self.samples_per_position)
        span = cfg.tokens_before + cfg.tokens_after + 1
        if not span <= self.window_positions <= cfg.n_ctx:
            raise InputError(
                f"audio window_seconds={cfg.window_seconds} must cover {span} to {cfg.n_ctx} positions of 20 ms"
            )
        self._running_max = -math.inf

    def reset(self) -> None:
        """Forget the running max (start of a new stream)."""
        self._running_max = -math.inf

    @property
    def running_max(self) -> float:
        return self._running_max

    def required_span(self, first_frame: int, n_frames: int, fps: float) -> tuple[int, int]:
        """Absolute sample range [start, end) the caller must pass for these frames.

        end = (c_last + tokens_after + 1) * 320, start = max(0, end - window samples). Raises InputError if the
        frames' positions do not fit in one window.
        """
        if first_frame < 0 or n_frames < 1:
            raise InputError(f"need first_frame >= 0 and n_frames >= 1, got {first_frame}, {n_frames}")
        if fps <= 0:
            raise InputError(f"fps must be positive, got {fps}")
        cfg = self.cfg
        end_pos = _centre(first_frame + n_frames - 1, fps, cfg) + cfg.tokens_after + 1
        # Until the stream is longer than the window, the window starts at the stream start, so encoder
        # position 0 is audio time 0 exactly as in Whisper's (and EchoMimic's) offline chunks.
        start_pos = max(0, end_pos - self.window_positions)
        if max(0, _centre(first_frame, fps, cfg) - cfg.tokens_before) < start_pos:
            raise InputError(
                f"{n_frames} frames at {fps} fps do not fit in the {cfg.window_seconds} s audio window: "
                "request fewer frames per call"
            )
        return start_pos * self.samples_per_position, end_pos * self.samples_per_position

    @torch.no_grad()
    def tokens_for_frames(
        self, audio: np.ndarray, audio_start_sample: int, first_frame: int, n_frames: int, fps: float
    ) -> torch.Tensor:
        """Audio tokens [n_frames, (before+after+1)*(n_layer+1), n_state] (= [n_frames, 50, 384]).

        audio: float32 [T] at 16 kHz, the stream's samples from absolute sample `audio_start_sample`.
        It must cover required_span(...) from sample max(start, 0) on; extra samples are ignored and
        anything before sample 0 is treated as silence. Output on the encoder's device and dtype.
        """
        start, end = self.required_span(first_frame, n_frames, fps)
        audio = np.asarray(audio, dtype=np.float32).reshape(-1)
        have_from, have_to = audio_start_sample, audio_start_sample + audio.shape[0]
        if have_from > max(start, 0) or have_to < end:
            raise InputError(
                f"audio covers samples [{have_from}, {have_to}) but frames {first_frame}..{first_frame + n_frames - 1} "
                f"need [{max(start, 0)}, {end})"
            )
        window = np.zeros(end - start, dtype=np.float32)
        copy_from = max(start, 0)
        window[copy_from - start :] = audio[copy_from - have_from : end - have_from]

        logmel = log_mel(window, self.cfg)  # [n_mels, 2 * window_positions]
        self._running_max = max(self._running_max, float(logmel.max()))
        mel = normalise_log_mel(logmel, self._running_max)
        if self.cfg.pad_to_ctx:
            mel = F.pad(mel, (0, 2 * self.cfg.n_ctx - mel.shape[1]))
        device, dtype = _model_device_dtype(self.encoder)
        stack = self.encoder(mel[None].to(device, dtype))[0, : self.window_positions]

        start_pos, end_pos = start // self.samples_per_position, end // self.samples_per_position
        index = frame_token_index(n_frames, fps, end_pos, self.cfg, first_frame) - start_pos
        return frame_audio_tokens(stack, index)

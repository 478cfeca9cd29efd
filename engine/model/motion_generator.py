"""The embedded tier's generator: EMO in motion space.

Per window of W = n + F frames (n known motion frames from the session's rolling buffer, F new ones) it
predicts every frame's motion vector (expression PCA coefficients, eyelids, head pose; `engine.motion.space`)
from the frames' Whisper tokens, the avatar's neutral shape and the motion prefix:

    frame tokens  = Linear(motion) + frame position + known/new embedding + Linear(neutral shape code)
    each layer    = temporal self-attention over the W frames            (EMO's temporal modules)
                  + cross-attention of each frame to its own audio tokens (EMO's audio attention)
                  + feed-forward
    output        = x0 (normalised motion) of every frame, returned as the sampler's v

It follows the `Runners.denoise` contract of the pixel models, with motion "latents" of shape
[B, D, W, 1, 1] (normalised motion, D = `MotionGeneratorConfig.motion_dim`), so the same `Session`,
`denoise_jobs` batching and DDIM sampler run it. Trained at t = T-1 only (zero terminal SNR: v = -x0 there) it
is a one-step regression of the motion; `x0_to_v` keeps other timesteps consistent.

    model = MotionGenerator(cfg)
    v = model(sample [B, D, W, 1, 1], timestep [B], audio [B, W, Ta, Ca], shape [B, S, 1, 1])
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from livehead.engine.model.config import MotionGeneratorConfig, SamplerConfig
from livehead.engine.model.sampler import zero_snr_alphas_cumprod


def _attend(attention: nn.MultiheadAttention, query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """query [B, Lq, C] attending to keys [B, Lk, C] with `attention`'s weights → [B, Lq, C].

    The explicit (composite) path of nn.MultiheadAttention: its fused inference kernel has no ONNX export."""
    out, _ = F.multi_head_attention_forward(
        query.transpose(0, 1), keys.transpose(0, 1), keys.transpose(0, 1), attention.embed_dim,
        attention.num_heads, attention.in_proj_weight, attention.in_proj_bias, None, None, False, 0.0,
        attention.out_proj.weight, attention.out_proj.bias, training=False, need_weights=False)
    return out.transpose(0, 1)


class _Block(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm_t = nn.LayerNorm(width)
        self.temporal = nn.MultiheadAttention(width, heads, batch_first=True)
        self.norm_a = nn.LayerNorm(width)
        self.audio = nn.MultiheadAttention(width, heads, batch_first=True)
        self.norm_f = nn.LayerNorm(width)
        self.ff = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """x [B, W, C] frame tokens, audio [B·W, Ta, C] each frame's audio tokens → [B, W, C]."""
        b, w, c = x.shape
        h = self.norm_t(x)
        x = x + _attend(self.temporal, h, h)
        q = self.norm_a(x).reshape(b * w, 1, c)
        x = x + _attend(self.audio, q, audio).reshape(b, w, c)
        return x + self.ff(self.norm_f(x))


class MotionGenerator(nn.Module):
    """Audio + motion prefix + neutral shape → motion of every frame of the window (see the module doc)."""

    def __init__(self, cfg: MotionGeneratorConfig, sampler: SamplerConfig):
        super().__init__()
        self.cfg = cfg
        c = cfg.width
        self.motion_in = nn.Linear(cfg.motion_dim, c)
        self.shape_in = nn.Linear(cfg.shape_dim, c)
        self.position = nn.Parameter(torch.zeros(cfg.max_frames, c))
        self.known = nn.Parameter(torch.zeros(2, c))  # 0: a new frame (noise in), 1: a known motion frame
        self.audio_in = nn.Sequential(nn.LayerNorm(cfg.audio_dim), nn.Linear(cfg.audio_dim, c))
        self.audio_position = nn.Parameter(torch.zeros(cfg.audio_tokens, c))
        self.blocks = nn.ModuleList(_Block(c, cfg.heads) for _ in range(cfg.layers))
        self.norm_out = nn.LayerNorm(c)
        self.motion_out = nn.Linear(c, cfg.motion_dim)
        nn.init.normal_(self.position, std=0.02)
        nn.init.normal_(self.audio_position, std=0.02)
        nn.init.normal_(self.known, std=0.02)
        nn.init.zeros_(self.motion_out.weight)
        nn.init.zeros_(self.motion_out.bias)
        # the sampler's latents are normalised motion: z = (motion - mean) / std, per channel (set by training)
        self.register_buffer("motion_mean", torch.zeros(cfg.motion_dim))
        self.register_buffer("motion_std", torch.ones(cfg.motion_dim))
        alphas = torch.as_tensor(zero_snr_alphas_cumprod(sampler), dtype=torch.float32)
        self.register_buffer("alphas_cumprod", alphas, persistent=False)

    def predict_x0(self, window: torch.Tensor, known: torch.Tensor, audio: torch.Tensor,
                   shape: torch.Tensor) -> torch.Tensor:
        """window [B, W, D] normalised motion (known frames clean, new ones noise), known [W] bool,
        audio [B, W, Ta, Ca], shape [B, S] → x0 [B, W, D]."""
        b, w, _ = window.shape
        x = (self.motion_in(window) + self.position[:w] + self.known[known.long()]
             + self.shape_in(shape)[:, None])
        tokens = self.audio_in(audio.reshape(b * w, audio.shape[2], audio.shape[3])) + self.audio_position
        for block in self.blocks:
            x = block(x, tokens)
        return self.motion_out(self.norm_out(x))

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, audio: torch.Tensor, shape: torch.Tensor,
                known_frames: int = 0) -> torch.Tensor:
        """sample [B, D, W, 1, 1] (the first `known_frames` frames are the motion prefix), timestep [B],
        audio [B, W, Ta, Ca], shape [B, S, 1, 1] → v [B, D, W, 1, 1] (the sampler's parameterisation)."""
        window = sample[..., 0, 0].transpose(1, 2)
        w = window.shape[1]
        known = torch.arange(w, device=sample.device) < known_frames
        x0 = self.predict_x0(window, known, audio, shape[..., 0, 0])
        v = x0_to_v(x0, window, self.alphas_cumprod[timestep.long()])
        return v.transpose(1, 2)[..., None, None]


def normalise(model: MotionGenerator, motion: torch.Tensor) -> torch.Tensor:
    """motion [..., D] in motion units → the sampler's latents z [..., D]."""
    return (motion - model.motion_mean) / model.motion_std


def denormalise(model: MotionGenerator, z: torch.Tensor) -> torch.Tensor:
    """latents z [..., D] → motion [..., D] in motion units."""
    return z * model.motion_std + model.motion_mean


def x0_to_v(x0: torch.Tensor, x_t: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
    """The v that makes the sampler's x0 estimate equal x0: v = (√ᾱ·x_t − x0) / √(1 − ᾱ).
    x0, x_t [B, W, D], alpha_bar [B]; at ᾱ = 0 (t = T-1, zero terminal SNR) v = −x0."""
    a = alpha_bar.to(x0.dtype)[:, None, None]
    return (a.sqrt() * x_t - x0) / (1.0 - a).clamp_min(1e-8).sqrt()


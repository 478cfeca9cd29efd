"""The two UNets of the EMO family in the SD1.5 layout, with diffusers / AnimateDiff module names.

- `ReferenceNet`: 2-D UNet without cross-attention and without `conv_norm_out`/`conv_out` (EchoMimic's
  layout). Run once per avatar at t = 0; returns the 16 bank tensors (`norm1` outputs).
- `Denoiser`: the same UNet inflated to video (every 2-D op per frame), with audio cross-attention
  in the 16 spatial transformers, reference attention against the avatar's cached K/V, 21 motion
  modules, and face-locator features added after `conv_in`.

Inside the network video tensors are kept as [B·F, C, H, W] (frame-major within each batch item),
which is what "inflated" per-frame ops mean; motion modules regroup to attend over F.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from livehead.engine.model.attention import MotionModule, Transformer2D
from livehead.engine.model.config import UNetConfig


def timestep_embedding(t: torch.Tensor, dim: int, flip_sin_to_cos: bool, shift: float) -> torch.Tensor:
    """t [B] → [B, dim] sinusoidal embedding (diffusers `Timesteps`)."""
    half = dim // 2
    exponent = -math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / (half - shift)
    emb = t.float()[:, None] * torch.exp(exponent)[None, :]
    emb = torch.cat([torch.sin(emb), torch.cos(emb)], dim=-1)
    if flip_sin_to_cos:
        emb = torch.cat([emb[:, half:], emb[:, :half]], dim=-1)
    return emb


class TimestepEmbedding(nn.Module):
    def __init__(self, dim: int, embed_dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(dim, embed_dim)
        self.linear_2 = nn.Linear(embed_dim, embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.silu(self.linear_1(x)))


class ResnetBlock(nn.Module):
    """norm1 → SiLU → conv1 → + time_emb_proj(SiLU(temb)) → norm2 → SiLU → conv2, + shortcut."""

    def __init__(self, c_in: int, c_out: int, temb: int, groups: int, eps: float):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, c_in, eps=eps)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.time_emb_proj = nn.Linear(temb, c_out)
        self.norm2 = nn.GroupNorm(groups, c_out, eps=eps)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else None

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        """x [N, Cin, H, W], temb [N, T] → [N, Cout, H, W]."""
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time_emb_proj(F.silu(temb))[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return (x if self.conv_shortcut is None else self.conv_shortcut(x)) + h


class Downsample(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return self.conv(F.interpolate(x, size=size, mode="nearest"))


class Block(nn.Module):
    """A down, mid or up block: layers of resnet → [spatial transformer] → [motion module].

    `attentions` / `motion_modules` exist only where the layout has them, so the state-dict keys
    match diffusers (`down_blocks.i.resnets.j`, `.attentions.j`, `.motion_modules.j`, ...).
    """

    def __init__(self, cfg: UNetConfig, channels_in: list[int], c_out: int, transformer: bool,
                 video: bool, audio: bool, downsample: bool = False, upsample: bool = False,
                 mid: bool = False):
        super().__init__()
        temb = cfg.time_embed_dim
        self.resnets = nn.ModuleList(
            [ResnetBlock(c, c_out, temb, cfg.norm_num_groups, cfg.norm_eps) for c in channels_in]
        )
        n_layers = 1 if mid else len(channels_in)
        if transformer:
            self.attentions = nn.ModuleList([
                Transformer2D(c_out, cfg.attention_heads, cfg.norm_num_groups, cfg.transformer_norm_eps,
                              cfg.layer_norm_eps, cfg.audio_dim if audio else None, cfg.audio_scale)
                for _ in range(n_layers)
            ])
        else:
            self.attentions = None
        if video:
            self.motion_modules = nn.ModuleList([
                MotionModule(c_out, cfg.motion_heads, cfg.motion_norm_groups, cfg.motion_max_len,
                             cfg.layer_norm_eps)
                for _ in range(n_layers)
            ])
        else:
            self.motion_modules = None
        self.mid = mid
        if downsample:
            self.downsamplers = nn.ModuleList([Downsample(c_out)])
        if upsample:
            self.upsamplers = nn.ModuleList([Upsample(c_out)])

    def transformers(self) -> list[Transformer2D]:
        return list(self.attentions) if self.attentions is not None else []


def _layout(cfg: UNetConfig):
    """Yield (name, channels_in, c_out, transformer, down, up) for every block in module order."""
    ch = cfg.block_out_channels
    n = len(ch)
    lpb = cfg.layers_per_block
    down = []
    c_prev = ch[0]
    for i, c in enumerate(ch):
        ins = [c_prev] + [c] * (lpb - 1)
        down.append((f"down_blocks.{i}", ins, c, i < n - 1, i < n - 1, False))
        c_prev = c
    mid = ("mid_block", [ch[-1], ch[-1]], ch[-1], True, False, False)
    rev = list(reversed(ch))
    up = []
    for i, c in enumerate(rev):
        prev = rev[max(i - 1, 0)]
        skip_in = rev[min(i + 1, n - 1)]
        ins = [(prev if j == 0 else c) + (skip_in if j == lpb else c) for j in range(lpb + 1)]
        up.append((f"up_blocks.{i}", ins, c, i > 0, False, i < n - 1))
    return down, mid, up


class UNetBase(nn.Module):
    """Shared SD1.5 trunk. Subclasses choose `video`, `audio` and whether the output head exists."""

    video = False
    audio = False
    output_head = False

    def __init__(self, cfg: UNetConfig):
        super().__init__()
        self.cfg = cfg
        ch = cfg.block_out_channels
        self.conv_in = nn.Conv2d(cfg.in_channels, ch[0], 3, padding=1)
        self.time_embedding = TimestepEmbedding(ch[0], cfg.time_embed_dim)
        down, mid, up = _layout(cfg)
        kw = dict(video=self.video, audio=self.audio)
        self.down_blocks = nn.ModuleList(
            [Block(cfg, ins, c, tr, downsample=ds, **kw) for _, ins, c, tr, ds, _ in down]
        )
        self.mid_block = Block(cfg, mid[1], mid[2], True, mid=True, **kw)
        self.up_blocks = nn.ModuleList(
            [Block(cfg, ins, c, tr, upsample=us, **kw) for _, ins, c, tr, _, us in up]
        )
        if self.output_head:
            self.conv_norm_out = nn.GroupNorm(cfg.norm_num_groups, ch[0], eps=cfg.norm_eps)
            self.conv_out = nn.Conv2d(ch[0], cfg.out_channels, 3, padding=1)

    def transformers(self) -> list[Transformer2D]:
        """The 16 spatial transformers in depth-first module order (the bank order)."""
        blocks = [*self.down_blocks, self.mid_block, *self.up_blocks]
        return [t for b in blocks for t in b.transformers()]

    def time_features(self, timestep: torch.Tensor, n: int) -> torch.Tensor:
        """timestep [] or [n] → [n, time_embed_dim] in the weights' dtype."""
        t = timestep.reshape(-1).expand(n)  # [] / [1] broadcast, [n] as is (one traced graph for both)
        emb = timestep_embedding(t, self.cfg.block_out_channels[0], self.cfg.flip_sin_to_cos, self.cfg.freq_shift)
        # the sinusoids are computed in fp32; a half-precision model takes them in its own dtype
        return self.time_embedding(emb.to(self.time_embedding.linear_1.weight.dtype))

    def trunk(self, h: torch.Tensor, temb: torch.Tensor, frames: int,
              attend: Callable[[Transformer2D, torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """Down, mid and up path on h [N, C0, H, W] (N = B·F); `attend` runs each spatial transformer.

        Returns the last up block's output [N, C0, H, W]. Skips follow diffusers' order.
        """

        def layers(block: Block, h: torch.Tensor, skips: list[torch.Tensor] | None):
            outs = []
            if block.mid:
                h = block.resnets[0](h, temb)
            for j in range(1 if block.mid else len(block.resnets)):
                if not block.mid:
                    if skips is not None:
                        h = torch.cat([h, skips.pop()], dim=1)
                    h = block.resnets[j](h, temb)
                if block.attentions is not None:
                    h = attend(block.attentions[j], h)
                if block.motion_modules is not None:
                    h = block.motion_modules[j](h, frames)
                if block.mid:
                    h = block.resnets[1](h, temb)
                outs.append(h)
            return h, outs

        skips = [h]
        for block in self.down_blocks:
            h, outs = layers(block, h, None)
            skips.extend(outs)
            if hasattr(block, "downsamplers"):
                h = block.downsamplers[0](h)
                skips.append(h)
        h, _ = layers(self.mid_block, h, None)
        for block in self.up_blocks:
            h, _ = layers(block, h, skips)
            if hasattr(block, "upsamplers"):
                h = block.upsamplers[0](h, skips[-1].shape[-2:])
        return h



class ReferenceNet(UNetBase):
    """2-D UNet in "write" mode: forward(ref_latents [B, 4, h, w]) → 16 bank tensors [B, h_l·w_l, C_l]."""

    def forward(self, ref_latents: torch.Tensor) -> tuple[torch.Tensor, ...]:
        b = ref_latents.shape[0]
        temb = self.time_features(torch.zeros(b, device=ref_latents.device), b)
        bank: list[torch.Tensor] = []

        def write(attn: Transformer2D, h: torch.Tensor) -> torch.Tensor:
            h, n = attn.forward_write(h)
            bank.append(n)
            return h

        self.trunk(self.conv_in(ref_latents), temb, 1, write)
        return tuple(bank)


class Denoiser(UNetBase):
    """Video UNet: forward(sample, timestep, audio_tokens, face_features, *reference_kv) → v-prediction.

    sample [B, 4, F, h, w]; timestep [] or [B]; audio_tokens [B, F, Ta, Ca]; face_features
    [B, C0, h, w] (broadcast over frames); reference_kv: 32 tensors (K, V per spatial transformer in
    bank order, each [B, Lr_l, C_l]) or none at all for plain self-attention (CFG unconditional).
    Returns [B, 4, F, h, w].
    """

    video = True
    audio = True
    output_head = True

    def reference_kv(self, *bank: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """16 bank tensors [B, Lr_l, C_l] → 32 tensors (K0, V0, K1, V1, ...), computed once per avatar."""
        out: list[torch.Tensor] = []
        for t, b in zip(self.transformers(), bank):
            out.extend(t.block.reference_kv(b))
        return tuple(out)

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, audio_tokens: torch.Tensor,
                face_features: torch.Tensor, *reference_kv: torch.Tensor) -> torch.Tensor:
        b, c, frames, hh, ww = sample.shape
        n = b * frames
        x = sample.permute(0, 2, 1, 3, 4).reshape(n, c, hh, ww)
        temb = self.time_features(timestep.to(sample.device), b).repeat_interleave(frames, dim=0)
        audio = audio_tokens.reshape(n, audio_tokens.shape[2], audio_tokens.shape[3])
        kv = iter(reference_kv)

        def read(attn: Transformer2D, h: torch.Tensor) -> torch.Tensor:
            rk, rv = (next(kv), next(kv)) if reference_kv else (None, None)
            return attn(h, frames, audio, rk, rv)

        h = self.conv_in(x) + face_features.repeat_interleave(frames, dim=0)
        h = self.trunk(h, temb, frames, read)
        h = self.conv_out(F.silu(self.conv_norm_out(h)))
        return h.reshape(b, frames, -1, hh, ww).permute(0, 2, 1, 3, 4)

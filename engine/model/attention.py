"""Attention building blocks of the EMO-family UNets, with diffusers / AnimateDiff module names.

Shapes: `N` = batch·frames (every spatial op is per frame), `L` = tokens per frame (H·W), `C` channels.

- `Attention`: `to_q/to_k/to_v` (no bias) and `to_out.0` (bias), heads of size C/heads.
- `SpatialTransformerBlock` (`transformer_blocks.0`): reference self-attention (`attn1`, keys/values =
  own tokens followed by the avatar's reference K/V), audio cross-attention (`attn2`, output × audio
  scale) and a GEGLU feed-forward. The ReferenceNet flavour has no `attn2`/`norm2` and records the
  `norm1` output (the reference "bank").
- `Transformer2D` (`attentions.j`): GroupNorm, 1×1 conv in, one block, 1×1 conv out, residual.
- `MotionModule` (`motion_modules.j`): AnimateDiff-v2 "Vanilla" temporal transformer over frames.

Kernels: every attention type runs either through torch SDPA (`"sdpa"`, the default: any device, and
what `export/` traces) or through the Triton kernels in `kernels/` (`"triton"`, CUDA; CPU only under
`TRITON_INTERPRET=1`; called as the custom ops of `kernels/ops.py`, so `torch.compile` traces each as one
node). `use_attention_kernels(model, AttentionKernels.triton())` picks them per type:
the reference kernel streams own + cached reference K/V without `torch.cat`/`repeat_interleave`, the
audio kernel fuses the audio scale, and the temporal kernel reads the `[B·F, L, C]` layout directly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from livehead.engine.common.errors import InputError

KERNEL_CHOICES = ("sdpa", "triton")


@dataclass(frozen=True)
class AttentionKernels:
    """Which implementation runs each attention type: "sdpa" (torch) or "triton" (`kernels/`).

    reference: the spatial self-attention over [own tokens ; avatar reference tokens] (`attn1`);
    temporal: the motion modules' attention over frames; audio: the audio cross-attention (`attn2`).
    """

    reference: str = "sdpa"
    temporal: str = "sdpa"
    audio: str = "sdpa"

    def __post_init__(self):
        for kind in ("reference", "temporal", "audio"):
            choice = getattr(self, kind)
            if choice not in KERNEL_CHOICES:
                raise InputError(f"{kind} attention kernel must be one of {', '.join(KERNEL_CHOICES)}; got {choice!r}")

    @classmethod
    def sdpa(cls) -> AttentionKernels:
        return cls()

    @classmethod
    def triton(cls) -> AttentionKernels:
        return cls(reference="triton", temporal="triton", audio="triton")

    @classmethod
    def from_name(cls, name: str) -> AttentionKernels:
        presets = {"sdpa": cls.sdpa, "triton": cls.triton}
        if name not in presets:
            raise InputError(f"unknown attention kernels {name!r}; choose one of: {', '.join(presets)}")
        return presets[name]()

    @property
    def uses_triton(self) -> bool:
        return "triton" in (self.reference, self.temporal, self.audio)


def _triton_kernels():
    """Import `kernels/`' custom ops lazily (the sdpa path and ONNX export never need triton)."""
    try:
        from livehead.kernels import ops
    except ImportError as err:
        raise InputError(
            f"the 'triton' attention kernels need the triton package ({err}); install it with "
            "pip install 'livehead[gpu]' or choose the 'sdpa' attention kernels"
        ) from err
    return ops


def use_attention_kernels(module: nn.Module, kernels: AttentionKernels | str) -> nn.Module:
    """Set the attention kernels of every attention submodule of `module` (e.g. a Denoiser); returns it.

    Only the choice is stored (plain attributes, not in the state dict); weights are untouched.
    """
    if isinstance(kernels, str):
        kernels = AttentionKernels.from_name(kernels)
    if kernels.uses_triton:
        _triton_kernels()  # fail now, with the install hint, rather than inside a forward pass
    for m in module.modules():
        if isinstance(m, SpatialTransformerBlock):
            m.reference_kernel = kernels.reference
            m.audio_kernel = kernels.audio
        elif isinstance(m, TemporalAttention):
            m.kernel = kernels.temporal
    return module


class Attention(nn.Module):
    """Multi-head attention; `to_out` is a ModuleList so its key is `to_out.0`."""

    def __init__(self, dim: int, heads: int, context_dim: int | None = None):
        super().__init__()
        context_dim = context_dim or dim
        self.heads = heads
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(context_dim, dim, bias=False)
        self.to_v = nn.Linear(context_dim, dim, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(dim, dim), nn.Dropout(0.0)])

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """q [N, Lq, C], k/v [N, Lk, C] (already projected) → [N, Lq, C] after `to_out`."""
        n, lq, c = q.shape
        d = c // self.heads
        q = q.view(n, lq, self.heads, d).transpose(1, 2)
        k = k.view(n, -1, self.heads, d).transpose(1, 2)
        v = v.view(n, -1, self.heads, d).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.to_out[0](out.transpose(1, 2).reshape(n, lq, c))

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """x [N, L, C], context [N, Lc, Cc] or None (self-attention) → [N, L, C]."""
        context = x if context is None else context
        return self.attend(self.to_q(x), self.to_k(context), self.to_v(context))

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """[N, L, C] → [N, heads, L, C/heads] (a view)."""
        n, length, c = x.shape
        return x.view(n, length, self.heads, c // self.heads).transpose(1, 2)

    @staticmethod
    def merge_heads(x: torch.Tensor) -> torch.Tensor:
        """[N, heads, L, D] → [N, L, heads·D] (a view when x is a kernel output)."""
        n, heads, length, d = x.shape
        return x.transpose(1, 2).reshape(n, length, heads * d)

    def attend_reference_triton(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                                ref_k: torch.Tensor | None, ref_v: torch.Tensor | None, frames: int) -> torch.Tensor:
        """Reference attention kernel: q/k/v [B·F, L, C], ref_k/ref_v [B, Lr, C] or None → to_out [B·F, L, C]."""
        reference_attention = _triton_kernels().reference_attention
        refs = (None, None) if ref_k is None or ref_v is None else (self.split_heads(ref_k), self.split_heads(ref_v))
        out = reference_attention(self.split_heads(q), self.split_heads(k), self.split_heads(v), *refs, frames)
        return self.to_out[0](self.merge_heads(out))

    def forward_scaled_triton(self, x: torch.Tensor, context: torch.Tensor, scale: float) -> torch.Tensor:
        """scale · forward(x, context) with the scale fused into the kernel and the bias: → [N, L, C]."""
        audio_attention = _triton_kernels().audio_attention
        q, k, v = self.to_q(x), self.to_k(context), self.to_v(context)
        out = self.merge_heads(audio_attention(self.split_heads(q), self.split_heads(k), self.split_heads(v), scale))
        proj = self.to_out[0]
        if isinstance(proj, nn.Linear):  # scale·(W a + b) = W (scale·a) + scale·b
            return F.linear(out, proj.weight, None if proj.bias is None else proj.bias * scale)
        # a swapped-in projection (e.g. FP8) with a `bias`: proj(scale·a) already adds b once
        bias = getattr(proj, "bias", None)
        return proj(out) if bias is None else proj(out) + (scale - 1.0) * bias


class GEGLU(nn.Module):
    def __init__(self, dim: int, inner: int):
        super().__init__()
        self.proj = nn.Linear(dim, inner * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value, gate = self.proj(x).chunk(2, dim=-1)
        return value * F.gelu(gate)


class FeedForward(nn.Module):
    """GEGLU feed-forward C → 8C (value, gate) → 4C → C; keys `net.0.proj`, `net.2`."""

    def __init__(self, dim: int, mult: int = 4):
        super().__init__()
        self.net = nn.ModuleList([GEGLU(dim, dim * mult), nn.Dropout(0.0), nn.Linear(dim * mult, dim)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net[2](self.net[0](x))


class SpatialTransformerBlock(nn.Module):
    """One `transformer_blocks.0`: reference attention, optional audio attention, feed-forward."""

    reference_kernel = "sdpa"  # set by use_attention_kernels
    audio_kernel = "sdpa"

    def __init__(self, dim: int, heads: int, audio_dim: int | None, audio_scale: float, eps: float):
        super().__init__()
        self.attn1 = Attention(dim, heads)
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.has_audio = audio_dim is not None
        if self.has_audio:
            self.attn2 = Attention(dim, heads, context_dim=audio_dim)
            self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.audio_scale = audio_scale
        self.ff = FeedForward(dim)
        self.norm3 = nn.LayerNorm(dim, eps=eps)

    def reference_kv(self, bank: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """bank [B, Lr, C] (ReferenceNet `norm1` output) → this block's K, V [B, Lr, C]."""
        return self.attn1.to_k(bank), self.attn1.to_v(bank)

    def forward_write(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """ReferenceNet pass. h [N, L, C] → (h [N, L, C], bank = norm1(h) [N, L, C])."""
        n = self.norm1(h)
        h = h + self.attn1(n)
        h = h + self.ff(self.norm3(h))
        return h, n

    def forward(
        self,
        h: torch.Tensor,
        frames: int,
        audio: torch.Tensor | None,
        ref_k: torch.Tensor | None,
        ref_v: torch.Tensor | None,
    ) -> torch.Tensor:
        """h [B·F, L, C]; audio [B·F, Ta, Ca] or None; ref_k/ref_v [B, Lr, C] or None (plain self-attn)."""
        n = self.norm1(h)
        q, k, v = self.attn1.to_q(n), self.attn1.to_k(n), self.attn1.to_v(n)
        if self.reference_kernel == "triton":
            # One online softmax over own then reference keys: no concatenation, no per-frame copy.
            h = h + self.attn1.attend_reference_triton(q, k, v, ref_k, ref_v, frames)
        else:
            if ref_k is not None and ref_v is not None:
                # Reference attention: every frame's keys/values are [own tokens ; reference tokens].
                k = torch.cat([k, ref_k.repeat_interleave(frames, dim=0)], dim=1)
                v = torch.cat([v, ref_v.repeat_interleave(frames, dim=0)], dim=1)
            h = h + self.attn1.attend(q, k, v)
        if self.has_audio and audio is not None:
            if self.audio_kernel == "triton":
                h = h + self.attn2.forward_scaled_triton(self.norm2(h), audio, self.audio_scale)
            else:
                h = h + self.audio_scale * self.attn2(self.norm2(h), audio)
        return h + self.ff(self.norm3(h))


class Transformer2D(nn.Module):
    """`attentions.j`: GroupNorm → 1×1 conv → block → 1×1 conv → + residual, on [N, C, H, W]."""

    def __init__(self, dim: int, heads: int, groups: int, gn_eps: float, ln_eps: float,
                 audio_dim: int | None, audio_scale: float):
        super().__init__()
        self.norm = nn.GroupNorm(groups, dim, eps=gn_eps)
        self.proj_in = nn.Conv2d(dim, dim, 1)
        self.transformer_blocks = nn.ModuleList(
            [SpatialTransformerBlock(dim, heads, audio_dim, audio_scale, ln_eps)]
        )
        self.proj_out = nn.Conv2d(dim, dim, 1)

    @property
    def block(self) -> SpatialTransformerBlock:
        return self.transformer_blocks[0]

    def _tokens(self, x: torch.Tensor) -> torch.Tensor:
        h = self.proj_in(self.norm(x))
        return h.flatten(2).transpose(1, 2)

    def _untokens(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        n, c, hh, ww = x.shape
        return self.proj_out(h.transpose(1, 2).reshape(n, c, hh, ww)) + x

    def forward_write(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B, C, H, W] → (out [B, C, H, W], bank [B, H·W, C])."""
        h, bank = self.block.forward_write(self._tokens(x))
        return self._untokens(h, x), bank

    def forward(self, x, frames: int, audio, ref_k, ref_v) -> torch.Tensor:
        """x [B·F, C, H, W] → [B·F, C, H, W]."""
        return self._untokens(self.block(self._tokens(x), frames, audio, ref_k, ref_v), x)


def sinusoidal_positions(length: int, dim: int) -> torch.Tensor:
    """[1, length, dim]: pe[p, 2k] = sin(p·10000^(-2k/dim)), pe[p, 2k+1] = cos(...)."""
    position = torch.arange(length, dtype=torch.float32).unsqueeze(1)
    div = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(1, length, dim)
    pe[0, :, 0::2] = torch.sin(position * div)
    pe[0, :, 1::2] = torch.cos(position * div)
    return pe


class PositionalEncoding(nn.Module):
    def __init__(self, dim: int, max_len: int):
        super().__init__()
        self.register_buffer("pe", sinusoidal_positions(max_len, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [S, F, C] → x + pe[:F]."""
        return x + self.pe[:, : x.shape[1]]


class TemporalAttention(Attention):
    """Self-attention over the frame axis with the sinusoidal PE added to its input."""

    kernel = "sdpa"  # set by use_attention_kernels

    def __init__(self, dim: int, heads: int, max_len: int):
        super().__init__(dim, heads)
        self.pos_encoder = PositionalEncoding(dim, max_len)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        return super().forward(self.pos_encoder(x))

    def forward_frames_triton(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        """Temporal kernel on video tokens in place: x [B·F, L, C] → [B·F, L, C], no regrouping copies.

        Same result as regrouping to [B·L, F, C] and calling forward(): PE, projections and to_out act
        per token, and the kernel reads the [B, F, L] token layout through strides.
        """
        temporal_attention = _triton_kernels().temporal_attention
        nf, length, c = x.shape
        b, d = nf // frames, c // self.heads
        x = x.view(b, frames, length, c) + self.pos_encoder.pe[:, :frames, None, :]
        split = lambda t: t.view(b, frames, length, self.heads, d).permute(0, 2, 3, 1, 4)
        out = temporal_attention(split(self.to_q(x)), split(self.to_k(x)), split(self.to_v(x)))
        return self.to_out[0](out.permute(0, 3, 1, 2, 4).reshape(nf, length, c))


class TemporalTransformerBlock(nn.Module):
    def __init__(self, dim: int, heads: int, max_len: int, eps: float):
        super().__init__()
        self.attention_blocks = nn.ModuleList([TemporalAttention(dim, heads, max_len) for _ in range(2)])
        self.norms = nn.ModuleList([nn.LayerNorm(dim, eps=eps) for _ in range(2)])
        self.ff = FeedForward(dim)
        self.ff_norm = nn.LayerNorm(dim, eps=eps)

    def forward(self, h: torch.Tensor, frames: int) -> torch.Tensor:
        """h [B·F, L, C] → [B·F, L, C]; attention runs over F at each of the B·L positions."""
        nf, length, c = h.shape
        b = nf // frames
        for norm, attn in zip(self.norms, self.attention_blocks):
            if attn.kernel == "triton":
                h = h + attn.forward_frames_triton(norm(h), frames)
                continue
            n = norm(h).view(b, frames, length, c).transpose(1, 2).reshape(b * length, frames, c)
            out = attn(n).view(b, length, frames, c).transpose(1, 2).reshape(nf, length, c)
            h = h + out
        return h + self.ff(self.ff_norm(h))


class TemporalTransformer(nn.Module):
    def __init__(self, dim: int, heads: int, groups: int, max_len: int, ln_eps: float):
        super().__init__()
        self.norm = nn.GroupNorm(groups, dim, eps=1e-6)
        self.proj_in = nn.Linear(dim, dim)
        self.transformer_blocks = nn.ModuleList([TemporalTransformerBlock(dim, heads, max_len, ln_eps)])
        self.proj_out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        """x [B·F, C, H, W] → [B·F, C, H, W]."""
        n, c, hh, ww = x.shape
        h = self.proj_in(self.norm(x).flatten(2).transpose(1, 2))
        h = self.transformer_blocks[0](h, frames)
        return self.proj_out(h).transpose(1, 2).reshape(n, c, hh, ww) + x


class MotionModule(nn.Module):
    """AnimateDiff-v2 "Vanilla" motion module; keys `temporal_transformer.*`."""

    def __init__(self, dim: int, heads: int, groups: int, max_len: int, ln_eps: float):
        super().__init__()
        self.temporal_transformer = TemporalTransformer(dim, heads, groups, max_len, ln_eps)

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        return self.temporal_transformer(x, frames)

"""The three attention kernels as torch custom ops: `torch.ops.livehead.{reference,temporal,audio}_attention`.

Called as plain Python, a Triton launcher (argument checks, autotuner, grid lambda) is something
`torch.compile` has to trace through or break the graph at. As custom ops each kernel is one opaque node:
the denoiser compiles with `fullgraph=True`, and a CUDA graph captures the launch like any other kernel.
Each op has a fake implementation that returns the launcher's exact output layout (shape, dtype and
strides; `torch.library.opcheck` checks it in tests/test_kernels.py), so inductor plans the ops around
it correctly. Outputs are fresh tensors (no `out=`): custom ops may not return views of their inputs.

    from kernels import ops
    out = ops.reference_attention(q, k, v, ref_k, ref_v, frames)   # q/k/v [N, H, L, D], ref [B, H, Lr, D]
    out = ops.temporal_attention(q, k, v)                           # [S, H, F, D] or [B, L, H, F, D]
    out = ops.audio_attention(q, k, v, scale)                       # q [N, H, L, D], k/v [N, H, Ta, D]
"""

from __future__ import annotations

import torch

from livehead.kernels import audio_attention as _audio
from livehead.kernels import reference_attention as _reference
from livehead.kernels import temporal_attention as _temporal


def _heads_view_of_tokens(q: torch.Tensor) -> torch.Tensor:
    """[N, H, L, D] viewed from a fresh [N, L, H, D] buffer: the layout the 4-D launchers return."""
    n, heads, length, dim = q.shape
    return q.new_empty(n, length, heads, dim).transpose(1, 2)


@torch.library.custom_op("livehead::reference_attention", mutates_args=())
def reference_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, ref_k: torch.Tensor | None,
                        ref_v: torch.Tensor | None, frames: int) -> torch.Tensor:
    return _reference.reference_attention(q, k, v, ref_k, ref_v, frames)


@reference_attention.register_fake
def _reference_fake(q, k, v, ref_k, ref_v, frames):
    return _heads_view_of_tokens(q)


@torch.library.custom_op("livehead::temporal_attention", mutates_args=())
def temporal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return _temporal.temporal_attention(q, k, v)


@temporal_attention.register_fake
def _temporal_fake(q, k, v):
    return torch.empty_like(q)  # what the launcher allocates: a dense q's strides, else contiguous


@torch.library.custom_op("livehead::audio_attention", mutates_args=())
def audio_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out_scale: float) -> torch.Tensor:
    return _audio.audio_attention(q, k, v, out_scale)


@audio_attention.register_fake
def _audio_fake(q, k, v, out_scale):
    return _heads_view_of_tokens(q)

"""Audio cross-attention with its output scale fused: a frame's tokens attend over its few audio tokens.

    out[n] = out_scale · softmax(q[n] · k[n]ᵀ / √D) · v[n]

Shapes: q `[N, H, L, D]` (N = B·F frames, L = h·w tokens), k, v `[N, H, Ta, D]` with Ta ≈ 50 audio
tokens per frame (EchoMimic: 10 Whisper positions × 5 hidden states), out `[N, H, L, D]`. Any strides:
the engine passes head-split views of its `[N, L, C]` / `[N, Ta, C]` projections, and the output is a
view of a fresh `[N, L, H, D]` buffer, so merging heads back to `[N, L, C]` is free.

Why the scale: the engine computes `h + audio_scale · to_out(attn)`, and
`audio_scale · (W a + b) = W (audio_scale · a) + audio_scale · b`, so the kernel scales its output and
the caller applies `to_out` with its bias times `audio_scale`: no extra pass over [N, L, C].

Algorithm: one program per (BLOCK_M queries, frame, head); the keys are streamed in blocks of
BLOCK_N = next power of two ≥ Ta (at least 16, at most 128) through an online softmax, so Ta = 50 is
a single masked block and longer contexts still work. fp32 scores and accumulator, exp2 with
log2(e)/√D folded into the scale, head sizes 40 / 80 / 160 padded to 64 / 128 / 256 with masks.
fp16 / bf16 inputs (fp32 accepted: exact "ieee" dots, for the CPU interpreter tests). Forward only.

FLOPs: 4·N·H·L·Ta·D. Memory bound: it reads q and writes out, ≈ 2·N·L·C·itemsize bytes.

Benchmark (CUDA only): `python -m livehead.kernels.audio_attention --bench [--dtype fp16|bf16]`, against SDPA
followed by the separate scale (what the engine does on the sdpa path).
"""

from __future__ import annotations

import math
import os

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from livehead.kernels.bench_io import bench_parser, parse_bench_args, save_json
from livehead.kernels.common import dot as _dot

LOG2E = 1.4426950408889634
MIN_DOT = 16
MAX_BLOCK_N = 128
INTERPRET_BLOCK_M = 128
MAX_GRID_Y = 65535


def _configs() -> list[triton.Config]:
    """(BLOCK_M, warps, stages) — the key block is fixed by Ta; with Ta ≤ 128 the key loop runs once,
    so one stage (no K/V multi-buffering in shared memory) is the natural choice; two for long contexts."""
    space = [(64, 4, 1), (128, 4, 1), (128, 8, 1), (256, 8, 1), (64, 4, 2), (128, 8, 2)]
    return [triton.Config({"BLOCK_M": m}, num_warps=w, num_stages=s) for m, w, s in space]


def _prune(configs, named_args, **kwargs):
    """Keep configs whose fp32 accumulator fits in registers (≤ 128 per thread)."""
    d_pad = {**named_args, **kwargs}["D_PAD"]
    keep = [c for c in configs if c.kwargs["BLOCK_M"] * d_pad // (32 * c.num_warps) <= 128]
    return keep or [min(configs, key=lambda c: c.kwargs["BLOCK_M"])]


@triton.jit
def _audio_attention_fwd(
    Q, K, V, O,
    stride_qn, stride_qh: tl.constexpr, stride_ql, stride_qd,
    stride_kn, stride_kh: tl.constexpr, stride_kl, stride_kd,
    stride_vn, stride_vh: tl.constexpr, stride_vl, stride_vd,
    stride_on, stride_oh: tl.constexpr, stride_ol, stride_od,
    H, L, TA, qk_scale, out_scale,
    HEAD_DIM: tl.constexpr, D_PAD: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, IEEE: tl.constexpr,
):
    # Head strides are constexpr so that h·stride keeps its power-of-two divisibility (vector loads at D=40).
    pid_m = tl.program_id(0)
    pid_nh = tl.program_id(1)
    n = (pid_nh // H).to(tl.int64)
    h = pid_nh % H

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, D_PAD)
    d_ok = offs_d < HEAD_DIM
    row_ok = offs_m < L

    q = tl.load(Q + n * stride_qn + h * stride_qh + offs_m[:, None] * stride_ql + offs_d[None, :] * stride_qd,
                mask=row_ok[:, None] & d_ok[None, :], other=0.0)
    k_base = K + n * stride_kn + h * stride_kh
    v_base = V + n * stride_vn + h * stride_vh

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, D_PAD], dtype=tl.float32)
    for start in range(0, TA, BLOCK_N):  # one iteration for Ta <= BLOCK_N
        cols = start + offs_n
        col_ok = cols < TA
        kt = tl.load(k_base + cols[None, :] * stride_kl + offs_d[:, None] * stride_kd,
                     mask=d_ok[:, None] & col_ok[None, :], other=0.0)  # [D_PAD, BLOCK_N]
        v = tl.load(v_base + cols[:, None] * stride_vl + offs_d[None, :] * stride_vd,
                    mask=col_ok[:, None] & d_ok[None, :], other=0.0)  # [BLOCK_N, D_PAD]
        s = _dot(q, kt, IEEE) * qk_scale
        s = tl.where(col_ok[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + _dot(p.to(v.dtype), v, IEEE)
        m_i = m_new

    out = acc * (out_scale / l_i)[:, None]
    tl.store(O + n * stride_on + h * stride_oh + offs_m[:, None] * stride_ol + offs_d[None, :] * stride_od,
             out.to(O.dtype.element_ty), mask=row_ok[:, None] & d_ok[None, :])


_kernel_tuned = triton.autotune(
    configs=_configs(), key=["L", "TA", "D_PAD"], prune_configs_by={"early_config_prune": _prune}
)(_audio_attention_fwd)


def audio_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out_scale: float = 1.0,
                    out: torch.Tensor | None = None, block_m: int | None = None) -> torch.Tensor:
    """out_scale · attention; q [N, H, L, D], k/v [N, H, Ta, D] (any strides) → [N, H, L, D].

    `out` may be a preallocated [N, H, L, D] tensor; by default it is a view of a fresh [N, L, H, D]
    buffer. `block_m` (power of two ≥ 16) skips autotuning.
    """
    if q.dim() != 4 or k.dim() != 4 or k.shape != v.shape or k.shape[:2] != q.shape[:2] or k.shape[3] != q.shape[3]:
        raise ValueError(f"q must be [N, H, L, D] and k, v [N, H, Ta, D]; got {tuple(q.shape)}, {tuple(k.shape)}, "
                         f"{tuple(v.shape)}")
    if len({q.dtype, k.dtype, v.dtype}) != 1 or q.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise ValueError(f"q, k, v must share one dtype of fp16 / bf16 / fp32; got {q.dtype}, {k.dtype}, {v.dtype}")
    n, heads, length, dim = q.shape
    ta = k.shape[2]
    if ta == 0:
        raise ValueError("audio attention needs at least one audio token per frame")
    if not q.is_cuda and os.environ.get("TRITON_INTERPRET") != "1":
        raise RuntimeError(
            "Triton attention kernels need CUDA tensors; on CPU set TRITON_INTERPRET=1 before triton is "
            "imported (interpreter, slow: tests only) or use the 'sdpa' attention kernels"
        )
    if out is None:
        out = torch.empty(n, length, heads, dim, device=q.device, dtype=q.dtype).transpose(1, 2)
    elif out.shape != q.shape or out.dtype != q.dtype:
        raise ValueError(f"out must be {tuple(q.shape)} {q.dtype}; got {tuple(out.shape)} {out.dtype}")
    if n == 0 or length == 0 or heads == 0:
        return out
    if n * heads > MAX_GRID_Y:
        raise ValueError(f"frames x heads = {n * heads} exceeds the launch grid limit {MAX_GRID_Y}; split the batch")

    d_pad = max(MIN_DOT, triton.next_power_of_2(dim))
    block_n = min(MAX_BLOCK_N, max(MIN_DOT, triton.next_power_of_2(ta)))
    args = (q, k, v, out, *q.stride(), *k.stride(), *v.stride(), *out.stride(), heads, length, ta,
            LOG2E / math.sqrt(dim), float(out_scale))
    meta = dict(HEAD_DIM=dim, D_PAD=d_pad, BLOCK_N=block_n, IEEE=q.dtype == torch.float32)
    if block_m is None and q.is_cuda:
        grid = lambda m: (triton.cdiv(length, m["BLOCK_M"]), n * heads)
        _kernel_tuned[grid](*args, **meta)
    else:
        bm = block_m or INTERPRET_BLOCK_M
        if bm < MIN_DOT or bm & (bm - 1):
            raise ValueError(f"block_m must be a power of two >= {MIN_DOT}; got {bm}")
        _audio_attention_fwd[(triton.cdiv(length, bm), n * heads)](*args, **meta, BLOCK_M=bm, num_warps=4,
                                                                   num_stages=2)
    return out


def audio_attention_torch(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out_scale: float = 1.0) -> torch.Tensor:
    """Plain torch: SDPA, then the scale."""
    return F.scaled_dot_product_attention(q, k, v) * out_scale


# EchoMimic v1 at 512², B=1, F=12: (L, C) per level and how many of the 16 spatial transformers run at it.
BENCH_SHAPES = [(4096, 320, 5), (1024, 640, 5), (256, 1280, 5), (64, 1280, 1)]
BENCH_HEADS = 8
BENCH_AUDIO_TOKENS = 50
BENCH_AUDIO_SCALE = 3.0


def bench(dtype: torch.dtype, frames: int = 12, batch: int = 1, shapes=BENCH_SHAPES, device="cuda") -> list[dict]:
    """Kernel + to_out with scaled bias vs SDPA + to_out + scale, both from [N, L, C] projections."""
    from triton.testing import do_bench

    rows = []
    heads, ta, scale = BENCH_HEADS, BENCH_AUDIO_TOKENS, BENCH_AUDIO_SCALE
    for length, c, count in shapes:
        n, d = batch * frames, c // heads
        q = torch.randn(n, length, c, device=device, dtype=dtype)
        k, v = (torch.randn(n, ta, c, device=device, dtype=dtype) for _ in range(2))
        to_out = torch.nn.Linear(c, c, device=device, dtype=dtype)
        split = lambda t: t.view(t.shape[0], t.shape[1], heads, d).transpose(1, 2)

        def sdpa():
            out = audio_attention_torch(split(q), split(k), split(v)).transpose(1, 2).reshape(n, length, c)
            return scale * to_out(out)

        def kernel():
            out = audio_attention(split(q), split(k), split(v), scale).transpose(1, 2).reshape(n, length, c)
            return F.linear(out, to_out.weight, to_out.bias * scale)

        with torch.no_grad():
            err = (kernel().float() - sdpa().float()).abs().max().item()
            t_sdpa = do_bench(sdpa, warmup=25, rep=200, return_mode="median")
            t_kernel = do_bench(kernel, warmup=25, rep=200, return_mode="median")
        rows.append(dict(L=length, C=c, D=d, Ta=ta, count=count, sdpa_ms=t_sdpa, kernel_ms=t_kernel,
                         speedup=t_sdpa / t_kernel, max_abs_diff=err))
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = bench_parser("python -m livehead.kernels.audio_attention", __doc__,
                          "time kernel + to_out against SDPA + to_out + scale")
    parser.add_argument("--frames", type=int, default=12)
    parsed = parse_bench_args(parser, argv)
    if parsed is None:
        return
    args, dtype = parsed
    rows = bench(dtype, args.frames, args.batch)
    print(f"audio attention (+ to_out), {torch.cuda.get_device_name()}, {args.dtype}, B={args.batch} "
          f"F={args.frames} H={BENCH_HEADS} Ta={BENCH_AUDIO_TOKENS}, triton {triton.__version__}, "
          f"torch {torch.__version__} (median ms)")
    print(f"{'L':>6} {'C':>5} {'D':>4} {'sdpa':>9} {'kernel':>9} {'speedup':>8} {'maxdiff':>9}")
    for r in rows:
        print(f"{r['L']:>6} {r['C']:>5} {r['D']:>4} {r['sdpa_ms']:>9.3f} {r['kernel_ms']:>9.3f} "
              f"{r['speedup']:>7.2f}x {r['max_abs_diff']:>9.2e}")
    total_s = sum(r["sdpa_ms"] * r["count"] for r in rows)
    total_k = sum(r["kernel_ms"] * r["count"] for r in rows)
    print(f"{'step (16 blocks)':>17} {total_s:>9.3f} {total_k:>9.3f} {total_s / total_k:>7.2f}x")
    save_json(args.json, "audio_attention", args.dtype, rows)


if __name__ == "__main__":
    main()

"""EMO reference attention: each frame attends over [its own tokens ; the avatar's reference tokens].

    out[n] = softmax(q[n] · [k[n] ; ref_k[b]]ᵀ / √D) · [v[n] ; ref_v[b]],   b = n // frames

Shapes: q, k, v `[N, H, L, D]` with N = B·F (frame-major within each batch item); ref_k, ref_v
`[B, H, Lr, D]`, shared by the F frames of batch item b (computed once per avatar, reused by every
window and step); out `[N, H, L, D]`. Any strides: the engine passes head-split views of `[N, L, C]`
projections, and the output is a view of a `[N, L, H, D]` buffer, so merging heads back to
`[N, L, C]` for `to_out` costs no copy.

Algorithm (FlashAttention-2 style forward): one program per (BLOCK_M queries, frame, head). It keeps
the running row max `m`, the running denominator `l` and an fp32 accumulator, and streams first the
frame's own keys, then the reference keys through ONE online softmax, so the concatenation
`[k ; ref_k]` (and the per-frame copy of the reference) is never built. Head sizes 40 / 80 / 160 are
padded to the next power of two (64 / 128 / 256) with masks; key tails that do not fill a block are
masked to -inf (`EVEN_N` skips that when L and Lr are multiples of BLOCK_N). Scores are scaled in
fp32 by log2(e)/√D and exponentiated with exp2. fp16 / bf16 inputs (fp32 is accepted too: exact
"ieee" dots, used by the CPU interpreter tests). Forward only.

FLOPs: 4·N·H·L·(L + Lr)·D (two matmuls). EchoMimic at 512² (B=1, F=12, H=8): L = Lr = 4096, D=40
→ 0.52 TFLOP for one block; over the 16 spatial transformers of one denoiser step ≈ 1.5 TFLOP more
than plain self-attention (see DESIGN §5).

Benchmark (CUDA only): `python -m livehead.kernels.reference_attention --bench [--dtype fp16|bf16]`; it compares
the kernel (with cached reference K/V) with the EchoMimic way: the bank repeated per frame,
concatenated to the frame's tokens, projected by to_k / to_v on every call, then SDPA.
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
MIN_DOT = 16  # tl.dot needs every block dim >= 16
# Fixed blocks when the kernel runs under the interpreter (CPU) or when the caller forces them.
INTERPRET_BLOCK_M = 128  # large blocks: the interpreter's cost is per program and per loop step
INTERPRET_BLOCK_N = 128
MAX_GRID_Y = 65535  # CUDA limit of the second launch-grid axis (frames x heads)


def _configs() -> list[triton.Config]:
    """Hopper-leaning autotune space (BLOCK_M, BLOCK_N, warps, stages); pruned per head size."""
    space = [
        (128, 64, 4, 3),
        (128, 64, 8, 3),
        (128, 128, 8, 3),
        (128, 32, 8, 2),
        (64, 64, 4, 3),
        (64, 128, 4, 3),
        (64, 64, 4, 2),
        (64, 32, 4, 2),
    ]
    return [triton.Config({"BLOCK_M": m, "BLOCK_N": n}, num_warps=w, num_stages=s) for m, n, w, s in space]


def _prune(configs, named_args, **kwargs):
    """Drop configs whose tiles cannot fit: shared memory (Q + staged K/V) and the fp32 accumulator."""
    args = {**named_args, **kwargs}
    d_pad, elt = args["D_PAD"], args["Q"].element_size()
    keep = []
    for c in configs:
        bm, bn = c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"]
        smem = elt * (bm * d_pad + c.num_stages * 2 * bn * d_pad)  # bytes: Q tile + staged K/V tiles
        acc_regs = bm * d_pad // (32 * c.num_warps)  # fp32 accumulator registers per thread
        if smem <= 192 * 1024 and acc_regs <= 128:
            keep.append(c)
    return keep or [min(configs, key=lambda c: c.kwargs["BLOCK_M"] * c.kwargs["BLOCK_N"])]


@triton.jit
def _attend_keys(acc, m_i, l_i, q, k_base, v_base, stride_kl, stride_kd, stride_vl, stride_vd,
                 n_keys, qk_scale, offs_d, d_mask,
                 BLOCK_N: tl.constexpr, EVEN_N: tl.constexpr, IEEE: tl.constexpr):
    """Stream `n_keys` keys/values (rows of k_base / v_base) through the online softmax."""
    offs_n = tl.arange(0, BLOCK_N)
    for start in range(0, n_keys, BLOCK_N):
        cols = start + offs_n
        if EVEN_N:
            kt = tl.load(k_base + cols[None, :] * stride_kl + offs_d[:, None] * stride_kd,
                         mask=d_mask[:, None], other=0.0)  # [D_PAD, BLOCK_N]
            v = tl.load(v_base + cols[:, None] * stride_vl + offs_d[None, :] * stride_vd,
                        mask=d_mask[None, :], other=0.0)  # [BLOCK_N, D_PAD]
        else:
            col_ok = cols < n_keys
            kt = tl.load(k_base + cols[None, :] * stride_kl + offs_d[:, None] * stride_kd,
                         mask=d_mask[:, None] & col_ok[None, :], other=0.0)
            v = tl.load(v_base + cols[:, None] * stride_vl + offs_d[None, :] * stride_vd,
                        mask=col_ok[:, None] & d_mask[None, :], other=0.0)
        s = _dot(q, kt, IEEE) * qk_scale  # [BLOCK_M, BLOCK_N], log2 units
        if not EVEN_N:
            s = tl.where(col_ok[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + _dot(p.to(v.dtype), v, IEEE)
        m_i = m_new
    return acc, m_i, l_i


@triton.jit
def _reference_attention_fwd(
    Q, K, V, RK, RV, O,
    stride_qn, stride_qh: tl.constexpr, stride_ql, stride_qd,
    stride_kn, stride_kh: tl.constexpr, stride_kl, stride_kd,
    stride_vn, stride_vh: tl.constexpr, stride_vl, stride_vd,
    stride_rkb, stride_rkh: tl.constexpr, stride_rkl, stride_rkd,
    stride_rvb, stride_rvh: tl.constexpr, stride_rvl, stride_rvd,
    stride_on, stride_oh: tl.constexpr, stride_ol, stride_od,
    H, L, LR, FRAMES, qk_scale,
    HEAD_DIM: tl.constexpr, D_PAD: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, EVEN_N: tl.constexpr, IEEE: tl.constexpr,
):
    # Head strides are constexpr (few values: D or C): with D = 40 the compiler then knows h·40 is a
    # multiple of 8 elements and can use 16-byte vector / async loads; a runtime 40 has no such hint.
    pid_m = tl.program_id(0)
    pid_nh = tl.program_id(1)
    n = pid_nh // H
    h = pid_nh % H
    b = n // FRAMES
    n64 = n.to(tl.int64)
    b64 = b.to(tl.int64)

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, D_PAD)
    d_mask = offs_d < HEAD_DIM
    row_ok = offs_m < L

    q_base = Q + n64 * stride_qn + h * stride_qh
    q = tl.load(q_base + offs_m[:, None] * stride_ql + offs_d[None, :] * stride_qd,
                mask=row_ok[:, None] & d_mask[None, :], other=0.0)

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, D_PAD], dtype=tl.float32)

    # 1) the frame's own keys, 2) the avatar's reference keys: one softmax over both.
    acc, m_i, l_i = _attend_keys(acc, m_i, l_i, q,
                                 K + n64 * stride_kn + h * stride_kh, V + n64 * stride_vn + h * stride_vh,
                                 stride_kl, stride_kd, stride_vl, stride_vd, L, qk_scale, offs_d, d_mask,
                                 BLOCK_N, EVEN_N, IEEE)
    acc, m_i, l_i = _attend_keys(acc, m_i, l_i, q,
                                 RK + b64 * stride_rkb + h * stride_rkh, RV + b64 * stride_rvb + h * stride_rvh,
                                 stride_rkl, stride_rkd, stride_rvl, stride_rvd, LR, qk_scale, offs_d, d_mask,
                                 BLOCK_N, EVEN_N, IEEE)

    out = acc / l_i[:, None]
    o_base = O + n64 * stride_on + h * stride_oh
    tl.store(o_base + offs_m[:, None] * stride_ol + offs_d[None, :] * stride_od,
             out.to(O.dtype.element_ty), mask=row_ok[:, None] & d_mask[None, :])


_kernel = triton.heuristics(
    {"EVEN_N": lambda a: a["L"] % a["BLOCK_N"] == 0 and a["LR"] % a["BLOCK_N"] == 0}
)(_reference_attention_fwd)
_kernel_tuned = triton.autotune(
    configs=_configs(), key=["L", "LR", "D_PAD"], prune_configs_by={"early_config_prune": _prune}
)(_kernel)


def _check_device(t: torch.Tensor) -> None:
    if not t.is_cuda and os.environ.get("TRITON_INTERPRET") != "1":
        raise RuntimeError(
            "Triton attention kernels need CUDA tensors; on CPU set TRITON_INTERPRET=1 before triton is "
            "imported (interpreter, slow: tests only) or use the 'sdpa' attention kernels"
        )


def reference_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    ref_k: torch.Tensor | None,
    ref_v: torch.Tensor | None,
    frames: int,
    out: torch.Tensor | None = None,
    block: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Reference attention; q/k/v [N, H, L, D], ref_k/ref_v [B, H, Lr, D] (N = B·frames) → [N, H, L, D].

    `ref_k = ref_v = None` gives plain self-attention (the CFG-unconditional pass). `out` may be a
    preallocated [N, H, L, D] tensor (any strides); by default it is a view of a fresh [N, L, H, D]
    buffer. `block = (BLOCK_M, BLOCK_N)` skips autotuning (the CPU interpreter always uses fixed blocks).
    """
    if q.dim() != 4 or k.shape != q.shape or v.shape != q.shape:
        raise ValueError(f"q, k, v must all be [N, H, L, D]; got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    n, heads, length, dim = q.shape
    if (ref_k is None) != (ref_v is None):
        raise ValueError("pass both ref_k and ref_v, or neither")
    if ref_k is None:
        ref_k = ref_v = k[:0]  # no reference keys: a zero-length loop, pointers never read
        n_ref = 0
    else:
        if ref_k.dim() != 4 or ref_v.shape != ref_k.shape or ref_k.shape[1] != heads or ref_k.shape[3] != dim:
            raise ValueError(f"ref_k/ref_v must be [B, H={heads}, Lr, D={dim}]; got {tuple(ref_k.shape)}, "
                             f"{tuple(ref_v.shape)}")
        if ref_k.shape[0] * frames != n:
            raise ValueError(f"q has {n} frames in its batch, expected ref batch {ref_k.shape[0]} x frames {frames}")
        n_ref = ref_k.shape[2]
    dtypes = {t.dtype for t in (q, k, v, ref_k, ref_v)}
    if len(dtypes) != 1 or q.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise ValueError(f"q, k, v, ref_k, ref_v must share one dtype of fp16 / bf16 / fp32; got {dtypes}")
    _check_device(q)
    if out is None:
        out = torch.empty(n, length, heads, dim, device=q.device, dtype=q.dtype).transpose(1, 2)
    elif out.shape != q.shape or out.dtype != q.dtype:
        raise ValueError(f"out must be {tuple(q.shape)} {q.dtype}; got {tuple(out.shape)} {out.dtype}")
    if n == 0 or length == 0:
        return out
    if n * heads > MAX_GRID_Y:
        raise ValueError(f"frames x heads = {n * heads} exceeds the launch grid limit {MAX_GRID_Y}; split the batch")

    d_pad = max(MIN_DOT, triton.next_power_of_2(dim))
    args = (q, k, v, ref_k, ref_v, out, *q.stride(), *k.stride(), *v.stride(), *ref_k.stride(), *ref_v.stride(),
            *out.stride(), heads, length, n_ref, max(frames, 1), LOG2E / math.sqrt(dim))
    meta = dict(HEAD_DIM=dim, D_PAD=d_pad, IEEE=q.dtype == torch.float32)
    if block is None and q.is_cuda:
        grid = lambda m: (triton.cdiv(length, m["BLOCK_M"]), n * heads)
        _kernel_tuned[grid](*args, **meta)
    else:
        bm, bn = block or (INTERPRET_BLOCK_M, INTERPRET_BLOCK_N)
        if bm < MIN_DOT or bn < MIN_DOT:
            raise ValueError(f"block sizes must be >= {MIN_DOT}; got {bm}, {bn}")
        _kernel[(triton.cdiv(length, bm), n * heads)](*args, **meta, BLOCK_M=bm, BLOCK_N=bn,
                                                      num_warps=4, num_stages=2)
    return out


def reference_attention_torch(q, k, v, ref_k, ref_v, frames: int) -> torch.Tensor:
    """Plain torch: repeat the reference per frame, concatenate, SDPA. Same shapes as the kernel."""
    if ref_k is not None:
        k = torch.cat([k, ref_k.repeat_interleave(frames, dim=0)], dim=2)
        v = torch.cat([v, ref_v.repeat_interleave(frames, dim=0)], dim=2)
    return F.scaled_dot_product_attention(q, k, v)


def reference_attention_naive(q: torch.Tensor, hidden: torch.Tensor, bank: torch.Tensor, to_k: torch.nn.Module,
                              to_v: torch.nn.Module, frames: int, heads: int) -> torch.Tensor:
    """The EchoMimic way: q [N, L, C], hidden (norm1 tokens) [N, L, C], bank [B, Lr, C] → [N, L, C].

    The bank is repeated per frame and concatenated to the frame's tokens; to_k / to_v project the
    concatenation on every call; then SDPA.
    """
    n, length, c = q.shape
    ctx = torch.cat([hidden, bank.repeat_interleave(frames, dim=0)], dim=1)
    k, v = to_k(ctx), to_v(ctx)
    d = c // heads
    split = lambda t: t.view(n, -1, heads, d).transpose(1, 2)
    out = F.scaled_dot_product_attention(split(q), split(k), split(v))
    return out.transpose(1, 2).reshape(n, length, c)


# EchoMimic v1 at 512²: (L, C) per level and how many of the 16 spatial transformers run at it.
BENCH_SHAPES = [(4096, 320, 5), (1024, 640, 5), (256, 1280, 5), (64, 1280, 1)]
BENCH_HEADS = 8
BENCH_FRAMES = 12


def bench(dtype: torch.dtype, batch: int = 1, frames: int = BENCH_FRAMES, shapes=BENCH_SHAPES,
          device: str = "cuda") -> list[dict]:
    """Time the kernel (own K/V projected, reference K/V cached) against the EchoMimic way."""
    from triton.testing import do_bench

    rows = []
    heads = BENCH_HEADS
    dev = device
    for length, c, count in shapes:
        d = c // heads
        n = batch * frames
        to_k = torch.nn.Linear(c, c, bias=False, device=dev, dtype=dtype)
        to_v = torch.nn.Linear(c, c, bias=False, device=dev, dtype=dtype)
        hidden = torch.randn(n, length, c, device=dev, dtype=dtype)
        q = torch.randn(n, length, c, device=dev, dtype=dtype)
        bank = torch.randn(batch, length, c, device=dev, dtype=dtype)
        with torch.no_grad():
            ref_k, ref_v = to_k(bank), to_v(bank)  # once per avatar
        split = lambda t: t.view(t.shape[0], -1, heads, d).transpose(1, 2)

        def naive():
            return reference_attention_naive(q, hidden, bank, to_k, to_v, frames, heads)

        def cached_cat():
            k, v = to_k(hidden), to_v(hidden)
            out = reference_attention_torch(split(q), split(k), split(v), split(ref_k), split(ref_v), frames)
            return out.transpose(1, 2).reshape(n, length, c)

        def kernel():
            k, v = to_k(hidden), to_v(hidden)
            out = reference_attention(split(q), split(k), split(v), split(ref_k), split(ref_v), frames)
            return out.transpose(1, 2).reshape(n, length, c)

        with torch.no_grad():
            ref_out = naive().float()
            err = (kernel().float() - ref_out).abs().max().item()
            t = {name: do_bench(fn, warmup=25, rep=200, return_mode="median")
                 for name, fn in (("naive", naive), ("cached_cat", cached_cat), ("kernel", kernel))}
        flops = 4 * n * heads * length * 2 * length * d
        rows.append(dict(L=length, Lr=length, C=c, D=d, count=count, naive_ms=t["naive"],
                         cached_cat_ms=t["cached_cat"], kernel_ms=t["kernel"], speedup=t["naive"] / t["kernel"],
                         attn_tflops=flops / t["kernel"] / 1e9, max_abs_diff=err))
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = bench_parser("python -m livehead.kernels.reference_attention", __doc__,
                          "time kernel vs EchoMimic's repeat+cat+project+SDPA")
    parser.add_argument("--frames", type=int, default=BENCH_FRAMES)
    parsed = parse_bench_args(parser, argv)
    if parsed is None:
        return
    args, dtype = parsed
    rows = bench(dtype, args.batch, args.frames)
    print(f"reference attention, {torch.cuda.get_device_name()}, {args.dtype}, B={args.batch} F={args.frames} "
          f"H={BENCH_HEADS}, triton {triton.__version__}, torch {torch.__version__} (median ms)")
    print(f"{'L=Lr':>6} {'C':>5} {'D':>4} {'naive':>9} {'cat+sdpa':>9} {'kernel':>9} {'speedup':>8} "
          f"{'TFLOP/s':>8} {'maxdiff':>9}")
    for r in rows:
        print(f"{r['L']:>6} {r['C']:>5} {r['D']:>4} {r['naive_ms']:>9.3f} {r['cached_cat_ms']:>9.3f} "
              f"{r['kernel_ms']:>9.3f} {r['speedup']:>7.2f}x {r['attn_tflops']:>8.1f} {r['max_abs_diff']:>9.2e}")
    total = {k: sum(r[k] * r["count"] for r in rows) for k in ("naive_ms", "cached_cat_ms", "kernel_ms")}
    print(f"{'step (16 blocks)':>17} {total['naive_ms']:>9.3f} {total['cached_cat_ms']:>9.3f} "
          f"{total['kernel_ms']:>9.3f} {total['naive_ms'] / total['kernel_ms']:>7.2f}x")
    save_json(args.json, "reference_attention", args.dtype, rows)


if __name__ == "__main__":
    main()

"""AnimateDiff temporal self-attention: many very short sequences (the frames at each spatial position).

    out[s, :, f] = softmax(q[s, :, f] · k[s, :, :]ᵀ / √D) · v[s, :, :]    for every head

Shapes: q, k, v `[S, H, F, D]` with S = B·h·w positions and F ≤ 32 frames (12–16 with motion frames),
or `[B, L, H, F, D]` (S = B·L as two index dims); out has the same shape. Any strides: the engine keeps
its video tokens as `[B·F, L, C]` and passes `x.view(B, F, L, H, D).permute(0, 2, 3, 1, 4)` (no copy,
no regrouping to `[B·L, F, C]`); the output takes q's memory layout, so merging heads back is a view.

Algorithm: one program per (block of sequences, head). The G = BLOCK_M // F sequences of a block are
packed back to back as BLOCK_M rows (row r = frame r % F of sequence r // F, no per-sequence padding
to a power of two), so a single [BLOCK_M, D_PAD] × [D_PAD, BLOCK_M] tl.dot scores all of them at once;
a block-diagonal mask (same sequence) keeps each row to its own sequence's keys. That wastes tensor-core
FLOPs (× G) but the op is memory bound (≈ 4·F·D FLOPs per 6·D bytes loaded), and it keeps every dot
≥ 16 in each dim whatever F is. All keys of a sequence sit in the block, so the softmax is exact in one
pass (row max, exp2, sum) with fp32 scores; head sizes 40 / 80 / 160 are padded to 64 / 128 / 256 with
masks. fp16 / bf16 inputs (fp32 accepted: exact "ieee" dots, for the CPU interpreter tests). Forward only.

FLOPs (useful): 4·S·H·F²·D = 4·S·F²·C. Bytes: ≈ 4·S·F·C·itemsize (q, k, v read, out written).

Benchmark (CUDA only): `python -m livehead.kernels.temporal_attention --bench [--dtype fp16|bf16] [--frames 12 16]`:
the attention core against SDPA on the same projections, and a whole temporal attention from
`[B·F, L, C]` tokens against the AnimateDiff way (regroup to `[B·L, F, C]`, SDPA, regroup back).
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
MAX_FRAMES = 128  # the largest BLOCK_M below: one sequence must fit in a block
INTERPRET_BLOCK_M = 256  # CPU interpreter only (its cost is per program: few, large blocks); too big for a GPU


def _configs() -> list[triton.Config]:
    """(BLOCK_M rows = packed sequences × frames, warps); no key loop, so one stage."""
    space = [(32, 2), (32, 4), (64, 4), (64, 8), (128, 4), (128, 8)]
    return [triton.Config({"BLOCK_M": m}, num_warps=w, num_stages=1) for m, w in space]


def _prune(configs, named_args, **kwargs):
    """Keep blocks that hold at least one whole sequence and whose q/k/v tiles fit comfortably."""
    args = {**named_args, **kwargs}
    frames, d_pad, elt = args["FRAMES"], args["D_PAD"], args["Q"].element_size()
    keep = [c for c in configs if c.kwargs["BLOCK_M"] >= frames and c.kwargs["BLOCK_M"] * d_pad * elt <= 128 * 128 * 2]
    return keep or [max(configs, key=lambda c: c.kwargs["BLOCK_M"])]


@triton.jit
def _temporal_attention_fwd(
    Q, K, V, O,
    stride_qo, stride_qi, stride_qh: tl.constexpr, stride_qf, stride_qd,
    stride_ko, stride_ki, stride_kh: tl.constexpr, stride_kf, stride_kd,
    stride_vo, stride_vi, stride_vh: tl.constexpr, stride_vf, stride_vd,
    stride_oo, stride_oi, stride_oh: tl.constexpr, stride_of, stride_od,
    S, S_INNER, H, qk_scale,
    FRAMES: tl.constexpr, HEAD_DIM: tl.constexpr, D_PAD: tl.constexpr,
    BLOCK_M: tl.constexpr, IEEE: tl.constexpr,
):
    # Head strides are constexpr so that h·stride keeps its power-of-two divisibility (vector loads at D=40).
    pid = tl.program_id(0)  # one flat axis (no 65535 limit), heads fastest: neighbours share [F, C] rows
    h = pid % H
    blk = pid // H
    SEQS: tl.constexpr = BLOCK_M // FRAMES

    rows = tl.arange(0, BLOCK_M)
    local = rows // FRAMES  # sequence within the block (SEQS for the unused tail rows)
    frame = rows % FRAMES
    seq = blk * SEQS + local
    row_ok = (local < SEQS) & (seq < S)
    # sequence = (outer, inner): the [B, L] positions of [B·F, L, C] tokens; 32-bit division, 64-bit offsets
    outer = (seq // S_INNER).to(tl.int64)
    inner = (seq % S_INNER).to(tl.int64)
    offs_d = tl.arange(0, D_PAD)
    d_ok = offs_d < HEAD_DIM
    mask = row_ok[:, None] & d_ok[None, :]

    q_rows = outer * stride_qo + inner * stride_qi + h * stride_qh + frame * stride_qf
    k_rows = outer * stride_ko + inner * stride_ki + h * stride_kh + frame * stride_kf
    v_rows = outer * stride_vo + inner * stride_vi + h * stride_vh + frame * stride_vf
    q = tl.load(Q + q_rows[:, None] + offs_d[None, :] * stride_qd, mask=mask, other=0.0)  # [BLOCK_M, D_PAD]
    kt = tl.load(K + k_rows[None, :] + offs_d[:, None] * stride_kd,
                 mask=d_ok[:, None] & row_ok[None, :], other=0.0)  # [D_PAD, BLOCK_M]
    v = tl.load(V + v_rows[:, None] + offs_d[None, :] * stride_vd, mask=mask, other=0.0)  # [BLOCK_M, D_PAD]

    s = _dot(q, kt, IEEE) * qk_scale  # [BLOCK_M, BLOCK_M], log2 units
    # Each row sees only its own sequence (every row, tail rows included, sees at least itself).
    s = tl.where(local[:, None] == local[None, :], s, float("-inf"))
    m = tl.max(s, 1)
    p = tl.exp2(s - m[:, None])
    l_i = tl.sum(p, 1)
    out = _dot(p.to(v.dtype), v, IEEE) / l_i[:, None]
    o_rows = outer * stride_oo + inner * stride_oi + h * stride_oh + frame * stride_of
    tl.store(O + o_rows[:, None] + offs_d[None, :] * stride_od, out.to(O.dtype.element_ty), mask=mask)


_kernel_tuned = triton.autotune(
    configs=_configs(), key=["S", "FRAMES", "D_PAD"], prune_configs_by={"early_config_prune": _prune}
)(_temporal_attention_fwd)


def _seq_strides(t: torch.Tensor) -> tuple[int, ...]:
    """(outer, inner, head, frame, dim) strides of a [S, H, F, D] or [B, L, H, F, D] tensor."""
    return tuple(t.stride()) if t.dim() == 5 else (0, *t.stride())


def temporal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor | None = None,
                       block_m: int | None = None) -> torch.Tensor:
    """Self-attention over frames; q/k/v [S, H, F, D] or [B, L, H, F, D] (any strides) → same shape.

    The 5-D form lets a caller holding [B·F, L, C] tokens pass `x.view(B, F, L, H, D).permute(0, 2, 3, 1, 4)`
    without regrouping to [B·L, F, C]. `out` may be preallocated (any strides); by default it has q's
    memory layout when q is dense (so merging heads back is a view), else it is contiguous.
    `block_m` (rows per program: a power of two ≥ max(16, F)) skips autotuning.
    """
    if q.dim() not in (4, 5) or k.shape != q.shape or v.shape != q.shape:
        raise ValueError(f"q, k, v must all be [S, H, F, D] or [B, L, H, F, D]; got {tuple(q.shape)}, "
                         f"{tuple(k.shape)}, {tuple(v.shape)}")
    if len({q.dtype, k.dtype, v.dtype}) != 1 or q.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise ValueError(f"q, k, v must share one dtype of fp16 / bf16 / fp32; got {q.dtype}, {k.dtype}, {v.dtype}")
    heads, frames, dim = q.shape[-3:]
    s_inner = q.shape[-4]
    s = s_inner * (q.shape[0] if q.dim() == 5 else 1)
    if frames > MAX_FRAMES:
        raise ValueError(f"temporal attention supports at most {MAX_FRAMES} frames, got {frames}")
    if not q.is_cuda and os.environ.get("TRITON_INTERPRET") != "1":
        raise RuntimeError(
            "Triton attention kernels need CUDA tensors; on CPU set TRITON_INTERPRET=1 before triton is "
            "imported (interpreter, slow: tests only) or use the 'sdpa' attention kernels"
        )
    if out is None:
        out = torch.empty_like(q)  # preserves a dense q's strides
    elif out.shape != q.shape or out.dtype != q.dtype:
        raise ValueError(f"out must be {tuple(q.shape)} {q.dtype}; got {tuple(out.shape)} {out.dtype}")
    if s == 0 or frames == 0 or heads == 0:
        return out

    d_pad = max(MIN_DOT, triton.next_power_of_2(dim))
    args = (q, k, v, out, *_seq_strides(q), *_seq_strides(k), *_seq_strides(v), *_seq_strides(out),
            s, s_inner, heads, LOG2E / math.sqrt(dim))
    meta = dict(FRAMES=frames, HEAD_DIM=dim, D_PAD=d_pad, IEEE=q.dtype == torch.float32)
    if block_m is None and q.is_cuda:
        grid = lambda m: (heads * triton.cdiv(s, m["BLOCK_M"] // frames),)
        _kernel_tuned[grid](*args, **meta)
    else:
        bm = block_m or max(INTERPRET_BLOCK_M, triton.next_power_of_2(frames))
        if bm < max(MIN_DOT, frames) or bm & (bm - 1) or (q.is_cuda and bm > MAX_FRAMES):
            raise ValueError(f"block_m must be a power of two >= max(16, frames={frames})"
                             f"{f' and <= {MAX_FRAMES} on CUDA' if q.is_cuda else ''}; got {bm}")
        _temporal_attention_fwd[(heads * triton.cdiv(s, bm // frames),)](*args, **meta, BLOCK_M=bm, num_warps=4,
                                                                         num_stages=1)
    return out


def temporal_attention_torch(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Plain torch (SDPA) on the same [S, H, F, D] or [B, L, H, F, D] tensors."""
    return F.scaled_dot_product_attention(q, k, v)


# EchoMimic v1 at 512², B=1: (L = h·w, C) per motion-module level and how many of the 21 modules run at it.
BENCH_SHAPES = [(4096, 320, 5), (1024, 640, 5), (256, 1280, 5), (64, 1280, 6)]
BENCH_HEADS = 8


def bench(dtype: torch.dtype, frames: int = 12, batch: int = 1, shapes=BENCH_SHAPES, device="cuda") -> list[dict]:
    """Two comparisons per level, both ending in the layout the caller needs.

    core: q/k/v already projected as [S, F, C] → SDPA (+ head-merge copy) vs the kernel on views.
    module: a whole temporal attention from video tokens [B·F, L, C] (PE add, to_q/k/v, attention,
    to_out, back to [B·F, L, C]) — SDPA regroups to [B·L, F, C] and back (the AnimateDiff way), the
    kernel reads and writes the [B·F, L, C] layout through 5-D views.
    """
    from triton.testing import do_bench

    rows = []
    heads = BENCH_HEADS
    for length, c, count in shapes:
        s, d, nf = batch * length, c // heads, batch * frames
        q, k, v = (torch.randn(s, frames, c, device=device, dtype=dtype) for _ in range(3))
        split = lambda t: t.view(s, frames, heads, d).transpose(1, 2)
        tokens = torch.randn(nf, length, c, device=device, dtype=dtype)
        pe = torch.randn(1, frames, c, device=device, dtype=dtype)
        to_q, to_k, to_v, to_out = (torch.nn.Linear(c, c, bias=i == 3, device=device, dtype=dtype) for i in range(4))

        def core_sdpa():
            return temporal_attention_torch(split(q), split(k), split(v)).transpose(1, 2).reshape(s, frames, c)

        def core_kernel():
            return temporal_attention(split(q), split(k), split(v)).transpose(1, 2).reshape(s, frames, c)

        def module_sdpa():
            x = tokens.view(batch, frames, length, c).transpose(1, 2).reshape(s, frames, c) + pe
            out = core_attn(to_q(x), to_k(x), to_v(x))
            return to_out(out).view(batch, length, frames, c).transpose(1, 2).reshape(nf, length, c)

        def core_attn(qq, kk, vv):
            sp = lambda t: t.view(s, frames, heads, d).transpose(1, 2)
            return F.scaled_dot_product_attention(sp(qq), sp(kk), sp(vv)).transpose(1, 2).reshape(s, frames, c)

        def module_kernel():
            x = tokens.view(batch, frames, length, c) + pe[:, :, None]
            sp = lambda t: t.view(batch, frames, length, heads, d).permute(0, 2, 3, 1, 4)
            out = temporal_attention(sp(to_q(x)), sp(to_k(x)), sp(to_v(x)))
            return to_out(out.permute(0, 3, 1, 2, 4).reshape(nf, length, c))

        with torch.no_grad():
            err = (core_kernel().float() - core_sdpa().float()).abs().max().item()
            err = max(err, (module_kernel().float() - module_sdpa().float()).abs().max().item())
            t = {fn.__name__: do_bench(fn, warmup=25, rep=200, return_mode="median")
                 for fn in (core_sdpa, core_kernel, module_sdpa, module_kernel)}
        gbytes = 4 * s * frames * c * q.element_size() / 1e9
        rows.append(dict(S=s, F=frames, C=c, D=d, count=count, **{f"{k}_ms": x for k, x in t.items()},
                         core_speedup=t["core_sdpa"] / t["core_kernel"],
                         module_speedup=t["module_sdpa"] / t["module_kernel"],
                         kernel_gbps=gbytes / (t["core_kernel"] / 1e3), max_abs_diff=err))
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = bench_parser("python -m livehead.kernels.temporal_attention", __doc__, "time the kernel against SDPA")
    parser.add_argument("--frames", type=int, nargs="+", default=[12, 16])
    parsed = parse_bench_args(parser, argv)
    if parsed is None:
        return
    args, dtype = parsed
    print(f"temporal attention, {torch.cuda.get_device_name()}, {args.dtype}, B={args.batch} H={BENCH_HEADS}, "
          f"triton {triton.__version__}, torch {torch.__version__} (median ms; core = attention on projected "
          "q/k/v, module = PE + projections + attention + layout)")
    print(f"{'S':>6} {'F':>3} {'C':>5} {'D':>4} {'core sdpa':>10} {'kernel':>9} {'speedup':>8} {'GB/s':>6} "
          f"{'mod sdpa':>9} {'kernel':>9} {'speedup':>8} {'maxdiff':>9}")
    all_rows = []
    for frames in args.frames:
        rows = bench(dtype, frames, args.batch)
        all_rows.extend(rows)
        for r in rows:
            print(f"{r['S']:>6} {r['F']:>3} {r['C']:>5} {r['D']:>4} {r['core_sdpa_ms']:>10.3f} "
                  f"{r['core_kernel_ms']:>9.3f} {r['core_speedup']:>7.2f}x {r['kernel_gbps']:>6.0f} "
                  f"{r['module_sdpa_ms']:>9.3f} {r['module_kernel_ms']:>9.3f} {r['module_speedup']:>7.2f}x "
                  f"{r['max_abs_diff']:>9.2e}")
        tot = {k: sum(r[k] * r["count"] for r in rows)
               for k in ("core_sdpa_ms", "core_kernel_ms", "module_sdpa_ms", "module_kernel_ms")}
        print(f"{'step (21 modules)':>21} {tot['core_sdpa_ms']:>10.3f} {tot['core_kernel_ms']:>9.3f} "
              f"{tot['core_sdpa_ms'] / tot['core_kernel_ms']:>7.2f}x {'':>6} {tot['module_sdpa_ms']:>9.3f} "
              f"{tot['module_kernel_ms']:>9.3f} {tot['module_sdpa_ms'] / tot['module_kernel_ms']:>7.2f}x")
    save_json(args.json, "temporal_attention", args.dtype, all_rows)


if __name__ == "__main__":
    main()

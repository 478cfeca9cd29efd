"""Piecewise-affine backward displacement on a grid of nodes: the photo warp's per-frame map, on the CPU.

A triangle mesh moves from `src` (photo positions) to `dst` (output positions). For every node of a regular
grid over the output, the kernel finds the triangle of `dst` that covers it and writes the displacement
photo position - node position of that triangle's affine map there (0 where no triangle covers the node).
Node (ix, iy) sits at output pixel ((ix + 0.5)·sx - 0.5, (iy + 0.5)·sy - 0.5); nodes within EDGE_EPS (node
units) of an edge count as inside; where triangles overlap, the later one in `triangles` wins.

Shapes: src, dst float64 `[P, 2]` (x, y), triangles int `[T, 3]` → float32 `[ny, nx, 2]` (dx, dy).

Algorithm (scan conversion): per triangle, the node rows its y range spans; per row, the exact x interval
where the row crosses its three edges; per node in it, the affine map K·(g - d0) + c. The numba kernel loops
over exactly that; `displacement_reference` is the same computation vectorised with numpy (one array op per
step over every row and node of every triangle), and the two agree bit for bit (same float64 operations in
the same order, no fused multiply-add).

Why a kernel: the renderer draws one map per output frame. On a mesh of ~1100 triangles over 128 × 128 nodes
(the renderer's grid at any size from 256 px) the numpy version takes 2.1 ms, the kernel 0.31 ms on one core of
a 2-core AMD EPYC (`python -m livehead.kernels.warp_scan --bench --json benchmarks/results/warp_scan_cpu.json`).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time

import numpy as np

EDGE_EPS = 1e-4  # nodes this close to a triangle's edge (in node units) count as inside
MIN_DET = 1e-6  # triangles of dst with |2·area| below this (px²) are degenerate: skipped


def triangle_maps(src: np.ndarray, dst: np.ndarray, triangles: np.ndarray):
    """Per triangle, the affine output → photo map as displacement = c + K·(g - d0), K = J - I.
    src, dst [P, 2] → (d0 [T, 2], c [T, 2], K00, K01, K10, K11 [T], valid [T])."""
    s, d = src[triangles], dst[triangles]  # [T, 3, 2]
    d0, s0 = d[:, 0], s[:, 0]
    e1, e2 = d[:, 1] - d0, d[:, 2] - d0
    f1, f2 = s[:, 1] - s0, s[:, 2] - s0
    det = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    valid = np.abs(det) > MIN_DET
    inv = np.where(valid, 1.0 / np.where(valid, det, 1.0), 0.0)
    a, b, c, e = e2[:, 1] * inv, -e2[:, 0] * inv, -e1[:, 1] * inv, e1[:, 0] * inv  # barycentric rows
    k00 = f1[:, 0] * a + f2[:, 0] * c - 1.0
    k01 = f1[:, 0] * b + f2[:, 0] * e
    k10 = f1[:, 1] * a + f2[:, 1] * c
    k11 = f1[:, 1] * b + f2[:, 1] * e - 1.0
    return d0, s0 - d0, k00, k01, k10, k11, valid


_compiled = None  # _scan compiled by numba on the first `displacement` (see `kernel`)


def kernel():
    """`_scan` compiled (numba, cached on disk beside this file or in the user's cache). numba is imported here,
    not with the module: importing it and loading the machine code costs a process about 120 MB, which only a
    process that renders should pay (a live server renders in its render process)."""
    global _compiled
    if _compiled is None:
        import numba

        _compiled = numba.njit(cache=True, nogil=True)(_scan)
    return _compiled


def _scan(s, d, nx, ny, sx, sy, eps, disp):
    """s, d float64 [T, 3, 2]: each triangle's photo and output corners; fills disp float32 [ny, nx, 2]."""
    for t in range(d.shape[0]):
        # the affine output → photo map, as `triangle_maps` computes it (same operations, same order)
        d0x, d0y = d[t, 0, 0], d[t, 0, 1]
        e1x, e1y, e2x, e2y = d[t, 1, 0] - d0x, d[t, 1, 1] - d0y, d[t, 2, 0] - d0x, d[t, 2, 1] - d0y
        f1x, f1y = s[t, 1, 0] - s[t, 0, 0], s[t, 1, 1] - s[t, 0, 1]
        f2x, f2y = s[t, 2, 0] - s[t, 0, 0], s[t, 2, 1] - s[t, 0, 1]
        det = e1x * e2y - e1y * e2x
        if not abs(det) > MIN_DET:
            continue
        inv = 1.0 / det
        a, b, c, e = e2y * inv, -e2x * inv, -e1y * inv, e1x * inv
        k00, k01 = f1x * a + f2x * c - 1.0, f1x * b + f2x * e
        k10, k11 = f1y * a + f2y * c, f1y * b + f2y * e - 1.0
        cx, cy = s[t, 0, 0] - d0x, s[t, 0, 1] - d0y
        # scan conversion: the node rows the triangle spans, each row's x interval, its nodes
        y_lo = min(d[t, 0, 1], d[t, 1, 1], d[t, 2, 1])
        y_hi = max(d[t, 0, 1], d[t, 1, 1], d[t, 2, 1])
        iy0 = min(max(math.ceil((y_lo + 0.5) / sy - 0.5), 0), ny)
        iy1 = min(max(math.floor((y_hi + 0.5) / sy - 0.5), -1), ny - 1)
        for iy in range(iy0, iy1 + 1):
            y = (iy + 0.5) * sy - 0.5
            x_min, x_max = np.inf, -np.inf
            for k in range(3):
                px, py = d[t, k, 0], d[t, k, 1]
                qx, qy = d[t, (k + 1) % 3, 0], d[t, (k + 1) % 3, 1]
                dy = qy - py
                if min(py, qy) <= y and y <= max(py, qy) and abs(dy) > 1e-9:
                    x = px + (y - py) * (qx - px) / dy
                    x_min, x_max = min(x_min, x), max(x_max, x)
            if x_min > x_max:
                continue
            ix0 = min(max(math.ceil((x_min + 0.5) / sx - 0.5 - eps), 0), nx)
            ix1 = min(max(math.floor((x_max + 0.5) / sx - 0.5 + eps), -1), nx - 1)
            gy = (iy + 0.5) * sy - 0.5 - d0y
            for ix in range(ix0, ix1 + 1):
                gx = (ix + 0.5) * sx - 0.5 - d0x
                disp[iy, ix, 0] = cx + k00 * gx + k01 * gy
                disp[iy, ix, 1] = cy + k10 * gx + k11 * gy


def displacement(src: np.ndarray, dst: np.ndarray, triangles: np.ndarray, nx: int, ny: int, sx: float,
                 sy: float) -> np.ndarray:
    """The kernel: src, dst float64 [P, 2], triangles int [T, 3] → float32 [ny, nx, 2] (see the module doc).
    The first call in a process compiles it (about a second; cached on disk for the next process)."""
    disp = np.zeros((ny, nx, 2), np.float32)
    corners = [np.ascontiguousarray(points[triangles], dtype=np.float64) for points in (src, dst)]
    kernel()(*corners, nx, ny, float(sx), float(sy), EDGE_EPS, disp)
    return disp


def displacement_reference(src: np.ndarray, dst: np.ndarray, triangles: np.ndarray, nx: int, ny: int,
                           sx: float, sy: float) -> np.ndarray:
    """`displacement` in numpy: every row of every triangle, then every node of every row, as arrays."""
    d = dst[triangles]  # [T, 3, 2] output positions
    d0, const, k00, k01, k10, k11, valid = triangle_maps(src, dst, triangles)
    y_lo, y_hi = d[:, :, 1].min(1), d[:, :, 1].max(1)
    iy0 = np.clip(np.ceil((y_lo + 0.5) / sy - 0.5), 0, ny).astype(np.int64)
    iy1 = np.clip(np.floor((y_hi + 0.5) / sy - 0.5), -1, ny - 1).astype(np.int64)
    n_rows = np.where(valid, np.maximum(iy1 - iy0 + 1, 0), 0)
    tri = np.repeat(np.arange(len(d)), n_rows)
    iy = np.repeat(iy0 - np.cumsum(n_rows) + n_rows, n_rows) + np.arange(len(tri))
    y = (iy + 0.5) * sy - 0.5
    dt = d[tri]  # [R, 3, 2]
    x_min, x_max = np.full(len(tri), np.inf), np.full(len(tri), -np.inf)
    for k in range(3):
        p, q = dt[:, k], dt[:, (k + 1) % 3]
        dy = q[:, 1] - p[:, 1]
        crosses = (np.minimum(p[:, 1], q[:, 1]) <= y) & (y <= np.maximum(p[:, 1], q[:, 1])) & (np.abs(dy) > 1e-9)
        x = p[:, 0] + (y - p[:, 1]) * (q[:, 0] - p[:, 0]) / np.where(crosses, dy, 1.0)
        x_min, x_max = np.where(crosses, np.minimum(x_min, x), x_min), np.where(crosses, np.maximum(x_max, x), x_max)
    # a row crossing no edge keeps inf bounds: clipped to an empty interval
    ix0 = np.clip(np.ceil((x_min + 0.5) / sx - 0.5 - EDGE_EPS), 0, nx).astype(np.int64)
    ix1 = np.clip(np.floor((x_max + 0.5) / sx - 0.5 + EDGE_EPS), -1, nx - 1).astype(np.int64)
    n_cols = np.maximum(ix1 - ix0 + 1, 0)
    t = np.repeat(tri, n_cols)
    iyc = np.repeat(iy, n_cols)
    ix = np.repeat(ix0 - np.cumsum(n_cols) + n_cols, n_cols) + np.arange(len(t))
    gx = (ix + 0.5) * sx - 0.5 - d0[t, 0]
    gy = (iyc + 0.5) * sy - 0.5 - d0[t, 1]
    disp = np.zeros((ny * nx, 2), np.float32)
    flat = iyc * nx + ix
    disp[flat, 0] = const[t, 0] + k00[t] * gx + k01[t] * gy
    disp[flat, 1] = const[t, 1] + k10[t] * gx + k11[t] * gy
    return disp.reshape(ny, nx, 2)


def random_mesh(rng: np.random.Generator, size: int, points: int = 400,
                extra: float = 0.1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A test and benchmark mesh: points on a jittered grid over [0, size]² moved by a smooth field, the grid's
    triangles plus `extra` as many random ones (overlapping, some degenerate) → (src [P, 2], dst [P, 2],
    triangles [T, 3])."""
    side = max(2, int(round(math.sqrt(points))))
    xs = np.linspace(-2.0, size + 2.0, side)
    gx, gy = np.meshgrid(xs, xs)
    dst = np.stack([gx.ravel(), gy.ravel()], 1) + rng.uniform(-0.3, 0.3, (side * side, 2)) * (xs[1] - xs[0])
    src = dst + 3.0 * np.stack([np.sin(dst[:, 1] / size * 6.0), np.cos(dst[:, 0] / size * 5.0)], 1)
    quads = [(r * side + c, r * side + c + 1, (r + 1) * side + c, (r + 1) * side + c + 1)
             for r in range(side - 1) for c in range(side - 1)]
    triangles = [t for a, b, c, e in quads for t in ((a, b, c), (b, e, c))]
    n = len(dst)
    overlapping = rng.integers(0, n, (int(len(triangles) * extra), 3))  # some degenerate (repeated vertices)
    return src, dst, np.concatenate([np.array(triangles), overlapping]).astype(np.int64)


def bench(size: int, repeats: int = 200) -> dict:
    """Median ms of the kernel and the numpy reference at a size² output (128 × 128 nodes, as the renderer's)
    on a mesh of ~1100 triangles tiling it (as the renderer's warp mesh, which also tiles the frame)."""
    rng = np.random.default_rng(0)
    src, dst, triangles = random_mesh(rng, size, points=576, extra=0.0)
    nx = ny = max(2, round(size / max(2.0, size / 128)))
    sx = sy = size / nx
    args = (src, dst, triangles, nx, ny, sx, sy)
    displacement(*args)  # compile
    times = {}
    for name, fn in (("kernel", displacement), ("reference", displacement_reference)):
        runs = []
        for _ in range(repeats):
            t = time.perf_counter()
            fn(*args)
            runs.append(time.perf_counter() - t)
        times[name] = float(np.median(runs) * 1e3)
    return {"size": size, "nodes": nx * ny, "triangles": len(triangles), "kernel_ms": round(times["kernel"], 4),
            "reference_ms": round(times["reference"], 4),
            "speedup": round(times["reference"] / times["kernel"], 2)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m livehead.kernels.warp_scan",
                                     description="The warp's displacement map: numba kernel against numpy.")
    parser.add_argument("--bench", action="store_true", help="time the kernel and the reference (CPU)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--json", default=None, help="also save the rows here")
    args = parser.parse_args(argv)
    if not args.bench:
        parser.print_help()
        return
    rows = [bench(size) for size in args.sizes]
    for row in rows:
        print(row)
    if args.json:
        import numba

        from livehead.kernels.bench_io import cpu_name

        info = dict(kernel="warp_scan", device=dict(cpu=cpu_name(), logical_cores=os.cpu_count()),
                    python=platform.python_version(), numba=numba.__version__, numpy=np.__version__,
                    timing="median of 200 calls, ms, one thread", rows=rows)
        with open(args.json, "w") as f:
            json.dump(info, f, indent=2)
        print(f"saved {args.json}")


if __name__ == "__main__":
    main()

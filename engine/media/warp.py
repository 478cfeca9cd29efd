"""Piecewise-affine image warps over a Delaunay triangulation of landmarks (the synthetic talker, face
morphs and the photo renderer move a portrait this way).

    tris = delaunay_triangles(points, side)                 # once per portrait
    moved = piecewise_affine_warp(image, points, target, tris)
"""

from __future__ import annotations

import cv2
import numpy as np


def border_points(side: int, per_edge: int = 8) -> np.ndarray:
    """Fixed points along the edges of a side² image (corners once) → float64 [4·per_edge, 2]."""
    e = np.linspace(-0.5, side - 0.5, per_edge + 1)
    pts = [(x, -0.5) for x in e] + [(x, side - 0.5) for x in e] + \
          [(-0.5, y) for y in e[1:-1]] + [(side - 0.5, y) for y in e[1:-1]]
    return np.array(pts, np.float64)



def delaunay_triangles(pts: np.ndarray, side: int) -> np.ndarray:
    """Delaunay triangles of points [N, 2] in a side² image → int64 [T, 3] indices (zero-area ones dropped;
    a duplicated point keeps its first index)."""
    sub = cv2.Subdiv2D((-4, -4, side + 8, side + 8))
    lookup: dict[tuple[float, float], int] = {}
    for i, (x, y) in enumerate(pts):
        key = (float(np.float32(x)), float(np.float32(y)))
        if key in lookup:
            continue
        lookup[key] = i
        sub.insert(key)
    tris = []
    for t in sub.getTriangleList().reshape(-1, 3, 2):
        idx = [lookup.get((float(np.float32(x)), float(np.float32(y)))) for x, y in t]
        if None not in idx:
            tris.append(idx)
    tris = np.array(tris, dtype=np.int64).reshape(-1, 3)
    a, b, c = pts[tris[:, 0]], pts[tris[:, 1]], pts[tris[:, 2]]
    area = 0.5 * ((b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0]))
    return tris[np.abs(area) > 1e-3]



def piecewise_affine_warp(image: np.ndarray, src: np.ndarray, target: np.ndarray, tris: np.ndarray,
                          grid: np.ndarray | None = None) -> np.ndarray:
    """Warp image [W, W, 3] so its points src [N, 2] land on target [N, 2], triangle by triangle (tris
    [T, 3]); pixels no target triangle covers sample the same place. grid: np.mgrid[0:W, 0:W] (float32),
    passed in to reuse it across frames."""
    W = image.shape[0]
    ids = np.full((W, W), -1, np.int32)
    tgt = np.round(target[tris] * 16).astype(np.int32)  # [T, 3, 2], 4 fractional bits
    for i in range(len(tris)):
        cv2.fillConvexPoly(ids, tgt[i], int(i), lineType=cv2.LINE_8, shift=4)
    # Affine target → source per triangle, closed form: src = A @ (p - t0) + s0 with
    # A = [s1 - s0, s2 - s0] @ inv([t1 - t0, t2 - t0]) (no LAPACK call per triangle).
    t, sp = target[tris], src[tris]  # [T, 3, 2]
    e1, e2 = t[:, 1] - t[:, 0], t[:, 2] - t[:, 0]
    f1, f2 = sp[:, 1] - sp[:, 0], sp[:, 2] - sp[:, 0]
    det = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    ok = np.abs(det) > 1e-6
    inv_det = np.where(ok, 1.0 / np.where(ok, det, 1.0), 0.0)
    # inv([e1 e2]) (e1, e2 as columns) = [[e2y, -e2x], [-e1y, e1x]] / det
    a = np.empty((len(tris), 2, 2))
    for r in (0, 1):
        a[:, r, 0] = (f1[:, r] * e2[:, 1] - f2[:, r] * e1[:, 1]) * inv_det
        a[:, r, 1] = (-f1[:, r] * e2[:, 0] + f2[:, r] * e1[:, 0]) * inv_det
    a[~ok] = np.eye(2)  # degenerate (zero-area) triangles cover no pixel; keep them harmless
    b = sp[:, 0] - np.einsum("tij,tj->ti", a, t[:, 0])
    m = np.empty((len(tris), 3, 2))
    m[:, 0, :] = a[:, :, 0]  # x coefficient of (src x, src y)
    m[:, 1, :] = a[:, :, 1]  # y coefficient
    m[:, 2, :] = b
    ys, xs = grid if grid is not None else np.mgrid[0:W, 0:W].astype(np.float32)
    covered = ids >= 0
    mm = m[np.where(covered, ids, 0)].astype(np.float32)  # [W, W, 3, 2]
    map_x = np.where(covered, xs * mm[..., 0, 0] + ys * mm[..., 1, 0] + mm[..., 2, 0], xs)
    map_y = np.where(covered, xs * mm[..., 0, 1] + ys * mm[..., 1, 1] + mm[..., 2, 1], ys)
    return cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)

"""The photo renderer's warp mesh: the points and triangles that move a whole photo with its face.

Points, P in all:
    468 mesh points (MediaPipe's tesselation + strips closing the eye and mouth holes)
  + ring 1: the face oval scaled 1.3× about its centre (hair, ears, neck); follows the head's similarity
    with weight 1 above the mouth, tapering to 0.2 below the chin
  + ring 2: the oval scaled 1.75× (background, shoulders), with half that weight, 0 below the face
  + anchors on a rectangle around the image, fixed.
Rings are capped radially so they stay inside the image, and fade out near its border.

Per frame (pure functions of the mesh and the moved landmarks):
    dst, head = warp_targets(wm, moved)   # where every point goes [P, 2]; head similarity [4]
    src = warp_sources(wm, moved)         # where every point samples the photo [P, 2]: the neutral points,
                                          # except on a blink (lids sample the lid skin) or an opening mouth
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from livehead.engine.motion import mesh, tracker

RING_SCALES = (1.3, 1.75)  # the two rings around the face: the face oval scaled about its centre
RING_MIN_GAP = (1.05, 0.05)  # ring 1 at least this scale; ring 2 at least this much beyond ring 1
BORDER_MARGIN = 0.05  # the fixed anchors' rectangle lies this far (× the long side) outside the image
BORDER_PER_EDGE = 6  # anchors per edge of that rectangle
BORDER_FADE = 0.04  # ring weights fade to 0 within this distance (× the long side) of the image border
LID_SRC_UP = 0.6  # fully closed eye: the upper-lid source moves this far towards the lid fold
LID_SRC_LO = 0.45  # fully closed eye: the lower-lid source moves this far towards the lower ring
LIP_SRC = 0.25  # open mouth: the inner-lip source moves this far into the lip (towards the outer contour)
LIP_SRC_RAMP = (0.0, 0.05)  # mouth opening beyond the neutral's (IOD) over which LIP_SRC takes effect
MIN_CLOSURE = 0.02  # eyelid closure below which the lid sources stay where they are
OVAL = np.array(mesh.FACE_OVAL)
STABLE = np.array(mesh.STABLE)
_LIPS = ((np.array(mesh.LIP_INNER_UPPER[1:-1]), np.array(mesh.LIP_OUTER_UPPER[1:-1])),
         (np.array(mesh.LIP_INNER_LOWER[1:-1]), np.array(mesh.LIP_OUTER_LOWER[1:-1])))
# per eye: upper-lid contour → its fold ring, lower contour → its lower ring (the sources that shift on a blink)
_LIDS = tuple((np.array(up[1:-1]), np.array(fold), np.array(lo[1:-1]), np.array(lo1[1:-1]))
              for up, fold, lo, lo1 in ((mesh.RIGHT_EYE_UPPER, mesh.RIGHT_EYE_FOLD, mesh.RIGHT_EYE_LOWER,
                                         mesh.RIGHT_LOWER_RING),
                                        (mesh.LEFT_EYE_UPPER, mesh.LEFT_EYE_FOLD, mesh.LEFT_EYE_LOWER,
                                         mesh.LEFT_LOWER_RING)))


def smoothstep(x, a: float, b: float):
    t = np.clip((x - a) / (b - a), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


@dataclass(frozen=True)
class WarpMesh:
    """The warp points of one photo; read-only."""

    src: np.ndarray  # float64 [P, 2] the neutral points in the photo's pixels
    triangles: np.ndarray  # int32 [T, 3]
    ring_weight: np.ndarray  # float64 [P] how far each point follows the head's similarity (0: mesh, anchors)
    eyes0: np.ndarray  # [2] the neutral's eye openness (right, left)
    mouth0: float  # the neutral's mouth opening


def _zipper(inner: np.ndarray, outer: np.ndarray, centre: np.ndarray, i_off: int, o_off: int) -> list:
    """Triangles of the annulus between two closed star-shaped loops (points [n, 2], [m, 2]) around centre,
    both ordered by increasing angle, as global indices (offsets added)."""
    n, m = len(inner), len(outer)
    a = np.arctan2(inner[:, 1] - centre[1], inner[:, 0] - centre[0])
    b = np.arctan2(outer[:, 1] - centre[1], outer[:, 0] - centre[0])
    a_rel = np.concatenate([np.mod(a - a[0], 2 * np.pi), [2 * np.pi]])
    b_rel = np.mod(b - a[0] + np.pi, 2 * np.pi) - np.pi
    order = np.roll(np.arange(m), -int(np.argmin(np.abs(b_rel))))
    bb = np.unwrap(b_rel[order])
    bb = np.concatenate([bb, [bb[0] + 2 * np.pi]])
    tris, i, j = [], 0, 0
    while i < n or j < m:
        if j == m or (i < n and a_rel[i + 1] <= bb[j + 1]):
            tris.append((i_off + i % n, i_off + (i + 1) % n, o_off + order[j % m]))
            i += 1
        else:
            tris.append((i_off + i % n, o_off + order[j % m], o_off + order[(j + 1) % m]))
            j += 1
    return tris


def _rings(oval: np.ndarray, centre: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Rings 1 and 2 [n, 2], capped radially so they stay inside the image (ring 2 a little outside ring 1)."""
    d = oval - centre
    with np.errstate(divide="ignore", invalid="ignore"):
        fx = np.where(d[:, 0] > 0, (width - 1 - centre[0]) / d[:, 0],
                      np.where(d[:, 0] < 0, -centre[0] / d[:, 0], np.inf))
        fy = np.where(d[:, 1] > 0, (height - 1 - centre[1]) / d[:, 1],
                      np.where(d[:, 1] < 0, -centre[1] / d[:, 1], np.inf))
    f_max = np.minimum(fx, fy)
    f1 = np.maximum(np.minimum(RING_SCALES[0], 0.97 * f_max), RING_MIN_GAP[0])
    f2 = np.maximum(np.minimum(RING_SCALES[1], 0.99 * f_max), f1 + RING_MIN_GAP[1])
    return centre + f1[:, None] * d, centre + f2[:, None] * d


def _border(points: np.ndarray, height: int, width: int) -> np.ndarray:
    """Fixed anchors [4·BORDER_PER_EDGE, 2] on a rectangle around the image enclosing every point, clockwise."""
    m = BORDER_MARGIN * max(height, width)
    x0, y0 = min(-m, points[:, 0].min() - m), min(-m, points[:, 1].min() - m)
    x1, y1 = max(width - 1 + m, points[:, 0].max() + m), max(height - 1 + m, points[:, 1].max() + m)
    per = BORDER_PER_EDGE
    tx, ty = np.linspace(x0, x1, per + 1), np.linspace(y0, y1, per + 1)
    return np.concatenate([np.stack([tx[:-1], np.full(per, y0)], 1), np.stack([np.full(per, x1), ty[:-1]], 1),
                           np.stack([tx[::-1][:-1], np.full(per, y1)], 1),
                           np.stack([np.full(per, x0), ty[::-1][:-1]], 1)])


def build_warp_mesh(neutral: np.ndarray, height: int, width: int) -> WarpMesh:
    """The warp mesh of a photo [height, width] whose neutral landmarks are neutral [478, 2+] (its pixels)."""
    neutral = np.asarray(neutral, np.float64)[:, :2]
    face = neutral[: mesh.N_MESH]
    centre = face[OVAL].mean(0)
    ring1, ring2 = _rings(face[OVAL], centre, height, width)
    border = _border(np.concatenate([face, ring1, ring2]), height, width)
    n0, n1, n2 = mesh.N_MESH, mesh.N_MESH + len(OVAL), mesh.N_MESH + 2 * len(OVAL)
    src = np.concatenate([face, ring1, ring2, border])
    # ring weights along the face's own vertical axis: t = 0 at the eye line, 1 at the chin
    eye_mid = neutral[list(mesh.EYE_OUTER)].mean(0)
    axis = neutral[mesh.CHIN] - eye_mid
    t = (src - eye_mid) @ axis / max(float(axis @ axis), 1e-6)
    weight = np.zeros(len(src))
    weight[n0:n1] = 1.0 - 0.8 * smoothstep(t[n0:n1], 0.4, 1.1)
    weight[n1:n2] = 0.5 * (1.0 - smoothstep(t[n1:n2], 0.2, 1.0))
    to_border = np.minimum.reduce([src[:, 0], width - 1 - src[:, 0], src[:, 1], height - 1 - src[:, 1]])
    weight *= np.clip(to_border / (BORDER_FADE * max(height, width)), 0.0, 1.0)
    k = len(OVAL)
    strips = []  # face oval → ring 1 → ring 2
    for inner, outer in ((OVAL, n0 + np.arange(k)), (n0 + np.arange(k), n1 + np.arange(k))):
        for i in range(k):
            a0, a1, b0, b1 = inner[i], inner[(i + 1) % k], outer[i], outer[(i + 1) % k]
            strips += [(a0, a1, b1), (a0, b1, b0)]
    triangles = np.concatenate([mesh.face_triangles(), np.array(strips, dtype=np.int32),
                                np.array(_zipper(ring2, border, centre, n1, n2), dtype=np.int32)])
    wm = WarpMesh(src=src, triangles=triangles.astype(np.int32), ring_weight=weight,
                  eyes0=mesh.eye_openness(neutral), mouth0=float(mesh.mouth_opening(neutral)))
    for a in (wm.src, wm.triangles, wm.ring_weight, wm.eyes0):
        a.setflags(write=False)
    return wm


def warp_targets(wm: WarpMesh, moved: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Moved landmarks [478, 2+] → (where every warp point goes [P, 2], head similarity [4] neutral → moved,
    fitted on the stable points). Mesh points go to the moved landmarks, rings follow the head by their
    weights, anchors stay."""
    moved = np.asarray(moved, np.float64)[:, :2]
    head = tracker.fit_similarity(wm.src[STABLE], moved[STABLE])
    dst = wm.src + wm.ring_weight[:, None] * (tracker.apply_pose(wm.src, head) - wm.src)
    dst[: mesh.N_MESH] = moved[: mesh.N_MESH]
    return dst, head


def warp_sources(wm: WarpMesh, moved: np.ndarray) -> np.ndarray:
    """Where every warp point samples the photo for moved landmarks [478, 2+] → [P, 2] (wm.src itself when
    nothing shifts).

    On a blink the lids sample the lid skin instead of the eye: the upper-lid contour's sources move towards
    the lid fold and the lower contour's towards the lower ring, in proportion to the closure (MediaPipe's
    lid contour lies inside the visible eye opening, so stretching the lid from it would smear the sclera).
    An opening mouth shows the lip body at the lips' inner edges, not the photo's lip seam.
    """
    moved = np.asarray(moved, np.float64)[:, :2]
    closure = np.clip(1.0 - mesh.eye_openness(moved) / np.maximum(wm.eyes0, 1e-4), 0.0, 1.0)
    gain = float(smoothstep(float(mesh.mouth_opening(moved)) - wm.mouth0, *LIP_SRC_RAMP))
    if closure.max() < MIN_CLOSURE and gain <= 0.0:
        return wm.src
    src = wm.src.copy()
    for c, (up, fold, lo, lo_ring) in zip(closure, _LIDS):
        src[up] += c * LID_SRC_UP * (wm.src[fold] - wm.src[up])
        src[lo] += c * LID_SRC_LO * (wm.src[lo_ring] - wm.src[lo])
    for inner, outer in _LIPS:
        src[inner] += gain * LIP_SRC * (wm.src[outer] - wm.src[inner])
    return src

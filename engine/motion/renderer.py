"""Photo renderer: the user's whole photo warped from its neutral landmarks to moved ones, plus the mouth layer.

Warp: piecewise-affine over the warp mesh (warp_mesh.py: face mesh, two rings that follow the head, fixed
anchors around the image). Per frame the backward map (output pixel → photo pixel) is rasterised on a
coarse grid of nodes (a vectorised scan conversion of every triangle), upsampled with cv2.resize (nodes
sit at cv2.resize's sample positions, so the upsampling is exact bilinear) and applied with one
cv2.remap. A zero motion gives a zero displacement, so the photo comes back unchanged. Eyelids close by
the warp itself: the decoded upper lids move down, the eye strips squeeze, the lid skin stretches over.
The inner-lip hole is drawn by the mouth layer (mouth.py).

`render` is a pure function of its argument: nothing carries from one call to the next, and the renderer
is read-only after construction, so several threads (live sessions sharing one avatar) may call it at once.

    renderer = PhotoRenderer(prepare_photo(image), max_side=512)   # or PhotoRenderer(image[, landmarks])
    moved = space.decode(motion, renderer.neutral)       # motion [F, M] → [F, 478, 2] in renderer pixels
    frame = renderer.render(moved[0])                    # uint8 [H, W, 3]; H, W even, long side ≤ max_side
"""

from __future__ import annotations

import numpy as np

from livehead.engine.motion.mouth import MouthLayer
from livehead.engine.motion.photo import DEFAULT_MAX_SIDE, Photo, fit_photo, photo_from_landmarks, prepare_photo
from livehead.engine.motion.warp_mesh import build_warp_mesh, warp_sources, warp_targets

NODES_PER_LONG_SIDE = 128  # the backward map's grid: nodes along the long side (spacing at least MIN_NODE_STEP)
MIN_NODE_STEP = 2.0  # px
_EDGE_EPS = 1e-4  # nodes this close to a triangle's edge (in node units) count as inside


class _NodeGrid:
    """Nodes of the backward map: node i of nx sits where cv2.resize (INTER_LINEAR, nx → W) samples source
    pixel i exactly, at x = (i + 0.5)·W/nx - 0.5."""

    def __init__(self, height: int, width: int, step: float | None):
        step = step or max(MIN_NODE_STEP, max(height, width) / NODES_PER_LONG_SIDE)
        self.nx, self.ny = max(2, round(width / step)), max(2, round(height / step))
        self.sx, self.sy = width / self.nx, height / self.ny


def _triangle_maps(src: np.ndarray, dst: np.ndarray, triangles: np.ndarray):
    """Per triangle, the affine output → photo map as displacement = c + K·(g - d0), K = J - I.
    src, dst [P, 2] → (d0 [T, 2], c [T, 2], K00, K01, K10, K11 [T], valid [T])."""
    s, d = src[triangles], dst[triangles]  # [T, 3, 2]
    d0, s0 = d[:, 0], s[:, 0]
    e1, e2 = d[:, 1] - d0, d[:, 2] - d0
    f1, f2 = s[:, 1] - s0, s[:, 2] - s0
    det = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    valid = np.abs(det) > 1e-6
    inv = np.where(valid, 1.0 / np.where(valid, det, 1.0), 0.0)
    a, b, c, e = e2[:, 1] * inv, -e2[:, 0] * inv, -e1[:, 1] * inv, e1[:, 0] * inv  # barycentric rows
    k00 = f1[:, 0] * a + f2[:, 0] * c - 1.0
    k01 = f1[:, 0] * b + f2[:, 0] * e
    k10 = f1[:, 1] * a + f2[:, 1] * c
    k11 = f1[:, 1] * b + f2[:, 1] * e - 1.0
    return d0, s0 - d0, k00, k01, k10, k11, valid


def node_displacement(grid: _NodeGrid, src: np.ndarray, dst: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Backward displacement (photo position - output position) at the grid's nodes → float32 [ny, nx, 2]
    for warp points that move from src [P, 2] to dst [P, 2]; 0 where no triangle covers a node.

    Vectorised scan conversion: every node row a triangle spans gets the triangle's exact x interval on
    that row, and every node in it the triangle's affine map.
    """
    d = dst[triangles]  # [T, 3, 2] output positions
    d0, const, k00, k01, k10, k11, valid = _triangle_maps(src, dst, triangles)
    sx, sy = grid.sx, grid.sy
    # node rows each triangle spans
    y_lo, y_hi = d[:, :, 1].min(1), d[:, :, 1].max(1)
    iy0 = np.clip(np.ceil((y_lo + 0.5) / sy - 0.5), 0, grid.ny).astype(np.int64)
    iy1 = np.clip(np.floor((y_hi + 0.5) / sy - 0.5), -1, grid.ny - 1).astype(np.int64)
    n_rows = np.where(valid, np.maximum(iy1 - iy0 + 1, 0), 0)
    tri = np.repeat(np.arange(len(d)), n_rows)
    iy = np.repeat(iy0 - np.cumsum(n_rows) + n_rows, n_rows) + np.arange(len(tri))
    y = (iy + 0.5) * sy - 0.5
    # the triangle's x interval on each row: its crossings with the three edges
    dt = d[tri]  # [R, 3, 2]
    x_min, x_max = np.full(len(tri), np.inf), np.full(len(tri), -np.inf)
    for k in range(3):
        p, q = dt[:, k], dt[:, (k + 1) % 3]
        dy = q[:, 1] - p[:, 1]
        crosses = (np.minimum(p[:, 1], q[:, 1]) <= y) & (y <= np.maximum(p[:, 1], q[:, 1])) & (np.abs(dy) > 1e-9)
        x = p[:, 0] + (y - p[:, 1]) * (q[:, 0] - p[:, 0]) / np.where(crosses, dy, 1.0)
        x_min, x_max = np.where(crosses, np.minimum(x_min, x), x_min), np.where(crosses, np.maximum(x_max, x), x_max)
    ix0 = np.clip(np.ceil((x_min + 0.5) / sx - 0.5 - _EDGE_EPS), 0, grid.nx).astype(np.int64)
    ix1 = np.clip(np.floor((x_max + 0.5) / sx - 0.5 + _EDGE_EPS), -1, grid.nx - 1).astype(np.int64)
    n_cols = np.maximum(ix1 - ix0 + 1, 0)
    t = np.repeat(tri, n_cols)
    iyc = np.repeat(iy, n_cols)
    ix = np.repeat(ix0 - np.cumsum(n_cols) + n_cols, n_cols) + np.arange(len(t))
    gx = (ix + 0.5) * sx - 0.5 - d0[t, 0]
    gy = (iyc + 0.5) * sy - 0.5 - d0[t, 1]
    disp = np.zeros((grid.ny * grid.nx, 2), np.float32)
    flat = iyc * grid.nx + ix
    disp[flat, 0] = const[t, 0] + k00[t] * gx + k01[t] * gy
    disp[flat, 1] = const[t, 1] + k10[t] * gx + k11[t] * gy
    return disp.reshape(grid.ny, grid.nx, 2)


class PhotoRenderer:
    """Renders one prepared photo at any motion. Output: uint8 [H, W, 3], the photo at its own aspect ratio,
    long side ≤ max_side, both sides even."""

    def __init__(self, photo: Photo | np.ndarray, neutral: np.ndarray | None = None,
                 max_side: int = DEFAULT_MAX_SIDE, grid_step: float | None = None, mouth_layer: bool = True):
        """photo: a Photo (prepare_photo), or an image uint8 [H, W(, C)]: with its neutral landmarks [478, 2+]
        (its pixels) taken as they are (photo_from_landmarks), without them checked and prepared by
        prepare_photo. Resized here when its long side exceeds max_side. grid_step: the backward map's node
        spacing in pixels (default: long side / 128, at least 2)."""
        if isinstance(photo, Photo):
            if neutral is not None:
                raise ValueError("a Photo carries its landmarks: pass neutral landmarks with an image only")
        else:
            photo = prepare_photo(photo, max_side) if neutral is None else photo_from_landmarks(photo, neutral)
        self.photo = fit_photo(photo, max_side)
        self.height, self.width = self.photo.height, self.photo.width
        self.warp = build_warp_mesh(self.photo.landmarks, self.height, self.width)
        self.grid = _NodeGrid(self.height, self.width, grid_step)
        self.mouth = MouthLayer(self.photo.image, self.photo.landmarks) if mouth_layer else None
        yy, xx = np.mgrid[0:self.height, 0:self.width].astype(np.float32)
        self._identity = np.ascontiguousarray(np.stack([xx, yy], -1))  # [H, W, 2]
        self._identity.setflags(write=False)

    @property
    def image(self) -> np.ndarray:
        """The photo as rendered at zero motion, uint8 [H, W, 3]."""
        return self.photo.image

    @property
    def neutral(self) -> np.ndarray:
        """The photo's neutral landmarks [478, 2] in this renderer's pixels (decode motion onto these)."""
        return self.photo.landmarks

    def backward_map(self, moved: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Moved landmarks [478, 2+] → (the photo position of every output pixel, float32 [H, W, 2]; the head
        similarity [4] neutral → moved)."""
        import cv2

        dst, head = warp_targets(self.warp, moved)
        disp = node_displacement(self.grid, warp_sources(self.warp, moved), dst, self.warp.triangles)
        full = cv2.resize(disp, (self.width, self.height), interpolation=cv2.INTER_LINEAR)
        full += self._identity
        return full, head

    def render(self, moved: np.ndarray) -> np.ndarray:
        """Moved landmarks [478, 2+] in this renderer's pixels → uint8 [H, W, 3]."""
        import cv2

        moved = np.asarray(moved, np.float64)
        if moved.ndim != 2 or moved.shape[0] != self.neutral.shape[0] or moved.shape[1] < 2:
            raise ValueError(f"moved landmarks must be [478, 2], got {list(moved.shape)}")
        full, head = self.backward_map(moved)
        out = cv2.remap(self.photo.image, full, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        if self.mouth is not None:
            self.mouth.draw(out, moved[:, :2], head)
        return out

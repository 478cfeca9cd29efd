"""Photo renderer: the user's whole photo warped from its neutral landmarks to moved ones, plus the mouth layer.

Warp: piecewise-affine over the warp mesh (warp_mesh.py: face mesh, two rings that follow the head, fixed
anchors around the image). Per frame the backward map (output pixel → photo pixel) is rasterised on a
coarse grid of nodes (a scan conversion of every triangle: the compiled kernel in kernels/warp_scan.py),
upsampled with cv2.resize (nodes sit at cv2.resize's sample positions, so the upsampling is exact bilinear)
and applied with one cv2.remap. A zero motion gives a zero displacement, so the photo comes back unchanged.
Eyelids close by the warp itself: the decoded upper lids move down, the eye strips squeeze, the lid skin
stretches over. The inner-lip hole is drawn by the mouth layer (mouth.py).

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
from livehead.kernels import warp_scan

NODES_PER_LONG_SIDE = 128  # the backward map's grid: nodes along the long side (spacing at least MIN_NODE_STEP)
MIN_NODE_STEP = 2.0  # px


class _NodeGrid:
    """Nodes of the backward map: node i of nx sits where cv2.resize (INTER_LINEAR, nx → W) samples source
    pixel i exactly, at x = (i + 0.5)·W/nx - 0.5."""

    def __init__(self, height: int, width: int, step: float | None):
        step = step or max(MIN_NODE_STEP, max(height, width) / NODES_PER_LONG_SIDE)
        self.nx, self.ny = max(2, round(width / step)), max(2, round(height / step))
        self.sx, self.sy = width / self.nx, height / self.ny


def node_displacement(grid: _NodeGrid, src: np.ndarray, dst: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Backward displacement (photo position - output position) at the grid's nodes → float32 [ny, nx, 2]
    for warp points that move from src [P, 2] to dst [P, 2]; 0 where no triangle covers a node. A scan
    conversion of every triangle (`livehead.kernels.warp_scan`, compiled; ~0.3 ms at 128 × 128 nodes)."""
    return warp_scan.displacement(src, dst, triangles, grid.nx, grid.ny, grid.sx, grid.sy)


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

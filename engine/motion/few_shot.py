"""Few-shot references: several photos of one person, each frame rendered from the ones closest to its shape.

The first photo is the primary: it fixes the output's size, framing and background. Every other photo is
aligned to it (a similarity on the stable points, `tracker.STABLE`) and gets its own PhotoRenderer. For a
frame's moved landmarks, each reference's distance is measured on pose-normalised shapes (IOD units):
RMS over the lip points (mouth opening and shape: a reference with an open mouth brings real teeth) plus
RMS over the whole mesh (yaw and pitch show there: a side view serves a turned head). Weights fall off
exponentially with the distance beyond the nearest (`BLEND_SCALE`), so they change smoothly as the motion
does; the references with a weight above `MIN_WEIGHT` are warped to the same landmarks and mixed inside
the moved face's feathered oval; outside it the primary's render stays, so no seam shows at the hair or
the background. With one photo the result is exactly PhotoRenderer's.

    few = FewShotRenderer([prepare_photo(a), prepare_photo(b)])
    moved = space.decode(motion, few.neutral)           # [F, 478, 2] in the primary's pixels
    frame, weights = few.render(moved[0])               # uint8 [H, W, 3], float64 [R]
    picks = spread_over_openings(landmarks, 4)          # frame indices of a clip for 4 references
"""

from __future__ import annotations

import numpy as np

from livehead.engine.common.errors import InputError
from livehead.engine.motion import mesh, tracker
from livehead.engine.motion.photo import DEFAULT_MAX_SIDE, Photo, face_mask, fit_photo, photo_from_landmarks
from livehead.engine.motion.renderer import PhotoRenderer
from livehead.engine.motion.space import MotionSpace, default_motion_space

LIP_POINTS = np.array(sorted(set(mesh.LIP_INNER_UPPER + mesh.LIP_INNER_LOWER + mesh.LIP_OUTER_UPPER
                                 + mesh.LIP_OUTER_LOWER)))
MESH_POINTS = np.arange(mesh.N_MESH)
MOUTH_WEIGHT = 1.0  # the lips' RMS distance counts this much ...
SHAPE_WEIGHT = 1.0  # ... and the whole mesh's this much
BLEND_SCALE = 0.01  # IOD: a reference this much farther than the nearest gets e⁻¹ of its weight
MIN_WEIGHT = 0.02  # references below this weight are not rendered (the rest renormalised)
MAX_REFERENCES = 32


def align_photo(photo: Photo, to: Photo) -> Photo:
    """`photo` moved by the similarity that puts its stable points on `to`'s, onto `to`'s canvas [H, W]
    (borders replicated) → a Photo in `to`'s pixels."""
    import cv2

    theta, s, tx, ty = tracker.fit_similarity(photo.landmarks[tracker.STABLE], to.landmarks[tracker.STABLE])
    matrix = np.array([[s * np.cos(theta), -s * np.sin(theta), tx], [s * np.sin(theta), s * np.cos(theta), ty]])
    image = cv2.warpAffine(photo.image, matrix, (to.width, to.height), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REPLICATE)
    landmarks = photo.landmarks @ matrix[:, :2].T + matrix[:, 2]
    return photo_from_landmarks(image, landmarks)


def normalised_shape(landmarks: np.ndarray, canon: np.ndarray) -> np.ndarray:
    """Landmarks [..., 478, 2+] px → pose-normalised shapes [..., 478, 2] (canonical frame, IOD ≈ 1)."""
    lm = np.asarray(landmarks, np.float64)[..., :2]
    return tracker.to_canonical(lm, tracker.fit_pose(lm, canon))


def reference_distance(shape: np.ndarray, references: np.ndarray) -> np.ndarray:
    """A normalised shape [478, 2] against references' normalised shapes [R, 478, 2] → distances [R] (IOD)."""
    diff = references - shape[None]
    lips = np.sqrt((diff[:, LIP_POINTS] ** 2).sum(-1).mean(-1))
    whole = np.sqrt((diff[:, MESH_POINTS] ** 2).sum(-1).mean(-1))
    return MOUTH_WEIGHT * lips + SHAPE_WEIGHT * whole


def blend_weights(distances: np.ndarray) -> np.ndarray:
    """Distances [R] → weights [R] summing to 1: exp(-(d - d_min) / BLEND_SCALE), those under MIN_WEIGHT
    dropped."""
    w = np.exp(-(distances - distances.min()) / BLEND_SCALE)
    w /= w.sum()
    w[w < MIN_WEIGHT] = 0.0
    return w / w.sum()


class FewShotRenderer:
    """Renders a motion from the nearest of several photos of one person (see the module's docstring)."""

    def __init__(self, photos: list[Photo], max_side: int = DEFAULT_MAX_SIDE, space: MotionSpace | None = None,
                 mouth_layer: bool = True):
        """photos: prepared photos of one person, the primary first (1 to MAX_REFERENCES)."""
        if not 1 <= len(photos) <= MAX_REFERENCES:
            raise InputError(f"give between 1 and {MAX_REFERENCES} photos of the person, got {len(photos)}")
        self.space = space or default_motion_space()
        primary = fit_photo(photos[0], max_side)
        self.photos = [primary] + [align_photo(p, primary) for p in photos[1:]]
        self.renderers = [PhotoRenderer(p, max_side=max_side, mouth_layer=mouth_layer) for p in self.photos]
        self.shapes = normalised_shape(np.stack([p.landmarks for p in self.photos]), self.space.canon)  # [R, 478, 2]
        self.height, self.width = primary.height, primary.width

    @property
    def neutral(self) -> np.ndarray:
        """The primary photo's neutral landmarks [478, 2] px: decode motion onto these."""
        return self.photos[0].landmarks

    @property
    def image(self) -> np.ndarray:
        return self.photos[0].image

    def weights(self, moved: np.ndarray) -> np.ndarray:
        """Moved landmarks [478, 2+] px → each reference's blend weight [R]."""
        if len(self.photos) == 1:
            return np.ones(1)
        return blend_weights(reference_distance(normalised_shape(moved, self.space.canon), self.shapes))

    def render(self, moved: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Moved landmarks [478, 2+] px (the primary's pixels) → (uint8 [H, W, 3], weights [R])."""
        w = self.weights(moved)
        base = self.renderers[0].render(moved)
        if w[0] == 1.0:
            return base, w
        mixed = np.zeros(base.shape, np.float32)
        for i in np.flatnonzero(w):
            mixed += w[i] * (base if i == 0 else self.renderers[i].render(moved)).astype(np.float32)
        mask = face_mask(np.asarray(moved)[:, :2], self.height, self.width)[..., None]
        out = base.astype(np.float32) + mask * (mixed - base)
        return np.clip(np.rint(out), 0, 255).astype(np.uint8), w


def spread_over_openings(landmarks: np.ndarray, count: int, exclude: tuple[int, ...] = (0,)) -> list[int]:
    """Frame indices of a clip to use as `count` references: frame 0 (the primary) and the frames whose mouth
    opening is nearest to evenly spaced quantiles of the clip's openings (from the median up to the widest),
    never two the same. landmarks [F, 478, 2+] px → sorted indices, frame 0 first."""
    if count < 1:
        raise InputError(f"count must be at least 1, got {count}")
    opening = np.asarray(mesh.mouth_opening(np.asarray(landmarks)[..., :2]))
    picks = [0]
    for q in np.linspace(0.5, 1.0, count - 1) if count > 1 else []:
        target = np.quantile(opening, q)
        order = np.argsort(np.abs(opening - target))
        picks.append(int(next(i for i in order if i not in picks and i not in exclude)))
    return [0] + sorted(picks[1:])

"""Motion space: a PCA basis of pose-normalised mesh offsets, and the encode / decode of any face's motion.

Motion vector per frame, float64 [M] with M = K + 2 + 4:
    [0:K]      expression PCA coefficients (offsets in units of the face's IOD, projected on the basis)
    [K:K+2]    eyelid openness right, left, relative to the neutral face (1 = as neutral, 0 = closed)
    [K+2:K+6]  head pose relative to the neutral: (dtheta [rad], log scale ratio, tau_x, tau_y [IOD])
Expression 0, eyelids 1 and pose 0 is the neutral face (`neutral_motion`). The PCA is uncentred on
purpose: coefficient 0 means "no offset", so a zero motion leaves the photo untouched.

The PCA covers the 468 mesh points minus the 32 eyelid-contour points (the eyelid channels drive those)
and the 10 iris points: D = 436 · 2 = 872 dimensions.

The shipped space (`default_motion_space()`, engine/assets/motion/motion_space.npz) was fitted on the six
GRID training clips (GRID_TRAIN); GRID_HELD_OUT is never fitted on. Re-create it with
`python -m livehead.engine.training.motion_space --data DIR --exclude lbbc2a --exclude sbia1a --out FILE`.

    space = default_motion_space()
    motion = space.encode(lm)                  # landmarks [F, 478, 2+] px (first frame = neutral) → [F, M]
    moved = space.decode(motion, neutral_lm)   # [F, M] + any face's neutral [478, 2+] px → [F, 478, 2] px
"""

from __future__ import annotations

import functools
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from livehead.engine.common.errors import InputError
from livehead.engine.motion import mesh, tracker

GRID_TRAIN = ("bbaf2n", "brbk7n", "id2_vcd_swwp2s", "lbax4n", "lrwp9a", "pwij3p")
GRID_HELD_OUT = ("lbbc2a", "sbia1a")
DEFAULT_PATH = Path(__file__).resolve().parents[1] / "assets" / "motion" / "motion_space.npz"
REFIT_COMMAND = "python -m livehead.engine.training.motion_space"

N_EYES = 2  # eyelid channels: right, left
N_POSE = 4  # relative head pose: dtheta, log rho, tau_x, tau_y
DEFAULT_KEEP = 0.99  # fraction of the offsets' second moment the fitted components keep
EYE_REL_MAX = 1.6  # widest eyelid opening, relative to the neutral's
FOLD_FOLLOW = 0.35  # how far the lid fold follows the upper lid on a blink
PCA_POINTS = np.array(mesh.PCA_POINTS)
_EYES = (  # per eye: lid contour, iris, the rings around it (their mean offset moves the contour), lids, fold
    (mesh.RIGHT_EYE_UPPER + mesh.RIGHT_EYE_LOWER, mesh.IRIS[0], mesh.RIGHT_EYE_FOLD + mesh.RIGHT_LOWER_RING,
     mesh.RIGHT_EYE_UPPER, mesh.RIGHT_EYE_LOWER, mesh.RIGHT_EYE_FOLD),
    (mesh.LEFT_EYE_UPPER + mesh.LEFT_EYE_LOWER, mesh.IRIS[1], mesh.LEFT_EYE_FOLD + mesh.LEFT_LOWER_RING,
     mesh.LEFT_EYE_UPPER, mesh.LEFT_EYE_LOWER, mesh.LEFT_EYE_FOLD),
)
_LIP_UP, _LIP_LO = np.array(mesh.LIP_INNER_UPPER[1:-1]), np.array(mesh.LIP_INNER_LOWER[1:-1])


def _fewest_components(energy: np.ndarray, keep: float) -> int:
    return int(min(np.searchsorted(np.cumsum(energy), keep) + 1, len(energy)))


def _frozen(a: np.ndarray) -> np.ndarray:
    a = np.array(a, dtype=np.float64)
    a.setflags(write=False)
    return a


@dataclass(frozen=True)
class MotionSpace:
    """canon float64 [478, 2] (canonical mean shape, IOD = 1); components float64 [R, D] (orthonormal rows,
    by decreasing energy); energy float64 [R] (each component's fraction of the uncentred second moment);
    k: the components a motion vector uses. Read-only, so one space serves any number of threads."""

    canon: np.ndarray
    components: np.ndarray
    energy: np.ndarray
    k: int

    def __post_init__(self):
        canon, comps, energy = _frozen(self.canon), _frozen(self.components), _frozen(self.energy)
        if canon.shape != (mesh.N_LANDMARKS, 2) or comps.ndim != 2 or comps.shape[1] != 2 * len(PCA_POINTS):
            raise ValueError(f"bad motion space shapes: canon {canon.shape}, components {comps.shape}")
        if energy.shape != comps.shape[:1] or not 1 <= int(self.k) <= len(comps):
            raise ValueError(f"bad motion space: energy {energy.shape}, k={self.k} of {len(comps)} components")
        object.__setattr__(self, "canon", canon)
        object.__setattr__(self, "components", comps)
        object.__setattr__(self, "energy", energy)
        object.__setattr__(self, "k", int(self.k))

    @property
    def dim(self) -> int:
        """Length M of a motion vector: K coefficients, 2 eyelids, 4 pose."""
        return self.k + N_EYES + N_POSE

    @property
    def kept(self) -> float:
        """Fraction of the training offsets' second moment the K components keep."""
        return float(self.energy[: self.k].sum())

    def components_for(self, keep: float) -> int:
        """The fewest components keeping the fraction `keep` of the second moment."""
        return _fewest_components(self.energy, keep)

    # ------------------------------------------------------------------------------------------ fitting

    @staticmethod
    def offsets_matrix(clips: list[np.ndarray], canon: np.ndarray) -> np.ndarray:
        """Clips [F_i, 478, 2+] px (each relative to its own first frame) → offsets [Σ F_i, D]."""
        rows = [tracker.normalise_sequence(lm, canon).offsets[:, PCA_POINTS].reshape(len(lm), -1) for lm in clips]
        return np.concatenate(rows)

    @classmethod
    def fit(cls, clips: list[np.ndarray], canon: np.ndarray | None = None, k: int | None = None,
            keep: float = DEFAULT_KEEP) -> MotionSpace:
        """Uncentred PCA (SVD) of the clips' offsets. clips: landmarks [F_i, 478, 2+] px, the first frame of
        each its neutral; canon: the canonical shape [478, 2] (default: fitted on the clips); k=None: the
        fewest components keeping `keep` of the second moment."""
        clips = [np.asarray(c, np.float64)[..., :2] for c in clips]
        canon = tracker.fit_canonical(clips) if canon is None else canon
        _, s, vt = np.linalg.svd(cls.offsets_matrix(clips, canon), full_matrices=False)
        energy = s**2 / (s**2).sum()
        return cls(canon=canon, components=vt, energy=energy, k=_fewest_components(energy, keep) if k is None else k)

    def save(self, path: str | os.PathLike) -> None:
        np.savez_compressed(path, canon=self.canon, components=self.components, energy=self.energy, k=self.k)

    @classmethod
    def load(cls, path: str | os.PathLike, k: int | None = None) -> MotionSpace:
        """A saved space (k: use this many components instead of the saved number)."""
        path = Path(path)
        if not path.is_file():
            raise InputError(f"motion space file not found: {path}; create one with `{REFIT_COMMAND}`")
        try:
            with np.load(path) as z:
                return cls(canon=z["canon"], components=z["components"], energy=z["energy"],
                           k=int(z["k"]) if k is None else k)
        except (OSError, KeyError, ValueError, zipfile.BadZipFile) as err:
            raise InputError(
                f"cannot read the motion space {path} ({err}); re-create it with `{REFIT_COMMAND}`"
            ) from None

    # ------------------------------------------------------------------------------------ encode / decode

    def encode(self, lm: np.ndarray, neutral: np.ndarray | None = None) -> np.ndarray:
        """Landmarks [F, 478, 2+] px (neutral [478, 2+] px; default: the first frame) → motion [F, M]."""
        lm = np.asarray(lm, np.float64)
        if lm.ndim != 3 or lm.shape[1] != mesh.N_LANDMARKS:
            raise ValueError(f"landmarks must be [F, 478, 2+], got {list(lm.shape)}")
        seq = tracker.normalise_sequence(lm, self.canon, neutral)
        coeffs = seq.offsets[:, PCA_POINTS].reshape(len(lm), -1) @ self.components[: self.k].T
        return np.concatenate([coeffs, np.clip(seq.eyes_rel, 0.0, EYE_REL_MAX), seq.rel_pose], 1)

    def split(self, motion: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Motion [..., M] → (expression [..., K], eyelids [..., 2], relative pose [..., 4]) (views)."""
        k = self.k
        return motion[..., :k], motion[..., k:k + N_EYES], motion[..., k + N_EYES:k + N_EYES + N_POSE]

    def neutral_motion(self, n: int = 1) -> np.ndarray:
        """n frames of the neutral face → [n, M]: expression 0, eyelids 1, pose 0."""
        motion = np.zeros((n, self.dim))
        motion[:, self.k:self.k + N_EYES] = 1.0
        return motion

    def decode(self, motion: np.ndarray, neutral_lm: np.ndarray, clamp_lips: bool = True) -> np.ndarray:
        """Motion [F, M] (or [M]) + the neutral landmarks of any face [478, 2+] px → moved landmarks
        [F, 478, 2] px.

        Offsets are scaled by that face's IOD and placed in its canonical frame; eyelid contours and irises
        follow the rings around the eyes, upper lids close by the openness ratio; the relative pose is
        composed with the face's own neutral pose. clamp_lips: where a (predicted) shape pushes the inner
        lips through each other further than the neutral face does, both are put at their midpoint.
        """
        motion = np.atleast_2d(np.asarray(motion, np.float64))
        if motion.shape[-1] != self.dim:
            raise ValueError(f"motion must be [F, {self.dim}], got {list(motion.shape)}")
        n = len(motion)
        coeffs, eyes, rel = self.split(motion)
        neutral = np.asarray(neutral_lm, np.float64)[:, :2]
        pose0 = tracker.fit_pose(neutral, self.canon)
        shape0 = tracker.to_canonical(neutral, pose0)
        iod0 = float(mesh.iod(shape0))
        offsets = np.zeros((n, mesh.N_LANDMARKS, 2))
        offsets[:, PCA_POINTS] = (coeffs @ self.components[: self.k]).reshape(n, -1, 2)
        for contour, iris, rings, *_ in _EYES:
            offsets[:, list(set(contour)) + list(iris)] = offsets[:, list(rings)].mean(1, keepdims=True)
        shape = shape0[None] + offsets * iod0
        for e, (_, _, _, upper, lower, fold) in enumerate(_EYES):
            up, lo = np.array(upper[1:-1]), np.array(lower[1:-1])
            ratio = np.clip(eyes[:, e], 0.0, EYE_REL_MAX)[:, None, None]
            new_up = shape[:, lo] + ratio * (shape[:, up] - shape[:, lo])
            shape[:, np.array(fold)] += FOLD_FOLLOW * (new_up - shape[:, up])
            shape[:, up] = new_up
        if clamp_lips:
            floor = np.minimum(shape0[_LIP_LO, 1] - shape0[_LIP_UP, 1], 0.0)  # the neutral's own crossing
            up_y, lo_y = shape[:, _LIP_UP, 1], shape[:, _LIP_LO, 1]
            crossed = lo_y - up_y < floor
            mid = (up_y + lo_y) / 2
            shape[:, _LIP_UP, 1] = np.where(crossed, mid - floor / 2, up_y)
            shape[:, _LIP_LO, 1] = np.where(crossed, mid + floor / 2, lo_y)
        return tracker.apply_pose(shape, tracker.compose_pose(pose0, rel))


@functools.lru_cache(maxsize=1)
def default_motion_space() -> MotionSpace:
    """The shipped motion space (fitted on GRID_TRAIN), loaded once."""
    return MotionSpace.load(DEFAULT_PATH)

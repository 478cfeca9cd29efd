"""A face's neutral shape as a short code: what the motion generator conditions on (faces differ in how far
the same motion moves them: lip thickness, jaw length, eye size), and the face's rest shape: the photo with
its lips closed, which generated motion is relative to (the generator was trained on motion measured from
each clip's rest frame, a silent frame with closed lips).

    code = shape_code(space, neutral_landmarks, 14)   # float64 [14]
    rest = rest_landmarks(space, neutral_landmarks)   # float64 [478, 2]: the photo's face, lips closed
"""

from __future__ import annotations

import numpy as np

from livehead.engine.motion import mesh, tracker
from livehead.engine.motion.space import PCA_POINTS, MotionSpace

# A photo's inner-lip gap (IOD) above which its lips count as parted (closed at rest); at or below it the photo
# is its own rest. Set on the training speakers only: the widest gap any of them holds in silence (brbk7n keeps
# its lips 0.06-0.07 apart in every silent frame; the other five close to 0.001-0.002), rounded up.
REST_OPEN_AT = 0.075
REST_GAP = 0.002  # the inner-lip gap (IOD) of the closed rest: GRID's silent closed frames measure 0.001-0.003
_ROW = {int(p): i for i, p in enumerate(PCA_POINTS)}
REST_FIXED = tuple(i for i in (*mesh.STABLE, *mesh.RIGHT_EYE_FOLD, *mesh.LEFT_EYE_FOLD, 1, 4) if i in _ROW)


def shape_code(space: MotionSpace, neutral: np.ndarray, size: int) -> np.ndarray:
    """neutral landmarks [478, 2+] px → [size]: the face brought to the canonical frame (similarity pose fitted
    on the stable points) minus the canonical mean face, on the motion space's first `size` components."""
    lm = np.asarray(neutral, np.float64)[:, :2]
    canonical = tracker.to_canonical(lm, tracker.fit_pose(lm, space.canon))
    offsets = (canonical - space.canon)[PCA_POINTS].reshape(-1)
    return offsets @ space.components[:size].T


# points that stay put while the lips close: the pose-fitting points (forehead, nose bridge, face sides; the eye
# corners among them follow their rings, which `_EYE_RINGS` holds) and the nose tip
REST_FIXED_WEIGHT = 0.3  # how strongly they stay put, against the lip gaps' weight of 1


def rest_expression(space: MotionSpace, neutral: np.ndarray) -> np.ndarray:
    """The expression coefficients [K] that close a photo's parted lips (zeros when they are closed already).

    Weighted least squares in the motion space, with the components' energies as a Gaussian prior: the three
    central inner-lip gaps go to REST_GAP (weight 1) while the eye corners, nose, forehead and cheeks stay
    where they are (weight REST_FIXED_WEIGHT), so only the lips and jaw move (an unconstrained solution also
    moved the eyes by up to 10 % of their distance on a smiling photo).
    """
    lm = np.asarray(neutral, np.float64)[:, :2]
    shape0 = tracker.to_canonical(lm, tracker.fit_pose(lm, space.canon))
    iod0 = float(mesh.iod(shape0))
    k = space.k
    if float(mesh.mouth_opening_signed(shape0)) <= REST_OPEN_AT:
        return np.zeros(k)
    comps = space.components[:k].reshape(k, -1, 2)  # [K, P, 2] offsets per unit coefficient, IOD units
    down = np.array([0.0, 1.0])  # the canonical frame is upright
    gap_rows = np.stack([(comps[:, _ROW[b]] - comps[:, _ROW[a]]) @ down for a, b in mesh.MOUTH_GAP_PAIRS])  # [3, K]
    gaps = np.array([(shape0[b] - shape0[a]) @ down for a, b in mesh.MOUTH_GAP_PAIRS]) / iod0
    fixed_rows = np.concatenate([comps[:, _ROW[i]].T for i in REST_FIXED])  # [2·len(REST_FIXED), K]
    rows = np.concatenate([gap_rows, REST_FIXED_WEIGHT * fixed_rows])
    target = np.concatenate([REST_GAP - gaps, np.zeros(len(fixed_rows))])
    prior = 1e-6 * np.trace(rows.T @ rows) / k / space.energy[:k]  # weak: picks the likelier of near-equal fits
    return np.linalg.solve(rows.T @ rows + np.diag(prior), rows.T @ target)


def rest_landmarks(space: MotionSpace, neutral: np.ndarray) -> np.ndarray:
    """A photo's neutral landmarks [478, 2+] px → its rest shape [478, 2] px: the same face with its lips
    closed (`rest_expression`); the photo's own landmarks when its lips are closed already."""
    coeffs = rest_expression(space, neutral)
    if not coeffs.any():
        return np.asarray(neutral, np.float64)[:, :2].copy()
    motion = space.neutral_motion(1)
    motion[0, :space.k] = coeffs
    return space.decode(motion, neutral, clamp_lips=False)[0]

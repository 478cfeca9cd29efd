"""A face's neutral shape as a short code: what the motion generator conditions on (faces differ in how far
the same motion moves them: lip thickness, jaw length, eye size).

    code = shape_code(space, neutral_landmarks, 14)   # float64 [14]
"""

from __future__ import annotations

import numpy as np

from livehead.engine.motion import tracker
from livehead.engine.motion.space import PCA_POINTS, MotionSpace


def shape_code(space: MotionSpace, neutral: np.ndarray, size: int) -> np.ndarray:
    """neutral landmarks [478, 2+] px → [size]: the face brought to the canonical frame (similarity pose fitted
    on the stable points) minus the canonical mean face, on the motion space's first `size` components."""
    lm = np.asarray(neutral, np.float64)[:, :2]
    canonical = tracker.to_canonical(lm, tracker.fit_pose(lm, space.canon))
    offsets = (canonical - space.canon)[PCA_POINTS].reshape(-1)
    return offsets @ space.components[:size].T

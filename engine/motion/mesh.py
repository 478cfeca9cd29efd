"""Face Mesh point sets, the renderer's fixed triangle topology, and mouth / eye measures over sequences.

Index conventions are MediaPipe Face Mesh's (468 mesh points + 10 iris points); the contours shared with
the rest of the engine (lips, eyelids, eye corners) come from `livehead.engine.media.landmarks`. The
subject's right eye is on the image's left.

    face_triangles()      int32 [T, 3] over the 468 mesh points: MediaPipe's tesselation (where the mouth
                          and the eyes are holes) plus strips that close the eye and mouth holes
    mouth_opening(lm)     inner-lip gap / eye-corner distance, landmarks [..., 478, 2+] → [...]
    eye_openness(lm)      lid gap / eye-corner distance per eye, [..., 478, 2+] → [..., 2] (right, left)
    mouth_opening_signed(lm)   the gap along the face's downward axis: negative when lips cross
"""

from __future__ import annotations

import functools

import numpy as np

from livehead.engine.media.landmarks import (
    CHIN,
    EYE_GAP_PAIRS,
    EYE_OUTER,
    IRIS,
    LEFT_EYE_LOWER,
    LEFT_EYE_UPPER,
    LIP_INNER_LOWER,
    LIP_INNER_UPPER,
    LIP_OUTER_LOWER,
    LIP_OUTER_UPPER,
    MOUTH_CORNERS,
    MOUTH_GAP_PAIRS,
    N_LANDMARKS,
    RIGHT_EYE_LOWER,
    RIGHT_EYE_UPPER,
    eye_corner_distance,
    mouth_opening,
)

__all__ = [
    "CHIN", "EYE_CONTOURS", "EYE_OUTER", "FACE_OVAL", "IRIS", "LEFT_EYE_FOLD", "LEFT_EYE_LOWER", "LEFT_EYE_UPPER",
    "LEFT_LOWER_RING", "LIP_INNER_LOWER", "LIP_INNER_UPPER", "LIP_OUTER_LOWER", "LIP_OUTER_UPPER", "MOUTH_CORNERS",
    "MOUTH_GAP_PAIRS", "N_LANDMARKS", "N_MESH", "PCA_POINTS", "RIGHT_EYE_FOLD", "RIGHT_EYE_LOWER",
    "RIGHT_EYE_UPPER", "RIGHT_LOWER_RING", "STABLE", "eye_openness", "eye_triangles", "face_triangles", "iod",
    "mouth_opening", "mouth_opening_signed", "mouth_triangles", "tesselation_triangles",
]

N_MESH = 468  # mesh points; N_LANDMARKS (478) adds the two irises

# Points the head pose is fitted on (2-D similarity): forehead, nose bridge, eye corners, temples. No
# lips, jaw, cheeks or eyebrows: those move with expression.
STABLE = (10, 151, 9, 8, 168, 6, 197, 195, 5, 109, 338, 67, 297, 33, 133, 362, 263, 127, 356, 234, 454)

# The ring just above each upper lid (the lid fold; it follows the lid partly on a blink) and the ring
# just below each lower lid, from the outer corner to the inner one.
RIGHT_EYE_FOLD = (247, 30, 29, 27, 28, 56, 190)
LEFT_EYE_FOLD = (467, 260, 259, 257, 258, 286, 414)
RIGHT_LOWER_RING = (130, 25, 110, 24, 23, 22, 26, 112, 243)
LEFT_LOWER_RING = (359, 255, 339, 254, 253, 252, 256, 341, 463)

FACE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
             152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109)

EYE_CONTOURS = tuple(sorted(set(RIGHT_EYE_UPPER + RIGHT_EYE_LOWER + LEFT_EYE_UPPER + LEFT_EYE_LOWER)))
# Points whose offsets the expression PCA models: the mesh without the eyelid contours (the eyelid
# channels drive those) and without the irises.
PCA_POINTS = tuple(i for i in range(N_MESH) if i not in set(EYE_CONTOURS))


def iod(lm: np.ndarray) -> np.ndarray:
    """Inter-ocular (outer eye-corner) distance of landmarks [..., 478, 2+] → [...]."""
    return np.asarray(eye_corner_distance(lm))


def eye_openness(lm: np.ndarray) -> np.ndarray:
    """Lid gap / eye-corner distance per eye of landmarks [..., 478, 2+] → [..., 2] (right eye, left eye)."""
    lm = np.asarray(lm)
    per_eye = [np.mean([np.linalg.norm(lm[..., a, :2] - lm[..., b, :2], axis=-1) for a, b in eye], axis=0)
               for eye in EYE_GAP_PAIRS]
    return np.stack(per_eye, axis=-1) / np.maximum(iod(lm), 1e-6)[..., None]


def mouth_opening_signed(lm: np.ndarray) -> np.ndarray:
    """Signed central inner-lip gap along the face's downward axis / IOD, landmarks [..., 478, 2+] → [...].
    Equals mouth_opening for real faces; negative where a predicted shape pushes the lips through each
    other, so it stays monotonic for regression outputs."""
    lm = np.asarray(lm)
    eye = lm[..., EYE_OUTER[1], :2] - lm[..., EYE_OUTER[0], :2]
    d = np.maximum(np.linalg.norm(eye, axis=-1), 1e-6)
    down = np.stack([-eye[..., 1], eye[..., 0]], -1) / d[..., None]
    gaps = [np.sum((lm[..., b, :2] - lm[..., a, :2]) * down, -1) for a, b in MOUTH_GAP_PAIRS]
    return np.mean(gaps, axis=0) / d


def _strip(upper: tuple[int, ...], lower: tuple[int, ...]) -> list[tuple[int, int, int]]:
    """Triangles closing the hole between two polylines that share their end points."""
    tris = []
    for i in range(len(upper) - 1):
        a, b, c, d = upper[i], upper[i + 1], lower[i + 1], lower[i]
        tris += [t for t in ((a, b, c), (a, c, d)) if len(set(t)) == 3]
    return tris


@functools.lru_cache(maxsize=1)
def tesselation_triangles() -> np.ndarray:
    """MediaPipe's face tesselation as triangles int32 [854, 3] (the 3-cliques of its edge list)."""
    from mediapipe.python.solutions.face_mesh_connections import FACEMESH_TESSELATION

    edges = {tuple(sorted(e)) for e in FACEMESH_TESSELATION}
    neighbours: dict[int, set[int]] = {}
    for a, b in edges:
        neighbours.setdefault(a, set()).add(b)
        neighbours.setdefault(b, set()).add(a)
    tris = {tuple(sorted((a, b, c))) for a, b in edges for c in neighbours[a] & neighbours[b]}
    out = np.array(sorted(tris), dtype=np.int32)
    out.setflags(write=False)
    return out


def mouth_triangles() -> np.ndarray:
    """int32 [20, 3]: the strip across the inner-lip hole (warped, then covered by the mouth layer)."""
    return np.array(_strip(LIP_INNER_UPPER, LIP_INNER_LOWER), dtype=np.int32)


def eye_triangles() -> np.ndarray:
    """int32 [28, 3]: strips across both eye openings, so a lid moving down squeezes the eye shut."""
    return np.array(_strip(RIGHT_EYE_UPPER, RIGHT_EYE_LOWER) + _strip(LEFT_EYE_UPPER, LEFT_EYE_LOWER), dtype=np.int32)


@functools.lru_cache(maxsize=1)
def face_triangles() -> np.ndarray:
    """int32 [T, 3] over the 468 mesh points: tesselation + eye strips + mouth strip (covers the face oval)."""
    out = np.concatenate([tesselation_triangles(), eye_triangles(), mouth_triangles()])
    out.setflags(write=False)
    return out

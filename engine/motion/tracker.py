"""Face tracking (MediaPipe Face Mesh, 478 points) and head-pose normalisation of landmark sequences.

Head pose is a 2-D similarity (in-plane rotation or roll, scale, translation), fitted by least squares
(Umeyama) on the stable points only (forehead, nose bridge, eye corners, temples) against a canonical
mean shape. Yaw and pitch are not separated out: what they do to the 2-D mesh stays in the offsets,
and so in the expression PCA.

Units
-----
- landmarks: pixels, x right, y down (MediaPipe's z, scaled like x, is kept but unused).
- canonical frame: the mean shape, centred on its stable points, eye line horizontal, IOD = 1 (IOD: the
  outer eye-corner distance).
- pose [4] = (theta [rad], s [px per canonical unit], tx [px], ty [px]): image = s·R(theta)·canonical + t.
- relative pose [4] = (dtheta [rad], log rho, tau_x, tau_y): the similarity D = T0⁻¹∘Tt taking the
  neutral canonical shape to the current one; tau in canonical units (≈ IOD).
- offsets [F, 478, 2]: pose-normalised shape minus the neutral's pose-normalised shape, divided by the
  neutral's IOD in the canonical frame (units of the face's own IOD).

    with FaceTracker() as track:                          # video mode: one per stream and thread
        lm = track(frame)                                 # float32 [478, 3] px, or None
    lm, found = track_frames(frames)                      # float32 [F, 478, 3] px, bool [F]
    canon = fit_canonical([lm_clip1, lm_clip2, ...])      # float64 [478, 2]
    seq = normalise_sequence(lm[..., :2], canon)          # NormalisedSequence: pose, rel_pose, offsets, ...
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np

from livehead.engine.common.errors import InputError
from livehead.engine.media.face import quiet_stderr
from livehead.engine.media.landmarks import face_landmarks, landmarks_in_pixels, open_face_mesh
from livehead.engine.motion import mesh

STABLE = np.array(mesh.STABLE)
CANONICAL_ITERATIONS = 6  # generalised Procrustes rounds (converged well before)


def _check_rgb(image: np.ndarray) -> np.ndarray:
    image = np.ascontiguousarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected uint8 [H, W, 3] RGB, got {image.dtype} {list(image.shape)}")
    return image


class FaceTracker:
    """MediaPipe Face Mesh with iris refinement (478 points) over a stream of frames.

    static=False tracks from frame to frame (faster, steadier); the tracker keeps state, so use one per
    video stream and per thread. static=True measures every frame on its own.
    """

    def __init__(self, static: bool = False, min_confidence: float = 0.5):
        self._graph = open_face_mesh(static_image_mode=static, min_confidence=min_confidence)
        self._warmed = False

    def __call__(self, image: np.ndarray) -> np.ndarray | None:
        """uint8 RGB [H, W, 3] → float32 [478, 3] pixels (x, y, z scaled like x), or None when no face."""
        image = _check_rgb(image)
        h, w = image.shape[:2]
        # MediaPipe's C++ side logs set-up notes on a graph's first run
        with quiet_stderr() if not self._warmed else contextlib.nullcontext():
            result = self._graph.process(image)
        self._warmed = True
        if not result.multi_face_landmarks:
            return None
        return landmarks_in_pixels(result.multi_face_landmarks[0], w, h)

    def close(self) -> None:
        self._graph.close()

    def __enter__(self) -> FaceTracker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def detect(image: np.ndarray) -> np.ndarray:
    """Landmarks of one photo (uint8 RGB [H, W, 3]) → float32 [478, 3] pixels; InputError when no face."""
    lm = face_landmarks(_check_rgb(image))
    if lm is None:
        raise InputError("no face found in the photo; use a photo with one clearly visible face")
    return lm


def track_frames(frames, static: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Track uint8 RGB frames [F, H, W, 3] (or an iterable of [H, W, 3]) → (float32 [F, 478, 3] pixels, bool
    found [F]). A frame without a face holds the last face found (the first one found, at the start);
    InputError when no frame shows a face."""
    found: list[np.ndarray | None] = []
    with FaceTracker(static=static) as track:
        found = [track(f) for f in frames]
    ok = np.array([lm is not None for lm in found], dtype=bool)
    if not ok.any():
        raise InputError("no face found in any frame of the video; use a clip where one face is clearly visible")
    last = found[int(np.argmax(ok))]
    out = []
    for lm in found:
        last = last if lm is None else lm
        out.append(last)
    return np.stack(out), ok


# ------------------------------------------------------------------------------------------- similarity


def rotation(theta: np.ndarray) -> np.ndarray:
    """Rotation matrices: angles [...] → [..., 2, 2]."""
    c, s = np.cos(theta), np.sin(theta)
    return np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], -2)


def fit_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity dst ≈ s·R(theta)·src + t (Umeyama, closed form in 2-D): points [..., N, 2]
    (broadcast against each other) → pose [..., 4] (theta, s, tx, ty)."""
    src, dst = np.broadcast_arrays(np.asarray(src, np.float64), np.asarray(dst, np.float64))
    ms, md = src.mean(-2), dst.mean(-2)
    a, b = src - ms[..., None, :], dst - md[..., None, :]
    var = (a**2).sum((-2, -1))
    dot = (a * b).sum((-2, -1))
    cross = (a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]).sum(-1)
    theta = np.arctan2(cross, dot)  # (cos, sin)·s ∝ (Σ a·b, Σ a×b)
    s = np.hypot(dot, cross) / np.maximum(var, 1e-12)
    t = md - s[..., None] * np.einsum("...ij,...j->...i", rotation(theta), ms)
    return np.concatenate([theta[..., None], s[..., None], t], -1)


def fit_pose(lm2: np.ndarray, canon: np.ndarray) -> np.ndarray:
    """Absolute pose of landmarks [..., 478, 2+] against the canonical shape [478, 2] → [..., 4]."""
    return fit_similarity(canon[STABLE], np.asarray(lm2)[..., STABLE, :2])


def apply_pose(points: np.ndarray, pose: np.ndarray) -> np.ndarray:
    """Canonical points [..., N, 2] → image points under poses [..., 4]."""
    rot = rotation(pose[..., 0])
    return pose[..., 1, None, None] * np.einsum("...ij,...nj->...ni", rot, points) + pose[..., None, 2:4]


def to_canonical(lm2: np.ndarray, pose: np.ndarray) -> np.ndarray:
    """Image points [..., N, 2] → canonical frame under poses [..., 4] (the inverse of apply_pose)."""
    rot = rotation(pose[..., 0])
    return np.einsum("...ji,...nj->...ni", rot, lm2 - pose[..., None, 2:4]) / pose[..., 1, None, None]


def relative_pose(pose: np.ndarray, pose0: np.ndarray) -> np.ndarray:
    """D = T0⁻¹∘Tt as (dtheta, log rho, tau_x, tau_y): poses [..., 4] against a neutral pose [4] → [..., 4]."""
    dtheta = np.angle(np.exp(1j * (pose[..., 0] - pose0[0])))
    log_rho = np.log(pose[..., 1] / pose0[1])
    tau = np.einsum("ji,...j->...i", rotation(pose0[0]), pose[..., 2:4] - pose0[2:4]) / pose0[1]
    return np.concatenate([dtheta[..., None], log_rho[..., None], tau], -1)


def compose_pose(pose0: np.ndarray, rel: np.ndarray) -> np.ndarray:
    """Absolute poses T0∘D from a neutral pose [4] and relative poses [..., 4] → [..., 4]."""
    theta = pose0[0] + rel[..., 0]
    s = pose0[1] * np.exp(rel[..., 1])
    t = pose0[2:4] + pose0[1] * np.einsum("ij,...j->...i", rotation(pose0[0]), rel[..., 2:4])
    return np.concatenate([theta[..., None], s[..., None], t], -1)


def _normalise_shape(shape: np.ndarray) -> np.ndarray:
    """A shape [478, 2] centred on its stable points, eye line horizontal, IOD = 1."""
    shape = shape - shape[STABLE].mean(0)
    eye = shape[mesh.EYE_OUTER[1]] - shape[mesh.EYE_OUTER[0]]
    shape = shape @ rotation(-np.arctan2(eye[1], eye[0])).T
    return shape / np.linalg.norm(eye)


def fit_canonical(shapes: list[np.ndarray], iterations: int = CANONICAL_ITERATIONS) -> np.ndarray:
    """Generalised Procrustes mean of landmark sets (each [F_i, 478, 2+] or [478, 2+]) on the stable points
    → float64 [478, 2]: centred on the stable points, eye line horizontal, IOD = 1."""
    x = np.concatenate([np.asarray(s)[..., :2].reshape(-1, mesh.N_LANDMARKS, 2) for s in shapes]).astype(np.float64)
    ref = _normalise_shape(x[0])
    for _ in range(iterations):
        ref = _normalise_shape(to_canonical(x, fit_pose(x, ref)).mean(0))
    return ref


# -------------------------------------------------------------------------------------------- sequences


@dataclass(frozen=True)
class NormalisedSequence:
    """A landmark sequence of F frames, pose-normalised against its neutral shape (see the module's units)."""

    pose: np.ndarray  # [F, 4] absolute (theta, s, tx, ty), canonical → image
    rel_pose: np.ndarray  # [F, 4] (dtheta, log rho, tau_x, tau_y) relative to the neutral
    offsets: np.ndarray  # [F, 478, 2] pose-normalised offsets from the neutral, in units of the neutral's IOD
    eyes: np.ndarray  # [F, 2] eye openness (lid gap / IOD), right and left
    eyes_rel: np.ndarray  # [F, 2] eyes / the neutral's eye openness
    mouth: np.ndarray  # [F] mouth opening (inner-lip gap / IOD)
    neutral_pose: np.ndarray  # [4]
    neutral_canon: np.ndarray  # [478, 2] the neutral shape in the canonical frame
    neutral_iod: float  # the neutral's IOD in canonical units


def normalise_sequence(lm2: np.ndarray, canon: np.ndarray, neutral: np.ndarray | None = None) -> NormalisedSequence:
    """Pose-normalise landmarks [F, 478, 2+] (pixels) against a neutral shape [478, 2+] (pixels; default: the
    first frame) with the canonical shape canon [478, 2]."""
    lm2 = np.asarray(lm2, np.float64)[..., :2]
    neutral = lm2[0] if neutral is None else np.asarray(neutral, np.float64)[:, :2]
    pose, pose0 = fit_pose(lm2, canon), fit_pose(neutral, canon)
    shape, shape0 = to_canonical(lm2, pose), to_canonical(neutral, pose0)
    iod0 = float(mesh.iod(shape0))
    eyes, eyes0 = mesh.eye_openness(lm2), mesh.eye_openness(neutral)
    return NormalisedSequence(
        pose=pose, rel_pose=relative_pose(pose, pose0), offsets=(shape - shape0) / iod0, eyes=eyes,
        eyes_rel=eyes / np.maximum(eyes0, 1e-4), mouth=np.asarray(mesh.mouth_opening(lm2)), neutral_pose=pose0,
        neutral_canon=shape0, neutral_iod=iod0,
    )

"""Dense face landmarks (MediaPipe Face Mesh, 478 points) and the mouth / eye measures built on them.

    lm = face_landmarks(image)        # float32 [478, 3] in pixels (x, y, z), or None when no face
    mouth_opening(lm)                 # inner-lip gap / outer-eye-corner distance (0 = closed)
    mesh = open_face_mesh(static_image_mode=False)   # a FaceMesh graph of one's own (a video tracker)

The Face Mesh model (with the iris refinement: points 468..477) ships inside the `mediapipe` wheel,
so nothing is downloaded. Every frame is measured on its own (static-image mode, no tracking), so
frame-to-frame jitter of a video is the video's, not smoothed away by a tracker.

Units: every measure is divided by the distance between the two outer eye corners (points 33 and
263, "eye-corner distance", about 9 cm on an adult face), so it does not depend on the image size or
on how large the face is in the frame. Both the synthetic talker's ground truth and the evaluation use
these functions, so a perfect landmark detector measures exactly the generator's parameters.
"""

from __future__ import annotations

import contextlib
import os
import threading

import numpy as np

from livehead.engine.media.face import quiet_stderr

N_LANDMARKS = 478  # 468 mesh points + 2 x 5 iris points

# Outer eye corners (the subject's right eye is on the image's left).
EYE_OUTER = (33, 263)
EYE_INNER = (133, 362)
# Lip contours, each from the left mouth corner to the right one.
LIP_OUTER_UPPER = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291)
LIP_OUTER_LOWER = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291)
LIP_INNER_UPPER = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308)
LIP_INNER_LOWER = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308)
# Central inner-lip pairs (upper, lower) whose mean vertical gap is the mouth opening.
MOUTH_GAP_PAIRS = ((82, 87), (13, 14), (312, 317))
MOUTH_CORNERS = (78, 308)
# Eyelids, from the outer corner to the inner one; the two lids share their end points.
RIGHT_EYE_UPPER = (33, 246, 161, 160, 159, 158, 157, 173, 133)
RIGHT_EYE_LOWER = (33, 7, 163, 144, 145, 153, 154, 155, 133)
LEFT_EYE_UPPER = (263, 466, 388, 387, 386, 385, 384, 398, 362)
LEFT_EYE_LOWER = (263, 249, 390, 373, 374, 380, 381, 382, 362)
EYE_GAP_PAIRS = (((160, 144), (159, 145), (158, 153)), ((387, 373), (386, 374), (385, 380)))
IRIS = (tuple(range(468, 473)), tuple(range(473, 478)))
NOSE_TIP = 1
CHIN = 152
MIN_CONFIDENCE = 0.5  # FaceMesh's detection (and tracking) confidence

_mesh = None
_mesh_lock = threading.Lock()
_warmed = False


def open_face_mesh(static_image_mode: bool = True, max_num_faces: int = 1,
                   min_confidence: float = MIN_CONFIDENCE):
    """A new MediaPipe FaceMesh graph with the iris refinement (478 points), MediaPipe's logging quietened.

    static_image_mode=False makes a video tracker: it follows the face from frame to frame and keeps
    state, so a graph serves one stream and one thread at a time; close() it when done.
    """
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import mediapipe as mp

    with quiet_stderr():  # its C++ side logs set-up notes when the graph is built
        return mp.solutions.face_mesh.FaceMesh(
            static_image_mode=static_image_mode, max_num_faces=max_num_faces, refine_landmarks=True,
            min_detection_confidence=min_confidence, min_tracking_confidence=min_confidence,
        )


def _face_mesh():
    global _mesh
    if _mesh is None:
        _mesh = open_face_mesh(static_image_mode=True)
    return _mesh


def face_landmarks(image: np.ndarray) -> np.ndarray | None:
    """478 landmarks of the largest face in an RGB uint8 image [H, W, 3] → float32 [478, 3] pixels.

    x, y are pixel coordinates; z is MediaPipe's relative depth scaled like x (pixels, smaller =
    nearer the camera). None when no face is found.
    """
    global _warmed

    image = np.ascontiguousarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected uint8 [H, W, 3] RGB, got {image.dtype} {list(image.shape)}")
    h, w = image.shape[:2]
    with _mesh_lock:  # a MediaPipe graph is not safe to call from two threads at once
        # MediaPipe's C++ side logs set-up notes on the first run and on the first face found.
        with quiet_stderr() if not _warmed else contextlib.nullcontext():
            result = _face_mesh().process(image)
        _warmed = _warmed or bool(result.multi_face_landmarks)
    if not result.multi_face_landmarks:
        return None
    return landmarks_in_pixels(result.multi_face_landmarks[0], w, h)


def landmarks_in_pixels(face, width: int, height: int) -> np.ndarray | None:
    """One face of a FaceMesh result (an entry of `multi_face_landmarks`) → float32 [478, 3] pixels (z scaled
    like x), or None when it lacks the iris points."""
    out = np.array([(p.x * width, p.y * height, p.z * width) for p in face.landmark], dtype=np.float32)
    return out if out.shape[0] == N_LANDMARKS else None


def video_landmarks(frames) -> list[np.ndarray | None]:
    """face_landmarks of every frame (each on its own)."""
    return [face_landmarks(f) for f in frames]


def eye_corner_distance(lm: np.ndarray) -> float | np.ndarray:
    """Outer eye-corner distance of landmarks [478, 2+] (a float) or [..., 478, 2+] (an array [...])."""
    lm = np.asarray(lm)
    d = np.linalg.norm(lm[..., EYE_OUTER[0], :2] - lm[..., EYE_OUTER[1], :2], axis=-1)
    return float(d) if lm.ndim == 2 else d


def mouth_opening(lm: np.ndarray) -> float | np.ndarray:
    """Mean gap of the central inner-lip pairs / eye-corner distance. ~0 closed, ~0.1-0.25 speaking.
    Landmarks [478, 2+] give a float, [..., 478, 2+] an array [...]."""
    lm = np.asarray(lm)
    gap = np.mean([np.linalg.norm(lm[..., a, :2] - lm[..., b, :2], axis=-1) for a, b in MOUTH_GAP_PAIRS], axis=0)
    out = gap / np.maximum(eye_corner_distance(lm), 1e-6)
    return float(out) if lm.ndim == 2 else out


def mouth_width(lm: np.ndarray) -> float:
    """Inner mouth-corner distance / eye-corner distance."""
    a, b = MOUTH_CORNERS
    return float(np.linalg.norm(lm[a, :2] - lm[b, :2]) / max(eye_corner_distance(lm), 1e-6))


def eye_opening(lm: np.ndarray) -> float:
    """Mean lid gap of both eyes / eye-corner distance (~0.07-0.1 open, ~0.01 closed)."""
    gaps = [np.linalg.norm(lm[a, :2] - lm[b, :2]) for eye in EYE_GAP_PAIRS for a, b in eye]
    return float(np.mean(gaps) / max(eye_corner_distance(lm), 1e-6))


def series(landmarks: list[np.ndarray | None], measure) -> np.ndarray:
    """measure(lm) per frame as float64 [F]; NaN where no face was found."""
    return np.array([np.nan if lm is None else measure(lm) for lm in landmarks], dtype=np.float64)

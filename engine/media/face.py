"""Face detection and EchoMimic-style portrait preparation (crop + face-region mask).

    face = prepare_portrait(load_image("me.jpg"), size=512)
    face.image   # uint8 [512, 512, 3] RGB, square crop around the face
    face.mask    # float32 [512, 512], 1 inside the face region grown by 10 %, 0 outside
    detect_faces(image)   # every face as (x0, y0, x1, y1, score), largest first

Detection uses MediaPipe's BlazeFace (full-range model, short-range as a fallback); its models ship
inside the `mediapipe` wheel, so nothing is downloaded. The crop and mask follow EchoMimic v1's
pre-processing (SPEC 1.4): mask = box grown by 10 % of its height (rows) / width (cols) per side;
crop = box grown by 50 % per side, clipped to the image, then the centred square of side min(w, h);
both resized bilinearly, so the mask takes intermediate values at its edges.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from dataclasses import dataclass

import numpy as np

from livehead.engine.common.errors import InputError

MASK_DILATION = 0.1  # EchoMimic facemask_dilation_ratio
CROP_DILATION = 0.5  # EchoMimic facecrop_dilation_ratio
MIN_DETECTION_CONFIDENCE = 0.5

_detectors: dict[int, object] = {}
_warmed: set[int] = set()
_lock = threading.Lock()


@dataclass
class FaceCrop:
    image: np.ndarray  # uint8 [S, S, 3] RGB
    mask: np.ndarray  # float32 [S, S] in [0, 1]
    box: tuple[int, int, int, int]  # face box (x0, y0, x1, y1) in source pixels; whole image if not detected
    crop_box: tuple[int, int, int, int]  # square region (x0, y0, x1, y1) of the source that `image` shows
    detected: bool


def _detector(model_selection: int):
    """Cached MediaPipe FaceDetection; mediapipe is imported lazily with its logging quietened."""
    det = _detectors.get(model_selection)
    if det is None:
        os.environ.setdefault("GLOG_minloglevel", "2")
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        try:
            from absl import logging as absl_logging

            absl_logging.set_verbosity(absl_logging.ERROR)
        except ImportError:
            pass
        import mediapipe as mp

        det = mp.solutions.face_detection.FaceDetection(
            model_selection=model_selection, min_detection_confidence=MIN_DETECTION_CONFIDENCE
        )
        _detectors[model_selection] = det
    return det


@contextlib.contextmanager
def quiet_stderr():
    """Send file descriptor 2 to /dev/null for a moment.

    MediaPipe's C++ side (TF-Lite, absl) prints "Created TensorFlow Lite XNNPACK delegate" and an
    absl pre-init warning on a graph's first run, before GLOG_minloglevel takes effect; those
    bypass Python's sys.stderr, so only the descriptor can be silenced.
    """
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        yield
        return
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, 2)
        finally:
            os.close(devnull)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _run_detector(image: np.ndarray, model_selection: int) -> list[tuple[int, int, int, int, float]]:
    """Every face one BlazeFace model finds, as (x0, y0, x1, y1, score) in pixels, largest first."""
    h, w = image.shape[:2]
    with _lock:  # a MediaPipe graph is not safe to call from two threads at once
        first_run = model_selection not in _warmed
        with quiet_stderr() if first_run else contextlib.nullcontext():
            result = _detector(model_selection).process(image)
        _warmed.add(model_selection)
    found = []
    for det in result.detections or []:
        rb = det.location_data.relative_bounding_box
        x0 = int(round(max(0.0, rb.xmin) * w))
        y0 = int(round(max(0.0, rb.ymin) * h))
        x1 = int(round(min(1.0, rb.xmin + rb.width) * w))
        y1 = int(round(min(1.0, rb.ymin + rb.height) * h))
        if x1 - x0 < 2 or y1 - y0 < 2:
            continue
        score = float(det.score[0]) if det.score else 0.0
        found.append((x0, y0, x1, y1, score))
    return sorted(found, key=lambda b: (b[2] - b[0]) * (b[3] - b[1]), reverse=True)


def detect_faces(image: np.ndarray) -> list[tuple[int, int, int, int, float]]:
    """Every face in an RGB uint8 image [H, W, 3] as (x0, y0, x1, y1, score) in pixels, largest first
    (empty when none): the full-range model's faces, or the short-range model's when it finds none."""
    image = _as_rgb(image)
    found = _run_detector(image, 1)  # full-range model (faces up to ~5 m)
    if not found:
        found = _run_detector(image, 0)  # short-range model: close-ups the full-range one can miss
    return found


def detect_face(image: np.ndarray) -> tuple[int, int, int, int, float] | None:
    """Largest face in an RGB uint8 image as (x0, y0, x1, y1, score) in pixels, or None."""
    found = detect_faces(image)
    return found[0] if found else None


def _as_rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected uint8 [H, W, 3] RGB, got {image.dtype} {list(image.shape)}")
    return np.ascontiguousarray(image)


# Where the mouth lies inside the face box that a portrait's mask marks, as fractions (x0, y0, x1, y1) of
# the mask's bounding box. Measured with Face Mesh on the GRID clips and synthetic_talker clips (the mask
# is the detector's box dilated by MASK_DILATION): the outer lip contour spanned x 0.30-0.71, y 0.59-0.82.
MOUTH_BOX = (0.25, 0.55, 0.75, 0.90)


def mouth_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1) in pixels of the mouth region of a face mask [S, S] (its > 0.5 part's bounding
    box scaled by MOUTH_BOX), or None when the mask marks nothing. Training weights its loss there and
    the evaluation measures the audio's effect there."""
    on = np.asarray(mask) > 0.5
    rows, cols = np.nonzero(on.any(1))[0], np.nonzero(on.any(0))[0]
    if rows.size == 0:
        return None
    y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    fx0, fy0, fx1, fy1 = MOUTH_BOX
    return (round(x0 + fx0 * (x1 - x0)), round(y0 + fy0 * (y1 - y0)),
            round(x0 + fx1 * (x1 - x0)), round(y0 + fy1 * (y1 - y0)))


def blank_mouth(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """A copy of image [S, S, 3] uint8 with the mouth box of its face mask [S, S] set to mid-grey (128,
    ≈ 0 as pixels in [-1, 1]): the reference a reference decoder gets, so its mouth comes from the
    latents and the rest of the face from the photo."""
    out = np.array(image, dtype=np.uint8, copy=True)
    box = mouth_box(mask)
    if box is not None:
        x0, y0, x1, y1 = box
        out[y0:y1, x0:x1] = 128
    return out


def _face_mask(h: int, w: int, box: tuple[int, int, int, int]) -> np.ndarray:
    x0, y0, x1, y1 = box
    r_pad = int((y1 - y0) * MASK_DILATION)
    c_pad = int((x1 - x0) * MASK_DILATION)
    mask = np.zeros((h, w), dtype=np.float32)
    mask[max(0, y0 - r_pad) : min(h, y1 + r_pad), max(0, x0 - c_pad) : min(w, x1 + c_pad)] = 1.0
    return mask


def _centred_square(rect: tuple[int, int, int, int], h: int, w: int) -> tuple[int, int, int, int]:
    """EchoMimic's crop_and_pad square: side min(w, h) of `rect`, centred on it, inside the image."""
    x0, y0, x1, y1 = max(0, rect[0]), max(0, rect[1]), min(w, rect[2]), min(h, rect[3])
    side = min(x1 - x0, y1 - y0)
    cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
    sx0 = min(max(0, cx - side // 2), w - side)
    sy0 = min(max(0, cy - side // 2), h - side)
    return sx0, sy0, sx0 + side, sy0 + side


def _resize(image: np.ndarray, mask: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image

    resample = Image.Resampling.BILINEAR
    img = np.asarray(Image.fromarray(image).resize((size, size), resample), dtype=np.uint8)
    m = np.asarray(Image.fromarray(np.ascontiguousarray(mask, dtype=np.float32)).resize((size, size), resample))
    return np.ascontiguousarray(img), np.clip(m, 0.0, 1.0).astype(np.float32)


def prepare_portrait(image: np.ndarray, size: int, crop: bool = True) -> FaceCrop:
    """Square `size`x`size` portrait and face-region mask, as EchoMimic prepares its reference.

    crop=True needs a detectable face (InputError otherwise). crop=False keeps the whole image
    (centre square), still masking the detected face region, or everything when none is found.
    """
    image = _as_rgb(image)
    if size < 8:
        raise ValueError(f"portrait size must be at least 8, got {size}")
    h, w = image.shape[:2]
    found = detect_face(image)
    if found is None:
        if crop:
            raise InputError(
                "no face found in the portrait; use a clear, frontal, well-lit photo, "
                "or pass --no-crop to use the whole image"
            )
        box = (0, 0, w, h)
        mask = np.ones((h, w), dtype=np.float32)
    else:
        box = tuple(int(v) for v in found[:4])
        mask = _face_mask(h, w, box)

    if crop and found is not None:
        x0, y0, x1, y1 = box
        r_pad = int((y1 - y0) * CROP_DILATION)
        c_pad = int((x1 - x0) * CROP_DILATION)
        rect = (max(0, x0 - c_pad), max(0, y0 - r_pad), min(w, x1 + c_pad), min(h, y1 + r_pad))
    else:
        rect = (0, 0, w, h)
    crop_box = _centred_square(rect, h, w)
    cx0, cy0, cx1, cy1 = crop_box
    out_img, out_mask = _resize(image[cy0:cy1, cx0:cx1], mask[cy0:cy1, cx0:cx1], size)
    return FaceCrop(image=out_img, mask=out_mask, box=box, crop_box=crop_box, detected=found is not None)

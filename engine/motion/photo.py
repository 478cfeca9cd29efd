"""The user's photo, checked and prepared for the photo renderer: image, neutral landmarks, face mask.

    photo = prepare_photo(load_image("me.jpg"))      # Photo: image [H, W, 3], landmarks [478, 2], mask [H, W]
    smaller = fit_photo(photo, max_side=256)         # the same photo at another size
    photo = photo_from_landmarks(image, landmarks)   # landmarks known already: no checks, no resizing

Rules, in the order they are applied:
- pixels: uint8 only. Grey [H, W] or [H, W, 1] becomes RGB; grey + alpha [H, W, 2] and RGBA [H, W, 4]
  are composited over white, as `load_image` does with a transparent file (InputError for anything else).
- too small: a side under 64 pixels (as `load_image`) → InputError.
- size: resized (area filter) so the long side is at most `max_side` (default 512): a 6000×4000 photo
  becomes 512×340; then, where a side is odd, its last row or column is dropped, so both sides are even
  (H.264 needs even sides). The aspect ratio is kept to within a pixel; smaller photos are not enlarged.
- no face (BlazeFace, full-range model, short-range as a fallback) → InputError.
- several faces: a second face at least half as wide as the largest → InputError naming the count
  (smaller faces in the background are ignored; the largest face is the one animated).
- tiny face: narrower than 48 pixels at the prepared size → InputError (crop closer to the face).
- landmarks: MediaPipe Face Mesh (478 points) on a crop around the largest face; InputError when the mesh
  cannot be placed (a blurred or strongly turned face).
- mask: the face oval (from the landmarks) grown by 10 % about its centre, feathered: float32 in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from livehead.engine.common.errors import InputError
from livehead.engine.media.audio_video import MIN_IMAGE_SIDE, to_rgb
from livehead.engine.media.face import detect_faces
from livehead.engine.media.landmarks import face_landmarks
from livehead.engine.motion import mesh

DEFAULT_MAX_SIDE = 512
MIN_FACE_WIDTH = 48  # px at the prepared size: smaller faces give too coarse a mesh to animate
SECOND_FACE_FRACTION = 0.5  # a second face this wide (× the largest face's width) makes the photo ambiguous
CROP_MARGIN = 0.6  # the landmark crop: the face box grown by this fraction of its size on each side
MASK_GROWTH = 1.1  # the mask's face oval, scaled about its centre
MASK_FEATHER = 0.05  # the mask's soft edge: Gaussian sigma as a fraction of the eye-corner distance


@dataclass(frozen=True)
class Photo:
    """A prepared photo; the arrays are read-only, so one Photo serves any number of renderers and threads."""

    image: np.ndarray  # uint8 [H, W, 3] RGB, both sides even
    landmarks: np.ndarray  # float64 [478, 2] the neutral face's landmarks, in the image's pixels
    mask: np.ndarray  # float32 [H, W] the face region, in [0, 1]

    def __post_init__(self):
        for name in ("image", "landmarks", "mask"):
            a = np.array(getattr(self, name))
            a.setflags(write=False)
            object.__setattr__(self, name, a)

    @property
    def height(self) -> int:
        return self.image.shape[0]

    @property
    def width(self) -> int:
        return self.image.shape[1]


def fitted_size(height: int, width: int, max_side: int) -> tuple[int, int]:
    """(h, w) of an image resized so its long side is at most max_side (never enlarged), before the odd
    row or column is dropped."""
    scale = min(1.0, max_side / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def _fit_image(image: np.ndarray, max_side: int) -> np.ndarray:
    """image [H, W(, C)] resized to fitted_size (area filter), then cropped to even sides."""
    import cv2

    h, w = image.shape[:2]
    fh, fw = fitted_size(h, w, max_side)
    if (fh, fw) != (h, w):
        image = cv2.resize(image, (fw, fh), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(image[: fh - fh % 2, : fw - fw % 2])


def fit_photo(photo: Photo, max_side: int = DEFAULT_MAX_SIDE) -> Photo:
    """The photo resized so its long side is at most max_side, with even sides (the same Photo when it
    already is)."""
    if max_side < MIN_IMAGE_SIDE:
        raise ValueError(f"max_side must be at least {MIN_IMAGE_SIDE}, got {max_side}")
    h, w = photo.height, photo.width
    if max(h, w) <= max_side and h % 2 == 0 and w % 2 == 0:
        return photo
    fh, fw = fitted_size(h, w, max_side)
    return Photo(image=_fit_image(photo.image, max_side), landmarks=photo.landmarks * [fw / w, fh / h],
                 mask=np.clip(_fit_image(photo.mask, max_side), 0.0, 1.0))


def face_mask(landmarks: np.ndarray, height: int, width: int) -> np.ndarray:
    """The face oval of landmarks [478, 2+] grown by MASK_GROWTH and feathered → float32 [height, width]."""
    import cv2

    oval = np.asarray(landmarks, np.float64)[list(mesh.FACE_OVAL), :2]
    centre = oval.mean(0)
    grown = centre + MASK_GROWTH * (oval - centre)
    mask = np.zeros((height, width), np.float32)
    cv2.fillPoly(mask, [np.round(grown * 16).astype(np.int32)], 1.0, lineType=cv2.LINE_AA, shift=4)
    sigma = max(1.0, MASK_FEATHER * float(mesh.iod(landmarks)))
    return np.clip(cv2.GaussianBlur(mask, (0, 0), sigma), 0.0, 1.0)


def photo_from_landmarks(image: np.ndarray, landmarks: np.ndarray) -> Photo:
    """A Photo of an image (uint8 [H, W(, C)], converted as by prepare_photo) whose neutral landmarks
    [478, 2+] (its pixels) are already known: taken as they are, without the face checks, not resized."""
    rgb = to_rgb(image)
    landmarks = np.asarray(landmarks, np.float64)
    if landmarks.shape[0] != mesh.N_LANDMARKS or landmarks.ndim != 2 or landmarks.shape[1] < 2:
        raise ValueError(f"landmarks must be [478, 2], got {list(landmarks.shape)}")
    return Photo(image=rgb, landmarks=landmarks[:, :2], mask=face_mask(landmarks, *rgb.shape[:2]))


def _landmarks_around(image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray | None:
    """Face Mesh landmarks of the face in `box` (x0, y0, x1, y1), found on a crop around it → [478, 2]."""
    h, w = image.shape[:2]
    x0, y0, x1, y1 = box
    mx, my = CROP_MARGIN * (x1 - x0), CROP_MARGIN * (y1 - y0)
    cx0, cy0 = max(0, int(x0 - mx)), max(0, int(y0 - my))
    cx1, cy1 = min(w, int(np.ceil(x1 + mx))), min(h, int(np.ceil(y1 + my)))
    lm = face_landmarks(np.ascontiguousarray(image[cy0:cy1, cx0:cx1]))
    return None if lm is None else lm[:, :2].astype(np.float64) + [cx0, cy0]


def prepare_photo(image: np.ndarray, max_side: int = DEFAULT_MAX_SIDE) -> Photo:
    """Check and prepare a photo (uint8 [H, W], [H, W, 1], [H, W, 2], [H, W, 3] or [H, W, 4]) for the
    renderer, by the rules in this module's docstring; InputError with what to do when it cannot be used."""
    rgb = to_rgb(image)
    h, w = rgb.shape[:2]
    if min(h, w) < MIN_IMAGE_SIDE:
        raise InputError(f"the photo is too small ({w}x{h}); each side must be at least {MIN_IMAGE_SIDE} pixels")
    if max_side < MIN_IMAGE_SIDE:
        raise ValueError(f"max_side must be at least {MIN_IMAGE_SIDE}, got {max_side}")
    rgb = _fit_image(rgb, max_side)
    h, w = rgb.shape[:2]
    faces = detect_faces(rgb)
    if not faces:
        raise InputError("no face found in the photo; use a photo with one clearly visible face")
    widths = [x1 - x0 for x0, _, x1, _, _ in faces]
    count = sum(wd >= SECOND_FACE_FRACTION * widths[0] for wd in widths)
    if count > 1:
        raise InputError(f"found {count} faces in the photo; use a photo of one person (or crop it to one face)")
    if widths[0] < MIN_FACE_WIDTH:
        raise InputError(
            f"the face is too small ({widths[0]} px wide in the photo scaled to {w}x{h}); it must be at least "
            f"{MIN_FACE_WIDTH} px wide: crop the photo closer to the face"
        )
    landmarks = _landmarks_around(rgb, faces[0][:4])
    if landmarks is None:
        raise InputError("found a face but could not place its landmarks; use a sharp, frontal, well-lit photo")
    return Photo(image=rgb, landmarks=landmarks, mask=face_mask(landmarks, h, w))

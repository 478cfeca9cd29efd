"""Synthetic talking portraits: one photo + phoneme-aligned speech → a video whose face talks, with
every mouth, eye and head parameter known exactly per frame.

    talker = SyntheticTalker(load_image("me.png"), size=128, style=TalkerStyle.sample(rng))
    clip = talker.render(synthesize_speech("Hello there."))
    clip.frames        # uint8 [F, 128, 128, 3] at 25 fps, the face crop `prepare_portrait` would make
    clip.params        # per-frame ground truth: mouth_open, mouth_width, jaw, blink, yaw, pitch, roll, ...
    clip.landmarks     # float32 [F, 478, 2]: where every Face Mesh point of the portrait went
    write_clip(clip, "out/clip0")  # out/clip0.mp4 (H.264 + AAC) + .json (params, phones) + .npz (landmarks)

    python -m livehead.engine.synth.make_clips --portrait engine/assets/portrait.png --out DIR --clips 8

It is the teacher's training data and the ground truth of the lip-sync evaluation.

How a frame is made (all in the portrait's crop, rendered at `supersample` x the output size, then
area-downsampled):

1. Face Mesh (478 points) on the portrait once, plus two rings of points around the face (head
   outline, moving with the head; shoulders/neck, moving 40 % with it) and fixed points on the
   image border. One Delaunay triangulation of these points, made with the mouth held open so the
   lip gap has its own triangles, serves every frame.
2. Per frame the points move: the identity's static shape changes (augmentation: face width and
   length, chin, eye size, mouth width, lip thickness), then the mouth (viseme targets with
   coarticulation, `engine.speech_alignment`: inner-lip gap, width, rounding; the jaw rotates about
   its hinge, so points move in proportion to their depth in front of it), the eyelids (blinks),
   and the head (small 3-D rotation of the mesh with MediaPipe's depth, translation and scale).
3. A piecewise-affine warp maps every output pixel back into the portrait through its triangle.
4. The mouth interior is drawn inside the moved inner-lip contour: a dark cavity, the upper teeth
   under the upper lip, lower teeth and the tongue when wide open.

Ground truth `mouth_open` is `engine.landmarks.mouth_opening` of the moved points, the same measure
the evaluation takes from a video's detected landmarks.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from livehead.engine.common.constants import FPS
from livehead.engine.common.errors import InputError
from livehead.engine.media import landmarks as L
from livehead.engine.media.audio_video import Mp4Writer
from livehead.engine.media.face import prepare_portrait
from livehead.engine.media.warp import border_points, delaunay_triangles, piecewise_affine_warp
from livehead.engine.synth.speech_alignment import AlignedSpeech, Phone, frame_times, silent_frames, viseme_tracks

OPEN_FOR_TRIANGULATION = 0.22  # mouth opening at which the triangulation is made
RING_HEAD = 1.35  # face-oval scale of the ring that moves with the head (hair, ears)
RING_BODY = 1.9  # ... of the ring that moves partly with it (neck, shoulders)
BODY_FOLLOW = 0.4
BLINK_MEET = 0.3  # closed lids meet 30 % of the way up from the lower lid
BLINK_SECONDS = (0.08, 0.05, 0.14)  # closing, closed, opening
EYES = ((L.RIGHT_EYE_UPPER, L.RIGHT_EYE_LOWER), (L.LEFT_EYE_UPPER, L.LEFT_EYE_LOWER))


# ------------------------------------------------------------------------------------------- style


@dataclass
class TalkerStyle:
    """Per-clip randomisation: who the face looks like and how it talks. Defaults = the photo as is."""

    flip: bool = False
    zoom: float = 1.0  # crop side x zoom (> 1: the face looks smaller)
    shift: tuple[float, float] = (0.0, 0.0)  # crop centre offset, fraction of the crop side
    brightness: float = 1.0
    contrast: float = 1.0
    saturation: float = 1.0
    hue: float = 0.0  # degrees
    gamma: float = 1.0
    face_width: float = 0.0  # relative static shape changes of the identity
    face_length: float = 0.0
    chin: float = 0.0
    eye_size: float = 0.0
    mouth_width: float = 0.0
    lip_thickness: float = 0.0  # in eye-corner distances
    articulation: float = 1.0  # scales the viseme openings
    jaw_share: float = 0.7  # part of the opening made by the jaw (the rest by the upper lip)
    head_motion: float = 1.0
    blink_interval: float = 3.5  # mean seconds between blinks (0: never)
    teeth: float = 1.0  # visible upper-teeth height scale
    cavity_rgb: tuple[int, int, int] = (52, 18, 20)
    teeth_rgb: tuple[int, int, int] = (228, 222, 208)

    @staticmethod
    def sample(rng: np.random.Generator) -> TalkerStyle:
        u = rng.uniform
        return TalkerStyle(
            flip=bool(rng.random() < 0.5), zoom=u(0.92, 1.08), shift=(u(-0.04, 0.04), u(-0.04, 0.04)),
            brightness=u(0.8, 1.2), contrast=u(0.8, 1.2), saturation=u(0.7, 1.3), hue=u(-8, 8), gamma=u(0.85, 1.15),
            face_width=u(-0.06, 0.06), face_length=u(-0.05, 0.05), chin=u(-0.08, 0.08), eye_size=u(-0.1, 0.12),
            mouth_width=u(-0.08, 0.08), lip_thickness=u(-0.01, 0.02), articulation=u(0.8, 1.25),
            jaw_share=u(0.6, 0.85), head_motion=u(0.3, 1.3), blink_interval=u(2.0, 6.0), teeth=u(0.4, 1.2),
            cavity_rgb=tuple(int(round(c * u(35, 80))) for c in (1.0, 0.4, 0.42)),
            teeth_rgb=tuple(int(round(c * u(200, 245))) for c in (1.0, 0.97, u(0.9, 0.95))),
        )


@dataclass
class SyntheticClip:
    frames: np.ndarray  # uint8 [F, S, S, 3]
    pcm: np.ndarray  # float32 [T] mono
    sample_rate: int
    fps: int
    params: dict[str, np.ndarray]  # each float64 [F]
    landmarks: np.ndarray  # float32 [F, 478, 2] in output pixels (x, y)
    silent: np.ndarray  # bool [F]: frame centre inside a pause of the alignment
    phones: list[Phone]
    style: TalkerStyle
    text: str = ""
    meta: dict = field(default_factory=dict)


# ------------------------------------------------------------------------------------- image prep


def _colour_jitter(img: np.ndarray, s: TalkerStyle) -> np.ndarray:
    x = img.astype(np.float32) / 255.0
    x = np.power(x, s.gamma)
    x = x * s.brightness
    x = (x - x.mean()) * s.contrast + x.mean()
    grey = x @ np.array([0.299, 0.587, 0.114], np.float32)
    x = grey[..., None] + (x - grey[..., None]) * s.saturation
    if s.hue:
        # Rotate the chroma plane (YIQ) by `hue` degrees.
        yiq = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], np.float32)
        a = math.radians(s.hue)
        rot = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]], np.float32)
        x = x @ (np.linalg.inv(yiq) @ rot @ yiq).T
    return (np.clip(x, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def crop_portrait(image: np.ndarray, size: int, style: TalkerStyle) -> np.ndarray:
    """EchoMimic-style face crop (as `engine.face.prepare_portrait`) with the style's flip, zoom,
    shift and colour → uint8 [size, size, 3]. InputError when no face is found."""
    import cv2

    img = np.ascontiguousarray(image[:, ::-1] if style.flip else image)
    crop = prepare_portrait(img, 16)  # only the crop box is used
    x0, y0, x1, y1 = crop.crop_box
    side = (x1 - x0) * style.zoom
    cx = (x0 + x1) / 2 + style.shift[0] * side
    cy = (y0 + y1) / 2 + style.shift[1] * side
    k = size / side
    if k < 1:  # shrink the whole photo with an area filter first (warpAffine has none)
        h, w = img.shape[:2]
        nw, nh = max(1, int(round(w * k))), max(1, int(round(h * k)))
        img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA)
        cx, cy, k = cx * nw / w, cy * nh / h, size / (side * nw / w)
    m = np.array([[k, 0, size / 2 - k * cx], [0, k, size / 2 - k * cy]], np.float64)
    out = cv2.warpAffine(img, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return _colour_jitter(out, style)


# ------------------------------------------------------------------------------------- the talker


def _smoothstep(x, a, b):
    t = np.clip((x - a) / (b - a), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def _rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """3-D rotation (degrees) in image axes: x right, y down, z away from the camera."""
    y, p, r = (math.radians(a) for a in (yaw, pitch, roll))
    ry = np.array([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
    rx = np.array([[1, 0, 0], [0, math.cos(p), -math.sin(p)], [0, math.sin(p), math.cos(p)]])
    rz = np.array([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]])
    return rz @ rx @ ry


def head_motion(n_frames: int, fps: float, rng: np.random.Generator, amount: float = 1.0,
                speech_open: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Smooth small head motion: each of yaw/pitch/roll (degrees), tx/ty (fraction of the frame) and
    scale is a sum of three slow sinusoids (0.08-0.6 Hz) with random phases; speech adds small nods."""
    t = np.arange(n_frames) / fps
    limits = {"yaw": 4.0, "pitch": 3.0, "roll": 2.0, "tx": 0.012, "ty": 0.012, "scale": 0.015}
    out = {}
    for name, lim in limits.items():
        freqs = rng.uniform(0.08, 0.6, 3)
        phases = rng.uniform(0, 2 * np.pi, 3)
        weights = rng.dirichlet(np.ones(3))
        out[name] = amount * lim * (weights[None, :] * np.sin(2 * np.pi * freqs[None, :] * t[:, None]
                                                              + phases[None, :])).sum(axis=1)
    if speech_open is not None and len(speech_open):
        k = max(1, int(0.2 * fps))
        nod = np.convolve(speech_open, np.ones(k) / k, mode="same")
        out["pitch"] = out["pitch"] + amount * 8.0 * nod  # degrees per unit of mouth opening
    out["scale"] = 1.0 + out["scale"]
    return out


def blink_track(n_frames: int, fps: float, rng: np.random.Generator, interval: float) -> np.ndarray:
    """Eyelid closure per frame in [0, 1]: blinks at random times (exponential gaps, >= 1 s apart)."""
    t = frame_times(n_frames, fps)
    out = np.zeros(n_frames)
    if interval <= 0:
        return out
    close, hold, reopen = BLINK_SECONDS
    start = rng.uniform(0.3, interval)
    while start < t[-1] + 1:
        a = np.clip((t - start) / close, 0, 1)
        b = np.clip((t - start - close - hold) / reopen, 0, 1)
        out = np.maximum(out, np.where(t < start + close + hold, a, 1 - b) * (t >= start))
        start += max(1.0, rng.exponential(interval))
    return np.clip(out, 0, 1)


class SyntheticTalker:
    """Animates one portrait. `size`: output side in pixels; frames are rendered at
    `size * supersample` and area-downsampled."""

    def __init__(self, portrait: np.ndarray, size: int = 128, style: TalkerStyle | None = None,
                 supersample: int = 2):
        import cv2
        import mediapipe as mp

        if size < 32:
            raise InputError(f"synthetic clip size must be at least 32 pixels, got {size}")
        self.style = style or TalkerStyle()
        self.size = int(size)
        self.ss = int(supersample)
        W = self.W = self.size * self.ss
        self.image = crop_portrait(portrait, W, self.style)
        lm = L.face_landmarks(self.image)
        if lm is None:
            raise InputError("no face landmarks found in the portrait; use a clear, frontal, well-lit face photo")
        self.src_lm = lm.astype(np.float64)
        self.iod = L.eye_corner_distance(lm)

        # Face frame: origin at the mouth centre, ex along the eye line, ey down the face.
        ex = lm[L.EYE_OUTER[1], :2] - lm[L.EYE_OUTER[0], :2]
        self.ex = ex / np.linalg.norm(ex)
        self.ey = np.array([-self.ex[1], self.ex[0]])
        self.m0 = np.mean([lm[i, :2] for pair in L.MOUTH_GAP_PAIRS for i in pair], axis=0).astype(np.float64)

        oval = np.array(sorted({a for e in mp.solutions.face_mesh.FACEMESH_FACE_OVAL for a in e}))
        centre = lm[oval].mean(axis=0).astype(np.float64)
        rings, follow = [], []
        for scale, amount in ((RING_HEAD, 1.0), (RING_BODY, BODY_FOLLOW)):
            pts = centre + (lm[oval].astype(np.float64) - centre) * np.array([scale, scale, 1.0])
            keep = (pts[:, 0] > 0.03 * W) & (pts[:, 0] < 0.97 * W) & (pts[:, 1] > 0.03 * W) & (pts[:, 1] < 0.97 * W)
            rings.append(pts[keep])
            follow += [amount] * int(keep.sum())
        border = border_points(W)
        border = np.concatenate([border, np.full((len(border), 1), centre[2])], axis=1)
        self.n_face = L.N_LANDMARKS
        self.points = np.concatenate([self.src_lm] + rings + [border])  # [N, 3] source control points
        self.follow = np.concatenate([np.ones(self.n_face), np.array(follow), np.zeros(len(border))])

        self._setup_weights(oval)
        self.lip_rgb = self._close_source_mouth(cv2)
        self.base = self._static_shape(self.points.copy())
        self.base_open = L.mouth_opening(self.base[: self.n_face])
        self.inner_pairs = (np.array(L.LIP_INNER_UPPER[1:-1]), np.array(L.LIP_INNER_LOWER[1:-1]))
        self.base_gaps = (self.base[self.inner_pairs[1], :2] - self.base[self.inner_pairs[0], :2]) @ self.ey
        self.pivot = np.array([self.m0[0], lm[L.CHIN, 1], float(lm[: self.n_face, 2].mean()) + 0.8 * self.iod])
        # one Delaunay triangulation, of the open-mouth configuration, serves every frame
        self.triangles = delaunay_triangles(self.expression(OPEN_FOR_TRIANGULATION, 0.0, 0.0, 0.0)[:, :2], W)

    # -- geometry set-up

    def _uv(self, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        d = pts[:, :2] - self.m0
        return d @ self.ex, d @ self.ey

    def _setup_weights(self, oval: np.ndarray) -> None:
        n = self.n_face
        u, v = self._uv(self.points[:n])
        iod = self.iod
        hw = 0.5 * np.linalg.norm(self.src_lm[L.MOUTH_CORNERS[0], :2] - self.src_lm[L.MOUTH_CORNERS[1], :2])
        self.half_width = max(hw, 0.15 * iod)
        self.base_open_src = L.mouth_opening(self.src_lm)
        self.upper = np.array(sorted(set(L.LIP_INNER_UPPER + L.LIP_OUTER_UPPER) - set(L.MOUTH_CORNERS) - {61, 291}))
        self.lower = np.array(sorted(set(L.LIP_INNER_LOWER + L.LIP_OUTER_LOWER) - set(L.MOUTH_CORNERS) - {61, 291}))
        lips = np.zeros(n, bool)
        lips[self.upper] = lips[self.lower] = True
        lips[list(L.MOUTH_CORNERS) + [61, 291]] = True
        self.lips = lips
        self.prof = np.sqrt(np.clip(1 - (u / (1.08 * self.half_width)) ** 2, 0, 1))  # opening profile along the mouth

        # Jaw: points below the mouth line rotate with the jaw; frontal displacement ~ depth in front of the hinge.
        z = self.src_lm[:, 2]
        z_hinge = float(np.percentile(z[oval], 90))
        z_chin = float(z[L.CHIN])
        depth = np.clip((z_hinge - z) / max(z_hinge - z_chin, 1e-6), 0, 1)
        self.w_jaw = _smoothstep(v / iod, -0.02, 0.12) * depth
        self.w_jaw[lips] = 0.0
        r = np.hypot(u, 1.4 * v) / iod
        self.w_up = np.where(v < 0, np.exp(-((r / 0.3) ** 2)), 0.0)
        self.w_up[lips] = 0.0
        self.w_width = np.where(lips, 1.0, 0.7 * np.exp(-((np.maximum(r - self.half_width / iod, 0) / 0.2) ** 2)))
        self.u0 = u  # position along the mouth (pixels), for the per-point weights

    def _close_source_mouth(self, cv2) -> np.ndarray:
        """Paint over whatever shows between the portrait's lips (teeth of a smile, an open mouth) with
        lip texture, so every frame's mouth interior is the drawn one. Returns the lips' median RGB."""
        lm, W = self.src_lm, self.W
        q = lambda idx: np.round(lm[list(idx), :2] * 16).astype(np.int32)
        outer = np.zeros((W, W), np.uint8)
        cv2.fillPoly(outer, [np.concatenate([q(L.LIP_OUTER_UPPER), q(L.LIP_OUTER_LOWER)[::-1]])], 255, shift=4)
        inner = np.zeros((W, W), np.uint8)
        cv2.fillPoly(inner, [np.concatenate([q(L.LIP_INNER_UPPER), q(L.LIP_INNER_LOWER)[::-1]])], 255, shift=4)
        band = (outer > 0) & (inner == 0)
        if not band.any():
            return np.array([170.0, 90.0, 90.0])
        img = self.image.astype(np.float32)
        redness = img[..., 0] - 0.5 * (img[..., 1] + img[..., 2])
        lip_red = float(np.percentile(redness[band], 75))
        lip = band & (redness >= np.percentile(redness[band], 50))
        lip_rgb = np.median(self.image[lip], axis=0)
        # Near the inner contour, whatever is much less red than the lips is teeth or mouth cavity.
        grow = max(1, int(round(0.02 * self.iod)))
        near = cv2.dilate(inner, np.ones((6 * grow + 1, 6 * grow + 1), np.uint8)) > 0
        if self.base_open_src > 0.01:
            inner = cv2.dilate(inner, np.ones((2 * grow + 1, 2 * grow + 1), np.uint8))
        mask = (inner > 0) | (near & (outer > 0) & (redness < 0.5 * lip_red))
        if mask.any():
            self.image = cv2.inpaint(self.image, mask.astype(np.uint8) * 255, 2 * grow, cv2.INPAINT_TELEA)
        return lip_rgb

    def _static_shape(self, pts: np.ndarray) -> np.ndarray:
        """The style's identity changes (fixed over the clip) applied to the face points."""
        s, n, iod = self.style, self.n_face, self.iod
        u, v = self._uv(pts[:n])
        du = s.face_width * u + s.mouth_width * u * self.lips
        dv = s.face_length * v + s.chin * np.maximum(v, 0)
        lt = s.lip_thickness * iod * self.prof
        outer_up = np.array([i for i in L.LIP_OUTER_UPPER if i not in (61, 291)])
        outer_low = np.array([i for i in L.LIP_OUTER_LOWER if i not in (61, 291)])
        dv[outer_up] -= lt[outer_up]
        dv[outer_low] += lt[outer_low]
        pts[:n, :2] += du[:, None] * self.ex + dv[:, None] * self.ey
        if s.eye_size:
            for eye, iris in zip(EYES, L.IRIS):
                idx = np.array(sorted(set(eye[0] + eye[1] + iris)))
                c = pts[idx, :2].mean(axis=0)
                pts[idx, :2] = c + (pts[idx, :2] - c) * (1 + s.eye_size)
        return pts

    # -- per-frame geometry

    def expression(self, open_: float, width: float, round_: float, blink: float) -> np.ndarray:
        """Control points [N, 3] with the mouth at inner-lip gap `open_` (eye-corner distances),
        relative width change `width`, rounding `round_` and eyelid closure `blink` (no head pose)."""
        pts = self.base.copy()
        n, iod, s = self.n_face, self.iod, self.style
        open_ = max(open_, 0.0)
        d = (open_ - self.base_open) * iod  # pixels the central lip gap must change by
        # Each inner-lip pair moves to the target gap times the opening profile (an ellipse; flatter when
        # rounded); outer lip points follow the inner pair at their place along the mouth.
        prof = self.prof ** (1 - 0.5 * round_)
        up_i, _lo_i = self.inner_pairs
        change = open_ * iod * prof[up_i] - self.base_gaps
        order = np.argsort(self.u0[up_i])
        at = lambda idx: np.interp(self.u0[idx], self.u0[up_i][order], change[order], left=0.0, right=0.0)
        dv = np.zeros(n)
        dv[self.lower] += s.jaw_share * at(self.lower)
        dv[self.upper] -= (1 - s.jaw_share) * at(self.upper)
        jaw, lip = s.jaw_share * d, (1 - s.jaw_share) * d
        dv += jaw * self.w_jaw - 0.4 * lip * self.w_up
        du = (width - 0.2 * round_) * self.u0 * self.w_width
        pts[:n, :2] += du[:, None] * self.ex + dv[:, None] * self.ey
        # The inner lips never cross: a pair that would is met half way.
        for up, lo in zip(L.LIP_INNER_UPPER[1:-1], L.LIP_INNER_LOWER[1:-1]):
            gap = (pts[lo, :2] - pts[up, :2]) @ self.ey
            if gap < 0.02:
                mid = 0.5 * (pts[lo, :2] + pts[up, :2])
                pts[up, :2] = mid - 0.01 * self.ey
                pts[lo, :2] = mid + 0.01 * self.ey
        if blink > 0:
            self._blink(pts, blink)
        return pts

    def _blink(self, pts: np.ndarray, amount: float) -> None:
        for (upper, lower), iris in zip(EYES, L.IRIS):
            up, lo = np.array(upper[1:-1]), np.array(lower[1:-1])
            meet = pts[lo, :2] + BLINK_MEET * (pts[up, :2] - pts[lo, :2])
            # Iris points: squeezed towards the meeting line at their position along the eye.
            ui = (pts[list(iris), :2] - self.m0) @ self.ex
            um = (meet - self.m0) @ self.ex
            vm = (meet - self.m0) @ self.ey
            order = np.argsort(um)
            vi_meet = np.interp(ui, um[order], vm[order])
            vi = (pts[list(iris), :2] - self.m0) @ self.ey
            pts[list(iris), :2] += (amount * (vi_meet - vi))[:, None] * self.ey
            pts[up, :2] += amount * (meet - pts[up, :2])
            pts[lo, :2] += amount * (meet - pts[lo, :2])

    def pose(self, pts: np.ndarray, yaw: float, pitch: float, roll: float, tx: float, ty: float,
             scale: float) -> np.ndarray:
        """Head pose applied to the moving points (rings partly) → target positions [N, 2]."""
        out = pts[:, :2].copy()
        for amount in np.unique(self.follow[self.follow > 0]):
            idx = np.nonzero(self.follow == amount)[0]
            rot = _rotation(yaw * amount, pitch * amount, roll * amount)
            p = (pts[idx] - self.pivot) @ rot.T * (1 + (scale - 1) * amount) + self.pivot
            out[idx] = p[:, :2] + amount * np.array([tx, ty]) * self.W
        return out

    # -- rendering

    def warp(self, target: np.ndarray) -> np.ndarray:
        """Piecewise-affine warp of the portrait so its control points land on `target` [N, 2]."""
        if getattr(self, "_grid", None) is None:
            self._grid = np.mgrid[0:self.W, 0:self.W].astype(np.float32)
        return piecewise_affine_warp(self.image, self.points[:, :2], target, self.triangles, self._grid)

    def draw_mouth(self, img: np.ndarray, lm: np.ndarray) -> None:
        """Lip seam, cavity, teeth and tongue inside the inner-lip contour of `lm` [478, 2] (in place)."""
        import cv2

        s, iod = self.style, self.iod
        # Work in a box around the lips only.
        box = lm[list(L.LIP_OUTER_UPPER + L.LIP_OUTER_LOWER)]
        margin = 0.1 * iod + 4
        x0, y0 = (max(0, int(v - margin)) for v in box.min(axis=0))
        x1, y1 = (min(self.W, int(v + margin) + 1) for v in box.max(axis=0))
        if x1 - x0 < 4 or y1 - y0 < 4:
            return
        img = img[y0:y1, x0:x1]  # a view: drawing into it draws into the frame
        lm = lm - np.array([x0, y0], np.float64)
        H, W = img.shape[:2]
        up = lm[list(L.LIP_INNER_UPPER)]
        lo = lm[list(L.LIP_INNER_LOWER)]
        q = lambda p: np.round(np.asarray(p) * 16).astype(np.int32)
        # Where the lips meet: a thin darker line (it is all that shows of the mouth when closed).
        seam = np.zeros((H, W), np.uint8)
        cv2.polylines(seam, [q(0.5 * (up + lo))], False, 255, max(1, int(round(0.025 * iod))), cv2.LINE_AA, shift=4)
        a = (0.45 * seam.astype(np.float32) / 255.0)[..., None]
        img[:] = (img * (1 - a) + (0.55 * self.lip_rgb) * a + 0.5).astype(np.uint8)
        gap = L.mouth_opening(lm) * iod
        if gap < 0.3:
            return
        poly = np.concatenate([up, lo[::-1][1:-1]])
        alpha = np.zeros((H, W), np.uint8)
        cv2.fillPoly(alpha, [q(poly)], 255, lineType=cv2.LINE_AA, shift=4)
        layer = np.empty(img.shape, np.float32)
        layer[:] = s.cavity_rgb
        ey, ex = self.ey, self.ex
        width = np.linalg.norm(up[-1] - up[0])
        centre = 0.5 * (up[0] + up[-1])
        if gap > 0.08 * iod:  # tongue: low in the cavity, visible when open
            c = lo[len(lo) // 2] - 0.15 * gap * ey
            axes = (int(0.3 * width * 16), int(0.3 * gap * 16))
            tongue = tuple(float(min(255, v * 2.2 + 25)) for v in s.cavity_rgb)
            cv2.ellipse(layer, tuple(int(v) for v in q(c)), axes, math.degrees(math.atan2(ex[1], ex[0])), 0, 360,
                        tongue, -1, cv2.LINE_AA, shift=4)
        th = min(0.35 * gap, 0.07 * iod) * s.teeth * float(_smoothstep(gap / iod, 0.02, 0.06))
        if th > 0.3:
            tm = np.zeros((H, W), np.uint8)
            cv2.fillPoly(tm, [q(np.concatenate([up[1:-1], (up[1:-1] + th * ey)[::-1]]))], 255, cv2.LINE_AA, shift=4)
            if gap > 0.12 * iod:
                cv2.fillPoly(tm, [q(np.concatenate([lo[2:-2], (lo[2:-2] - 0.35 * th * ey)[::-1]]))], 200, cv2.LINE_AA,
                             shift=4)
            # Shade the teeth darker towards the mouth corners, with faint gaps between the incisors.
            ys, xs = np.mgrid[0:H, 0:W].astype(np.float32)
            u = ((xs - centre[0]) * ex[0] + (ys - centre[1]) * ex[1]) / max(width / 2, 1.0)
            shade = np.clip(1.0 - 0.6 * u ** 2, 0.25, 1.0)
            shade *= 1.0 - 0.15 * np.exp(-(((np.abs(u) * 3 + 0.5) % 1.0 - 0.5) ** 2) / 0.003)
            t = (tm.astype(np.float32) / 255.0 * shade)[..., None]
            layer = layer * (1 - t) + np.asarray(s.teeth_rgb, np.float32) * t
        layer = cv2.GaussianBlur(layer, (3, 3), 0)
        a = (cv2.GaussianBlur(alpha, (3, 3), 0).astype(np.float32) / 255.0)[..., None]
        img[:] = np.clip(img * (1 - a) + layer * a + 0.5, 0, 255).astype(np.uint8)

    def render(self, speech: AlignedSpeech, seed: int = 0, progress: bool = False) -> SyntheticClip:
        """Animate the portrait speaking `speech` (its phones drive the mouth) → SyntheticClip."""
        import cv2
        from tqdm import tqdm

        rng = np.random.default_rng(seed)
        sr = speech.sample_rate
        n_frames = max(1, -(-len(speech.pcm) * FPS // sr))
        times = frame_times(n_frames, FPS)
        tracks = viseme_tracks(speech.phones, times, articulation=self.style.articulation)
        blink = blink_track(n_frames, FPS, rng, self.style.blink_interval)
        pose = head_motion(n_frames, FPS, rng, self.style.head_motion, speech_open=tracks["open"])
        frames = np.empty((n_frames, self.size, self.size, 3), np.uint8)
        lms = np.empty((n_frames, L.N_LANDMARKS, 2), np.float32)
        params = {k: np.zeros(n_frames) for k in ("mouth_open", "mouth_width", "jaw", "eye_open")}
        chin0 = self.base[L.CHIN, :2] @ self.ey
        for k in tqdm(range(n_frames), desc="synthesize", unit="frame", disable=not progress):
            pts = self.expression(tracks["open"][k], tracks["width"][k], tracks["round"][k], blink[k])
            params["jaw"][k] = (pts[L.CHIN, :2] @ self.ey - chin0) / self.iod
            target = self.pose(pts, *(pose[name][k] for name in ("yaw", "pitch", "roll", "tx", "ty", "scale")))
            img = self.warp(target)
            face = target[: self.n_face]
            self.draw_mouth(img, face)
            frames[k] = cv2.resize(img, (self.size, self.size), interpolation=cv2.INTER_AREA)
            lms[k] = face / self.ss
            params["mouth_open"][k] = L.mouth_opening(face)
            params["mouth_width"][k] = L.mouth_width(face)
            params["eye_open"][k] = L.eye_opening(face)
        params.update(open_target=tracks["open"], width_target=tracks["width"], round=tracks["round"], blink=blink,
                      **{name: pose[name] for name in ("yaw", "pitch", "roll", "tx", "ty", "scale")})
        return SyntheticClip(frames=frames, pcm=speech.pcm, sample_rate=sr, fps=FPS, params=params, landmarks=lms,
                             silent=silent_frames(speech.phones, n_frames, FPS), phones=list(speech.phones),
                             style=self.style, text=speech.text)


# ---------------------------------------------------------------------------------------- output


def write_clip(clip: SyntheticClip, stem: str | Path, crf: int = 18) -> dict[str, Path]:
    """STEM.mp4 (H.264 + AAC), STEM.json (ground truth per frame, phones, style), STEM.npz (landmarks)."""
    stem = Path(stem)
    size = clip.frames.shape[1]
    paths = {"video": stem.with_suffix(".mp4"), "params": stem.with_suffix(".json"),
             "landmarks": stem.with_suffix(".npz")}
    with Mp4Writer(paths["video"], fps=clip.fps, width=size, height=size, audio=clip.pcm,
                   sample_rate=clip.sample_rate, crf=crf) as w:
        for f in clip.frames:
            w.write(f)
    doc = {
        "format": "livehead-synthetic-talker/1",
        "fps": clip.fps, "size": size, "frames": len(clip.frames), "sample_rate": clip.sample_rate,
        "audio_seconds": len(clip.pcm) / clip.sample_rate, "text": clip.text,
        "frame_time": "frame k shows [k / fps, (k + 1) / fps); params are taken at its centre",
        "units": "mouth_open, mouth_width, jaw, eye_open, open_target: outer-eye-corner distances; "
                 "yaw/pitch/roll: degrees; tx/ty: fraction of the frame; blink: 0 open .. 1 closed",
        "params": {k: [round(float(x), 5) for x in v] for k, v in clip.params.items()},
        "silent": [bool(x) for x in clip.silent],
        "phones": [{"phone": p.symbol, "viseme": p.viseme, "start": round(p.start, 5), "end": round(p.end, 5)}
                   for p in clip.phones],
        "style": asdict(clip.style),
        **clip.meta,
    }
    paths["params"].write_text(json.dumps(doc, ensure_ascii=False) + "\n")
    np.savez_compressed(paths["landmarks"], landmarks=clip.landmarks.astype(np.float16))
    return paths


def read_params(path: str | Path) -> dict:
    """A clip's STEM.json as written by `write_clip` (InputError when it is not one)."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise InputError(f"cannot read synthetic-clip parameters {path}: {err}") from None
    if not isinstance(doc, dict) or doc.get("format") != "livehead-synthetic-talker/1":
        raise InputError(f"{path} is not a synthetic-clip parameter file (format livehead-synthetic-talker/1)")
    return doc


# ------------------------------------------------------------------------------------------- CLI


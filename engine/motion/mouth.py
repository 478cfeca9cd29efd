"""Mouth-interior layer: what shows between the moved inner lips (the warp has no content there).

Layers, back to front, all inside the moved inner-lip polygon (feathered, anti-aliased mask):
  1. cavity       dark, from the photo's lip colour, lighter near the lips, deepest in the middle
  2. tongue       a low mound above the lower lip, when the mouth is well open
  3. lower teeth  a thin band above the lower lip, moving with it (the jaw)
  4. upper teeth  a band below the neutral upper-lip line moved rigidly with the head (teeth are fixed to
                  the skull), so a lifting upper lip shows more teeth and a dropping jaw shows the cavity
  5. the photo's own interior, when its neutral mouth is open (the teeth of a smile): its upper part moves
     rigidly with the head (stretched up to a lifted upper lip), its lower part with the lower lip; where
     they part, layers 1-4 show. Nearly closed lips show a dark seam, not squeezed teeth.
Colours: the teeth from the photo's own teeth when they show, else from the skin (a warm grey a little
darker than the skin, as teeth look in ordinary video); cavity and tongue from the lip colour.

    layer = MouthLayer(image, neutral)   # image uint8 [H, W, 3], neutral landmarks [478, 2+] in its pixels
    layer.draw(out, moved, head)         # out uint8 [H, W, 3] in place; moved [478, 2]; head similarity [4]

`draw` reads the layer and writes only `out`, so one layer serves several threads at once.
"""

from __future__ import annotations

import numpy as np

from livehead.engine.motion import mesh, tracker

ALPHA_RAMP = (0.004, 0.03)  # |opening - neutral opening| (IOD) over which the layer fades in
UPPER_TEETH = 0.03  # visible upper-tooth height below the neutral lip line (IOD)
LOWER_TEETH = 0.045  # visible lower-tooth height above the lower lip (IOD)
TEETH_RAMP = (0.012, 0.035)  # mouth opening (IOD) over which the teeth appear
LOWER_TEETH_RAMP = (0.06, 0.12)  # ... the lower teeth
TONGUE_RAMP = (0.07, 0.15)  # ... the tongue
SEAM_RAMP = (0.0, 0.04)  # below this opening the cavity takes the lips' colour (a seam, not a hole)
INTERIOR_SPLIT = 0.55  # the photo's open mouth: rows above this fraction of the lip gap move with the head
STRETCH_DEPTH = 0.06  # depth (IOD) below the neutral upper lip over which the photo's teeth stretch up
MIN_INTERIOR_OPENING = 0.02  # the photo's neutral mouth counts as open above this opening
EDGE_SOFTNESS = 0.6  # px, the soft edge of the tongue and teeth bands
LUMA = np.array([0.299, 0.587, 0.114])
DEFAULT_LIP = np.array([0.6, 0.35, 0.35])  # lip colour when the lips are too thin to sample
SKIN_PATCHES = (50, 280, 101, 330, 6, 197)  # cheeks and nose bridge: where the skin colour is sampled


def smoothstep(x, a: float, b: float):
    t = np.clip((x - a) / (b - a), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _inner_lip_polygon(lm: np.ndarray) -> np.ndarray:
    return np.concatenate([lm[list(mesh.LIP_INNER_UPPER)], lm[list(mesh.LIP_INNER_LOWER)][::-1]])


class _MouthFrame:
    """Mouth coordinates of one face shape: u along the inner corners (-1..1), v in pixels downwards."""

    def __init__(self, lm: np.ndarray):
        left, right = lm[mesh.MOUTH_CORNERS[0]], lm[mesh.MOUTH_CORNERS[1]]
        self.mid, across = (left + right) / 2, right - left
        self.half = max(float(np.linalg.norm(across)) / 2, 1e-3)
        self.eu = across / (2 * self.half)
        self.ev = np.array([-self.eu[1], self.eu[0]])

    def uv(self, xx: np.ndarray, yy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rx, ry = xx - self.mid[0], yy - self.mid[1]
        return (rx * self.eu[0] + ry * self.eu[1]) / self.half, rx * self.ev[0] + ry * self.ev[1]

    def u_of(self, points: np.ndarray) -> np.ndarray:
        return ((points - self.mid) @ self.eu) / self.half

    def curve(self, points: np.ndarray, u: np.ndarray) -> np.ndarray:
        """v of the polyline `points` [n, 2] at each u (linear between its points) → float32 like u."""
        pu, pv = self.u_of(points), (points - self.mid) @ self.ev
        order = np.argsort(pu)
        return np.interp(u, pu[order], pv[order]).astype(np.float32)


class MouthLayer:
    def __init__(self, image: np.ndarray, neutral: np.ndarray):
        """image uint8 [H, W, 3] RGB; neutral landmarks [478, 2+] in its pixels."""
        import cv2

        self.height, self.width = image.shape[:2]
        self.neutral = np.asarray(neutral, np.float64)[:, :2]
        self.iod = float(mesh.iod(self.neutral))
        self.gap0 = float(mesh.mouth_opening(self.neutral))
        img = image.astype(np.float32) / 255.0
        fixed = lambda idx: np.round(self.neutral[list(idx)] * 16).astype(np.int32)
        outer = np.zeros((self.height, self.width), np.uint8)
        inner = np.zeros_like(outer)
        cv2.fillPoly(outer, [np.concatenate([fixed(mesh.LIP_OUTER_UPPER), fixed(mesh.LIP_OUTER_LOWER)[::-1]])], 255,
                     shift=4)
        cv2.fillPoly(inner, [np.round(_inner_lip_polygon(self.neutral) * 16).astype(np.int32)], 255, shift=4)
        lips = (outer > 0) & (inner == 0)
        lip = np.median(img[lips], axis=0) if lips.sum() > 10 else DEFAULT_LIP
        skin = self._skin_colour(img)
        self.colours = self._colours(img, inner > 0, lip, skin)
        self.upper0 = self.neutral[list(mesh.LIP_INNER_UPPER)].copy()
        self.lower0 = self.neutral[list(mesh.LIP_INNER_LOWER)].copy()
        # the photo's own interior (only when its neutral mouth is open), split into head and jaw parts
        self.has_interior = self.gap0 > MIN_INTERIOR_OPENING and int((inner > 0).sum()) > 30
        self.tex_up = self.tex_lo = None
        if self.has_interior:
            m = cv2.dilate(inner, np.ones((3, 3), np.uint8))
            m = cv2.GaussianBlur(m.astype(np.float32) / 255.0, (0, 0), 0.6)
            frame = _MouthFrame(self.neutral)
            yy, xx = np.mgrid[0:self.height, 0:self.width].astype(np.float32)
            u, v = frame.uv(xx, yy)
            v_up, v_lo = frame.curve(self.upper0, u), frame.curve(self.lower0, u)
            up = smoothstep(INTERIOR_SPLIT + 0.08 - (v - v_up) / np.maximum(v_lo - v_up, 1e-3), 0.0, 0.16)
            # RGBA textures: the photo's colour and the part's alpha, each sampled with one remap per frame
            self.tex_up = np.ascontiguousarray(np.dstack([img, m * up]).astype(np.float32))
            self.tex_lo = np.ascontiguousarray(np.dstack([img, m * (1.0 - up)]).astype(np.float32))
        for a in (self.neutral, self.upper0, self.lower0, self.tex_up, self.tex_lo):
            if a is not None:
                a.setflags(write=False)

    def _skin_colour(self, img: np.ndarray) -> np.ndarray:
        r = max(1, int(0.04 * self.iod))
        patches = []
        for i in SKIN_PATCHES:
            x, y = np.round(self.neutral[i]).astype(int)
            patches.append(img[max(0, y - r):y + r + 1, max(0, x - r):x + r + 1].reshape(-1, 3))
        return np.median(np.concatenate(patches), axis=0)

    @staticmethod
    def _colours(img: np.ndarray, inside: np.ndarray, lip: np.ndarray, skin: np.ndarray) -> dict[str, np.ndarray]:
        skin_luma = float(skin @ LUMA)
        teeth = None
        if inside.sum() > 15:  # the photo's own teeth: bright, unsaturated pixels between the lips
            px = img[inside]
            hi, lo = px.max(1), px.min(1)
            bright = (px @ LUMA > 0.85 * skin_luma) & ((hi - lo) / np.maximum(hi, 1e-3) < 0.4)
            if bright.sum() >= 15:
                teeth = np.median(px[bright], axis=0)
        if teeth is None:  # a warm off-white about as bright as the skin, a little tinted by it
            teeth = 0.7 * skin_luma * np.array([1.04, 1.0, 0.86]) + 0.3 * skin
        f32 = lambda c: np.clip(c, 0.0, 1.0).astype(np.float32)
        return dict(lip=f32(lip), teeth=f32(teeth), cav_edge=f32(lip * 0.55), cav_deep=f32(lip * 0.28),
                    tongue=f32(0.8 * lip * np.array([1.0, 0.8, 0.8])))

    def draw(self, out: np.ndarray, lm: np.ndarray, head: np.ndarray) -> None:
        """Composite into out uint8 [H, W, 3] (in place). lm: moved landmarks [478, 2+]; head: similarity [4]
        (theta, s, tx, ty) taking the neutral to the moved face (fitted on the stable points)."""
        import cv2

        lm = np.asarray(lm, np.float64)[:, :2]
        opening = float(mesh.mouth_opening(lm))
        alpha_open = float(smoothstep(abs(opening - self.gap0), *ALPHA_RAMP))
        if alpha_open <= 0.0:
            return
        iod = float(mesh.iod(lm))
        poly = _inner_lip_polygon(lm)
        pad = 3
        x0, y0 = max(int(np.floor(poly[:, 0].min())) - pad, 0), max(int(np.floor(poly[:, 1].min())) - pad, 0)
        x1 = min(int(np.ceil(poly[:, 0].max())) + pad + 1, self.width)
        y1 = min(int(np.ceil(poly[:, 1].max())) + pad + 1, self.height)
        if x1 - x0 < 2 or y1 - y0 < 2:
            return
        mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
        cv2.fillPoly(mask, [np.round((poly - [x0, y0]) * 16).astype(np.int32)], 255, shift=4, lineType=cv2.LINE_AA)
        alpha = cv2.GaussianBlur(mask.astype(np.float32) * (1.0 / 255.0), (0, 0), max(0.5, 0.006 * iod))
        alpha = np.clip((alpha - 0.2) * (alpha_open / 0.8), 0.0, None)  # keep the feather inside the lip edge
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        frame = _MouthFrame(lm)
        u, v = frame.uv(xx, yy)
        v_up, v_lo = frame.curve(lm[list(mesh.LIP_INNER_UPPER)], u), frame.curve(lm[list(mesh.LIP_INNER_LOWER)], u)
        teeth_vis = float(smoothstep(opening, *TEETH_RAMP))
        img = self._cavity(u, v, v_up, v_lo, opening)
        self._tongue(img, u, v, v_lo - v_up, v_lo, opening)
        self._lower_teeth(img, u, v, v_lo, iod, float(smoothstep(opening, *LOWER_TEETH_RAMP)) * teeth_vis)
        self._upper_teeth(img, frame, u, v, v_up, iod, head, teeth_vis)
        if self.has_interior:
            self._own_interior(img, frame, lm, xx, yy, u, v, v_up, iod, head, teeth_vis)
        roi = out[y0:y1, x0:x1].astype(np.float32)
        out[y0:y1, x0:x1] = np.clip(roi + (img * 255.0 - roi) * alpha[..., None] + 0.5, 0, 255).astype(np.uint8)

    # ----------------------------------------------------------------------- the layers, each on [h, w] arrays

    def _cavity(self, u, v, v_up, v_lo, opening: float) -> np.ndarray:
        """Dark, lighter near the lips, deepest in the middle → float32 [h, w, 3] in [0, 1]."""
        c = self.colours
        gap = np.maximum(v_lo - v_up, 1e-3)
        depth = np.clip(1.0 - u**2, 0, 1) * np.clip(1.0 - ((v - (v_up + v_lo) / 2) / (0.6 * gap + 1.0)) ** 2, 0, 1)
        shut = 1.0 - float(smoothstep(opening, *SEAM_RAMP))  # nearly closed: the seam is lip-coloured
        edge = c["cav_edge"] + (0.8 * c["lip"] - c["cav_edge"]) * shut
        deep = c["cav_deep"] + (0.6 * c["lip"] - c["cav_deep"]) * shut
        return edge + (deep - edge) * depth[..., None]

    def _tongue(self, img, u, v, gap, v_lo, opening: float) -> None:
        gate = float(smoothstep(opening, *TONGUE_RAMP))
        if gate <= 0:
            return
        gap = np.maximum(gap, 1e-3)
        profile = np.sqrt(np.clip(1.0 - (u / 1.05) ** 2, 0.0, 1.0))
        top = v_lo - 0.3 * gap * profile
        a = smoothstep(v - top, -EDGE_SOFTNESS, EDGE_SOFTNESS) * profile * gate
        colour = self.colours["tongue"] * (0.6 + 0.4 * np.clip((v - top) / (0.3 * gap + 1), 0, 1))[..., None]
        img += (colour - img) * a[..., None]

    def _lower_teeth(self, img, u, v, v_lo, iod: float, gate: float) -> None:
        if gate <= 0:
            return
        width = np.clip(1.0 - (u / 0.6) ** 2, 0.0, 1.0)  # central lower incisors, rounded ends
        top = v_lo - LOWER_TEETH * iod * np.sqrt(width)
        a = smoothstep(v - top, -EDGE_SOFTNESS, EDGE_SOFTNESS) * smoothstep(width, 0.0, 0.3) * gate
        shade = (1.0 - 0.5 * u**2) * 0.8 * (1.0 - 0.35 * smoothstep(v - (v_lo - 0.01 * iod), 0.0, 0.01 * iod + 0.5))
        img += (self.colours["teeth"] * shade[..., None] - img) * a[..., None]

    def _upper_teeth(self, img, frame: _MouthFrame, u, v, v_up, iod: float, head, gate: float) -> None:
        """From under the upper lip down to the neutral lip line (moved with the head) plus a tooth height."""
        if gate <= 0:
            return
        profile = np.sqrt(np.clip(1.0 - (u / 1.05) ** 2, 0.0, 1.0))
        bottom = frame.curve(tracker.apply_pose(self.upper0, head), u) + UPPER_TEETH * iod * profile
        a = smoothstep(bottom - v, -EDGE_SOFTNESS, EDGE_SOFTNESS) * smoothstep(profile, 0.5, 0.85) * gate
        gaps = 1.0 - 0.08 * np.exp(-((u * frame.half) / (0.012 * iod + 0.5)) ** 2)  # the two front teeth meet
        shade = (1.0 - 0.45 * u**2) * (0.7 + 0.3 * smoothstep(v - v_up, 0.0, 0.025 * iod + 1.0)) * gaps
        shade *= 1.0 - 0.25 * smoothstep(v - (bottom - 0.012 * iod), 0.0, 0.012 * iod + 0.5)
        img += (self.colours["teeth"] * shade[..., None] - img) * a[..., None]

    def _own_interior(self, img, frame: _MouthFrame, lm, xx, yy, u, v, v_up, iod: float, head, gate: float) -> None:
        """The photo's open mouth: the upper part rigid with the head, the lower part with the lower lip."""
        import cv2

        theta, s, tx, ty = head
        c, sn = np.cos(theta), np.sin(theta)
        lower = lm[list(mesh.LIP_INNER_LOWER)]
        d_lower = lower - tracker.apply_pose(self.lower0, head)  # the lower lip's motion beyond the head's
        pu = frame.u_of(lower)
        order = np.argsort(pu)
        shift_lo = (np.interp(u, pu[order], d_lower[order, 0]), np.interp(u, pu[order], d_lower[order, 1]))
        # the upper part moves with the head, but the strip between the moved upper lip and the teeth line is
        # stretched so the photo's teeth reach up to the lip instead of leaving a gap
        line = frame.curve(tracker.apply_pose(self.upper0, head), u)  # the neutral lip line, head-moved
        deep = line + STRETCH_DEPTH * iod
        inside = (v < deep) & (v_up < deep - 0.5)
        v_src = np.where(inside, line + (v - v_up) * (deep - line) / np.maximum(deep - v_up, 0.5), v)
        dv = v_src - v
        shift_up = (-dv * frame.ev[0], -dv * frame.ev[1])
        for texture, shift in ((self.tex_lo, shift_lo), (self.tex_up, shift_up)):
            dx, dy = xx - tx - shift[0], yy - ty - shift[1]
            map_x = ((c * dx + sn * dy) / s).astype(np.float32)
            map_y = ((-sn * dx + c * dy) / s).astype(np.float32)
            sampled = cv2.remap(texture, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
            img += (sampled[..., :3] - img) * (sampled[..., 3:] * gate)

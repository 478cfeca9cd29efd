"""Mouth refiner: a small U-Net that corrects the photo renderer's mouth region on a square crop around the lips.

The photo renderer (`engine.motion.renderer`) warps the user's photo and draws a procedural mouth interior
(`engine.motion.mouth`). The refiner takes the rendered mouth crop, the photo's own neutral mouth crop
(identity detail: lip colour, teeth where they show) and a soft mask of the moved inner-lip polygon, and
adds a residual, only inside a fixed feathered ellipse in the middle of the crop: it is exactly zero on
and near the crop's border, so a refined frame never shows the box.

    refiner = load_mouth_refiner()                                  # the shipped weights, or None
    neutral = neutral_mouth_crop(renderer.image, renderer.neutral)  # uint8 [S, S, 3], once per photo
    frame = refine_frame(refiner, renderer.render(moved), moved, neutral, renderer.neutral)  # uint8 [H, W, 3]

Crop: `mouth_crop_box` is a square of CROP_SCALE × the outer mouth width (corner to corner) centred on
the outer lips' bounding box, shifted to lie inside the image; it is resized to S × S (cv2, area filter
when shrinking, bilinear when enlarging). S is the config's size, or for a refiner trained at several crop
sides (`MouthRefinerConfig.min_size`, the shipped one: 56-96 px) the box's own side to the nearest multiple
of 8 within them (`MouthRefinerConfig.crop_side`): a 256 px output's mouth box of about 74 px runs at 72,
not enlarged to 96, so about half the pixels go through the network. `refine_frame` pastes back only the
refined crop's difference from the rendered crop, resized to the box: pixels where the residual is zero
(outside the ellipse, and everywhere for the zero-initialised network) keep their exact rendered values.
Given the photo's neutral landmarks, the change fades in with the mouth's opening change as the mouth layer
does (`refine_strength`), so a zero motion still gives the photo back unchanged.

Network (`MouthRefiner`, plain tensors in and out, export-friendly):
    x        = cat(render, neutral, inner_mask)           [B, 7, S, S], images in [0, 1]
    h        = pixel_unshuffle(2 x - 1, 2)                [B, 28, S/2, S/2]
    encoder  : two 3×3 convs at S/2 (w0), a stride-2 conv + conv at S/4 (w1), a stride-2 conv + two convs
               at S/8 (w2), ReLU
    decoder  : nearest ×2, 1×1 projection added to the skip, 3×3 conv, twice (back to S/2)
    out      : 3×3 conv w0 → 12 (zero-initialised), pixel_shuffle(2) → residual [B, 3, S, S]
    refined  = clamp(render + window · residual, 0, 1)    [B, 3, S, S]
The window (`window_for`, one per crop side): 1 inside WINDOW_FLAT of the ellipse with semi-axes
WINDOW_AXES × S, smoothly 0 by its edge. With the last conv at zero the network returns the render unchanged.
The shipped widths (16, 32, 64): 0.13 M parameters, about 2 ms a 96 px crop on one CPU thread (weights
channels-last, a step's crops batched), about 1.2 ms at 72 px.

Shipped weights: trained by `python -m livehead.engine.training.mouth` on the six GRID training clips
(the .json beside them records the recipe, the selection rule and the held-out GRID figures).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from livehead.engine.media.landmarks import (
    LIP_INNER_LOWER,
    LIP_INNER_UPPER,
    LIP_OUTER_LOWER,
    LIP_OUTER_UPPER,
    mouth_opening,
)

__all__ = [
    "DEFAULT_PATH", "MouthRefiner", "MouthRefinerConfig", "inner_lip_mask", "load_mouth_refiner",
    "mouth_crop_box", "neutral_mouth_crop", "refine_crop", "refine_frame", "refine_frames", "refine_strength",
    "resize_crop",
    "sized_crop", "to_tensor",
]

DEFAULT_PATH = Path(__file__).resolve().parents[1] / "assets" / "motion" / "mouth_refiner.safetensors"
CROP_SCALE = 1.8  # the crop's side / the outer mouth width (corner to corner)
WINDOW_AXES = (0.46, 0.44)  # the blend ellipse's semi-axes (x, y) as fractions of the crop side
WINDOW_FLAT = 0.7  # the blend window is 1 up to this fraction of the ellipse, then falls smoothly to 0
GATE_RAMP = (0.004, 0.03)  # |mouth opening - the neutral's| (IOD) over which the refinement fades in, as the
# renderer's mouth layer does (engine.motion.mouth.ALPHA_RAMP): at zero motion the photo comes back unchanged
MIN_REFINE_SIDE = 40  # px: a smaller mouth crop in the output (a small output size) is left unrefined
MASK_FEATHER = 1.0  # px at the crop size: Gaussian sigma of the inner-lip mask's soft edge
OUTER_LIPS = np.array(LIP_OUTER_UPPER + LIP_OUTER_LOWER)
INNER_LIP_POLYGON = np.array(LIP_INNER_UPPER + LIP_INNER_LOWER[::-1])


@dataclass(frozen=True)
class MouthRefinerConfig:
    """size: the largest crop side S in pixels (a multiple of 8); widths: channels at S/2, S/4, S/8;
    min_size: 0 for a refiner that always runs at S, else the smallest crop side of one trained at several
    (`crop_side`: a mouth box smaller than S in the output is refined near its own resolution, not enlarged)."""

    size: int = 96
    widths: tuple[int, int, int] = (24, 48, 96)
    min_size: int = 0

    def __post_init__(self):
        if self.size % 8 or self.size < 16:
            raise ValueError(f"the crop size must be a multiple of 8, at least 16, got {self.size}")
        if len(self.widths) != 3:
            raise ValueError(f"widths must give three channel counts, got {self.widths}")
        if self.min_size and (self.min_size % 8 or not 16 <= self.min_size <= self.size):
            raise ValueError(f"min_size must be 0 or a multiple of 8 between 16 and size, got {self.min_size}")
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))

    @property
    def sizes(self) -> tuple[int, ...]:
        """The crop sides this refiner runs at."""
        return tuple(range(self.min_size, self.size + 1, 8)) if self.min_size else (self.size,)

    def crop_side(self, box_side: int) -> int:
        """The crop side a mouth box of `box_side` output pixels is refined at: S, or for a refiner trained at
        several sides the box's own side to the nearest multiple of 8 within [min_size, S]."""
        if not self.min_size:
            return self.size
        return int(min(max(8 * round(box_side / 8), self.min_size), self.size))


def blend_window(size: int) -> np.ndarray:
    """The feathered ellipse the residual is applied in → float32 [size, size], exactly 0 near the border."""
    c = (size - 1) / 2
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    r = np.sqrt(((xx - c) / (WINDOW_AXES[0] * size)) ** 2 + ((yy - c) / (WINDOW_AXES[1] * size)) ** 2)
    t = np.clip((1.0 - r) / (1.0 - WINDOW_FLAT), 0.0, 1.0)
    return (t * t * (3.0 - 2.0 * t)).astype(np.float32)


class MouthRefiner(nn.Module):
    def __init__(self, cfg: MouthRefinerConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg if cfg is not None else MouthRefinerConfig()
        w0, w1, w2 = cfg.widths
        conv = lambda a, b, stride=1: nn.Conv2d(a, b, 3, stride=stride, padding=1)
        self.enc1 = nn.ModuleList([conv(7 * 4, w0), conv(w0, w0)])
        self.enc2 = nn.ModuleList([conv(w0, w1, 2), conv(w1, w1)])
        self.enc3 = nn.ModuleList([conv(w1, w2, 2), conv(w2, w2), conv(w2, w2)])
        self.proj2, self.dec2 = nn.Conv2d(w2, w1, 1), conv(w1, w1)
        self.proj1, self.dec1 = nn.Conv2d(w1, w0, 1), conv(w0, w0)
        self.conv_out = conv(w0, 3 * 4)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)
        self.register_buffer("window", torch.from_numpy(blend_window(cfg.size))[None, None], persistent=False)
        self._windows: dict[int, torch.Tensor] = {}

    def window_for(self, size: int) -> torch.Tensor:
        """The blend window of a crop side → [1, 1, size, size] (computed once per side)."""
        if size == self.cfg.size:
            return self.window
        if size not in self._windows:
            self._windows[size] = torch.from_numpy(blend_window(size))[None, None].to(self.window.device)
        return self._windows[size]

    def residual(self, render: torch.Tensor, neutral: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The network's raw residual [B, 3, S, S] (before the window)."""
        h = F.pixel_unshuffle(torch.cat([render, neutral, mask], 1) * 2.0 - 1.0, 2)
        for layer in self.enc1:
            h = F.relu(layer(h))
        e1 = h
        for layer in self.enc2:
            h = F.relu(layer(h))
        e2 = h
        for layer in self.enc3:
            h = F.relu(layer(h))
        h = F.relu(self.dec2(F.relu(self.proj2(F.interpolate(h, scale_factor=2.0, mode="nearest")) + e2)))
        h = F.relu(self.dec1(F.relu(self.proj1(F.interpolate(h, scale_factor=2.0, mode="nearest")) + e1)))
        return F.pixel_shuffle(self.conv_out(h), 2)

    def forward(self, render: torch.Tensor, neutral: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """render, neutral [B, 3, S, S] in [0, 1]; mask [B, 1, S, S] in [0, 1] → refined crop [B, 3, S, S] (S: a crop
        side of `MouthRefinerConfig.sizes`; the window follows it)."""
        return torch.clamp(render + self.window_for(render.shape[-1]) * self.residual(render, neutral, mask), 0.0, 1.0)


# ------------------------------------------------------------------------------------------------ crops


def mouth_crop_box(landmarks: np.ndarray, image_shape: tuple[int, ...],
                   size: int = MouthRefinerConfig.size) -> tuple[int, int, int, int]:
    """The square around the lips of landmarks [478, 2+] (pixels): side CROP_SCALE × the outer mouth width
    (at least `size` // 4 px, at most the image's short side), centred on the outer lips and shifted to lie
    inside an image of shape (H, W, ...) → (x0, y0, x1, y1), x1 - x0 == y1 - y0."""
    pts = np.asarray(landmarks, np.float64)[OUTER_LIPS, :2]
    height, width = image_shape[:2]
    mouth = float(np.linalg.norm(pts[0] - pts[len(LIP_OUTER_UPPER) - 1]))  # corner to corner
    side = int(min(max(round(CROP_SCALE * mouth), size // 4), height, width))
    cx, cy = (pts.min(0) + pts.max(0)) / 2
    x0 = int(np.clip(round(cx - side / 2), 0, width - side))
    y0 = int(np.clip(round(cy - side / 2), 0, height - side))
    return x0, y0, x0 + side, y0 + side


def resize_crop(image: np.ndarray, box: tuple[int, int, int, int], size: int) -> np.ndarray:
    """image[box] resized to size × size (area filter when shrinking, bilinear when enlarging)."""
    import cv2

    x0, y0, x1, y1 = box
    interp = cv2.INTER_AREA if x1 - x0 > size else cv2.INTER_LINEAR
    return cv2.resize(np.ascontiguousarray(image[y0:y1, x0:x1]), (size, size), interpolation=interp)


def inner_lip_mask(landmarks: np.ndarray, box: tuple[int, int, int, int],
                   size: int = MouthRefinerConfig.size) -> np.ndarray:
    """Soft mask of the inner-lip polygon of landmarks [478, 2+] in the crop `box` resized to size × size
    → float32 [size, size] in [0, 1] (anti-aliased, feathered by MASK_FEATHER px)."""
    import cv2

    x0, y0, x1, _ = box
    scale = size / (x1 - x0)
    poly = (np.asarray(landmarks, np.float64)[INNER_LIP_POLYGON, :2] - [x0 - 0.5, y0 - 0.5]) * scale - 0.5
    mask = np.zeros((size, size), np.float32)
    cv2.fillPoly(mask, [np.round(poly * 16).astype(np.int32)], 1.0, lineType=cv2.LINE_AA, shift=4)
    return np.clip(cv2.GaussianBlur(mask, (0, 0), MASK_FEATHER), 0.0, 1.0)


def neutral_mouth_crop(image: np.ndarray, landmarks: np.ndarray, size: int = MouthRefinerConfig.size) -> np.ndarray:
    """The photo's own mouth at rest: uint8 image [H, W, 3] and its neutral landmarks [478, 2+] → uint8
    [size, size, 3] (compute once per photo)."""
    return resize_crop(image, mouth_crop_box(landmarks, image.shape, size), size)


def refine_strength(moved_landmarks: np.ndarray, neutral_landmarks: np.ndarray) -> float:
    """How much of the refinement applies, in [0, 1]: smoothstep of |mouth opening - the neutral's| over
    GATE_RAMP (landmarks [478, 2+]); 0 when the mouth is as in the photo."""
    change = abs(float(mouth_opening(moved_landmarks)) - float(mouth_opening(neutral_landmarks)))
    t = min(max((change - GATE_RAMP[0]) / (GATE_RAMP[1] - GATE_RAMP[0]), 0.0), 1.0)
    return t * t * (3.0 - 2.0 * t)


def to_tensor(*crops: np.ndarray) -> torch.Tensor:
    """uint8 [S, S, 3] or float [S, S] (in [0, 1]) crops → float32 [1, C, S, S] in [0, 1], channels stacked."""
    parts = [np.asarray(c, np.float32)[..., None] if c.ndim == 2 else c.astype(np.float32) / 255.0 for c in crops]
    return torch.from_numpy(np.ascontiguousarray(np.concatenate(parts, -1).transpose(2, 0, 1)))[None]


@torch.inference_mode()
def refine_crop(refiner: MouthRefiner, render_crop: np.ndarray, neutral_crop: np.ndarray,
                mask: np.ndarray, strength: float = 1.0) -> np.ndarray:
    """One crop through the refiner: uint8 [S, S, 3] ×2 and mask float32 [S, S] → the change to add,
    float32 [S, S, 3] in pixel units (0 outside the window), scaled by strength."""
    render = to_tensor(render_crop)
    refined = refiner(render, to_tensor(neutral_crop), to_tensor(mask))
    return ((refined - render)[0] * (255.0 * strength)).permute(1, 2, 0).numpy()


def _refine_box(refiner: MouthRefiner | None, frame: np.ndarray, moved_landmarks: np.ndarray, neutral_crop: np.ndarray,
                neutral_landmarks: np.ndarray | None):
    """(the mouth box, the strength, the crop side) a frame is refined with, or None when it is left as it is."""
    if refiner is None:
        return None
    size = refiner.cfg.size
    if neutral_crop.shape != (size, size, 3):
        raise ValueError(f"the neutral mouth crop must be [{size}, {size}, 3], got {list(neutral_crop.shape)}")
    strength = 1.0 if neutral_landmarks is None else refine_strength(moved_landmarks, neutral_landmarks)
    if strength <= 0.0:
        return None
    box = mouth_crop_box(moved_landmarks, frame.shape, size)
    if box[2] - box[0] < MIN_REFINE_SIDE:  # a mouth this small: the refiner's detail would be resampled away
        return None
    return box, strength, refiner.cfg.crop_side(box[2] - box[0])


def sized_crop(crop: np.ndarray, size: int) -> np.ndarray:
    """A crop (the photo's neutral mouth, S × S) at another crop side (area filter; itself at S)."""
    import cv2

    return crop if crop.shape[0] == size else cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)


def _paste(frame: np.ndarray, box: tuple[int, int, int, int], delta: np.ndarray) -> np.ndarray:
    """A copy of frame with the change delta float32 [S, S, 3] (crop size) resized onto box and added."""
    import cv2

    x0, y0, x1, y1 = box
    side = x1 - x0
    interp = cv2.INTER_AREA if side < delta.shape[0] else cv2.INTER_LINEAR
    delta = cv2.resize(delta, (side, side), interpolation=interp)
    out = frame.copy()
    region = out[y0:y1, x0:x1]
    out[y0:y1, x0:x1] = np.clip(np.rint(region + delta), 0, 255).astype(np.uint8)
    return out


def refine_frame(refiner: MouthRefiner | None, frame: np.ndarray, moved_landmarks: np.ndarray,
                 neutral_crop: np.ndarray, neutral_landmarks: np.ndarray | None = None) -> np.ndarray:
    """A rendered frame uint8 [H, W, 3] with its moved landmarks [478, 2+] and the photo's neutral mouth
    crop uint8 [S, S, 3] → the frame with its mouth refined, uint8 [H, W, 3]: a new array where only pixels
    inside the mouth box can change, and only where the residual is not zero. With the photo's neutral
    landmarks the change is scaled by `refine_strength` (none at the photo's own mouth opening, as the mouth
    layer). The frame itself when refiner is None or the strength 0."""
    found = _refine_box(refiner, frame, moved_landmarks, neutral_crop, neutral_landmarks)
    if found is None:
        return frame
    box, strength, size = found
    delta = refine_crop(refiner, resize_crop(frame, box, size), sized_crop(neutral_crop, size),
                        inner_lip_mask(moved_landmarks, box, size), strength)
    return _paste(frame, box, delta)


@torch.inference_mode()
def refine_frames(refiner: MouthRefiner | None, frames: list[np.ndarray], moved: list[np.ndarray],
                  neutral_crop: np.ndarray, neutral_landmarks: np.ndarray | None = None) -> list[np.ndarray]:
    """`refine_frame` for several frames of one photo, their crops in one batched pass (about a quarter less
    time a crop on a CPU for a few frames): frames uint8 [H, W, 3] and moved landmarks [478, 2+] each → the
    refined frames. Equal to refine_frame per frame up to the last bit of a few pixels (batched convolutions
    round differently)."""
    found = [_refine_box(refiner, f, m, neutral_crop, neutral_landmarks) for f, m in zip(frames, moved)]
    out = list(frames)
    for size in sorted({x[2] for x in found if x is not None}):  # one batched pass per crop side
        todo = [i for i, x in enumerate(found) if x is not None and x[2] == size]
        renders = torch.cat([to_tensor(resize_crop(frames[i], found[i][0], size)) for i in todo])
        masks = torch.cat([to_tensor(inner_lip_mask(moved[i], found[i][0], size)) for i in todo])
        neutral = to_tensor(sized_crop(neutral_crop, size)).expand(len(todo), -1, -1, -1)
        changes = refiner(renders, neutral, masks) - renders
        for row, i in enumerate(todo):
            box, strength, _ = found[i]
            out[i] = _paste(frames[i], box, (changes[row] * (255.0 * strength)).permute(1, 2, 0).numpy())
    return out


# ------------------------------------------------------------------------------------------------ weights


def load_mouth_refiner(path: str | Path | None = None) -> MouthRefiner | None:
    """The refiner saved at `path` (default: the shipped engine/assets/motion/mouth_refiner.safetensors, its
    config in the .json beside it), loaded strictly, in eval mode, its weights channels-last (faster convs on
    the CPU; results unchanged); None when the file does not exist."""
    from safetensors.torch import load_file

    path = Path(path) if path is not None else DEFAULT_PATH
    if not path.exists():
        return None
    meta_path = path.with_suffix(".json")
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    cfg = MouthRefinerConfig(**meta.get("config", {}))
    refiner = MouthRefiner(cfg)
    state = {k: v.float() for k, v in load_file(str(path)).items()}
    refiner.load_state_dict(state, strict=True)
    return refiner.to(memory_format=torch.channels_last).eval()  # about 1 ms faster a crop on the CPU


def config_dict(cfg: MouthRefinerConfig) -> dict:
    """The config as JSON-ready values (what the .json beside the weights stores under "config")."""
    d = asdict(cfg)
    d["widths"] = list(d["widths"])
    return d

"""Training the mouth refiner (`engine.model.mouth_refiner`) on real talking-face frames, and its held-out check.

The shipped engine/assets/motion/mouth_refiner.safetensors (+ .json) is, from the checkout's root:

    python -m livehead.engine.training.mouth --data ../shared/data/grid \
        --out engine/assets/motion/mouth_refiner.safetensors --steps 3000 --threads 1

Pairs (`build_pairs`, self-reenactment): every training clip (GRID_TRAIN; GRID_HELD_OUT never) is tracked
with MediaPipe Face Mesh in video mode. From a source frame (the first, and SOURCES - 1 others drawn at
random) a PhotoRenderer of that frame renders it warped to every frame k's tracked landmarks. Input: the
mouth crop (`mouth_crop_box` of frame k's landmarks) of the render, the source's own neutral mouth crop and
the inner-lip mask of frame k; target: the same crop of the real frame k. The refinement's strength is
`refine_strength` of frame k against the source, as `refine_frame` applies it, so at the source's own mouth
opening nothing changes. A render of another face (the bundled portrait driven by GRID motion) has no true
target, so the only synthetic pairs are identity pairs, at zero motion, where the renderer returns the photo:
every frame of the training clips and the bundled portrait, each its own neutral, at full strength, together
IDENTITY_SHARE of the samples (what is already right, real teeth of the photo included, stays as it is).

Augmentation (`sample_batch`): the crop box scaled by 0.9-1.12 and shifted by up to 6 % of its side (the
render, the mask and the target alike); the neutral crop shifted by up to 3 % and scaled by up to 4 % on its
own (the photo's mouth is never exactly aligned with the moved one); a mirror image half of the time; one
colour jitter for all three images of a pair (per-channel gain 0.9-1.1, overall gain 0.8-1.2, offset ±0.05).

Loss (`refiner_loss`) inside the blend window, the inner mouth (the inner-lip mask grown by 3 px) weighted
1 + MOUTH_WEIGHT: L1 + GRAD_WEIGHT × L1 of the horizontal and vertical pixel differences (edges).
Optimisation: AdamW (weight decay 1e-4), linear warm-up then cosine decay to 5 % of --lr, gradient norm
clipped at 1, an EMA of the weights (EMA_DECAY); the EMA weights of the last step are saved (fp16).

Held-out check (`evaluate`, self-reenactment of GRID_HELD_OUT: source = frame 0, driven to every frame's
tracked landmarks, frames 1 to the end): PSNR and SSIM (luma, 11×11 Gaussian window) of the mouth box
(`mouth_crop_box`, native pixels) and of the face box (the face oval padded 5 %) of the plain render and
of the refined frame against the real frame, and the flicker (mean |frame-to-frame change of the output -
that of the real video| in a box covering every frame's mouth box). SELECTION_RULE decides, and was
written before any held-out figure was looked at.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from livehead.engine.common.errors import InputError
from livehead.engine.media.audio_video import load_image, load_video
from livehead.engine.model.mouth_refiner import (
    DEFAULT_PATH,
    MouthRefiner,
    MouthRefinerConfig,
    config_dict,
    inner_lip_mask,
    load_mouth_refiner,
    mouth_crop_box,
    neutral_mouth_crop,
    refine_frame,
    refine_strength,
    resize_crop,
    sized_crop,
)
from livehead.engine.motion import mesh
from livehead.engine.motion.photo import photo_from_landmarks, prepare_photo
from livehead.engine.motion.renderer import PhotoRenderer
from livehead.engine.motion.space import GRID_HELD_OUT, GRID_TRAIN
from livehead.engine.motion.tracker import track_frames

PORTRAIT = Path(__file__).resolve().parents[1] / "assets" / "portrait.png"
IDENTITY_SHARE = 0.2  # share of the samples that are identity pairs (zero motion: keep what is right)
SOURCES = 8  # source frames per clip: the first and seven drawn at random
BOX_SCALE = (0.9, 1.12)  # crop-box scale jitter
BOX_SHIFT = 0.06  # crop-box shift jitter, fraction of its side
NEUTRAL_SHIFT, NEUTRAL_SCALE = 0.03, 0.04  # the neutral crop's own jitter
CHANNEL_GAIN, GAIN, OFFSET = 0.1, 0.2, 0.05  # colour jitter: per-channel gain, overall gain, offset
MOUTH_WEIGHT = 2.0  # extra loss weight inside the (grown) inner-lip mask
MOUTH_GROW = 3  # px the inner-lip mask is grown by for the loss weight
GRAD_WEIGHT = 1.0  # weight of the edge (pixel-difference) term
EMA_DECAY = 0.998
WARMUP = 100  # steps
MIN_LR_SHARE = 0.05
FACE_PAD = 0.05
SSIM_WINDOW, SSIM_SIGMA, SSIM_K = 11, 1.5, (0.01, 0.03)
LUMA = np.array([0.299, 0.587, 0.114])
SYNTHETIC = ("identity pairs only (zero motion, where the renderer returns the photo, so the target is known): "
             "every frame of the training clips and the bundled portrait (engine/assets/portrait.png), together "
             f"{IDENTITY_SHARE:.0%} of the samples, split evenly between the six clips and the portrait")
SELECTION_RULE = (
    "Decided before any held-out figure was computed: ship the EMA weights of the final training step if, on the "
    "held-out GRID clips lbbc2a and sbia1a (self-reenactment from frame 0, frames 1-74), the mean mouth-box PSNR "
    "of the refined frames is higher than that of the plain render and the mean mouth-box SSIM is not lower; "
    "otherwise ship nothing (the renderer's procedural mouth stays as it is). No other checkpoint is evaluated."
)
SIZES_TOLERANCE_DB = 0.15
SIZES_SCALES = (1.0, 0.8)
SIZES_RULE = (
    "For a refiner trained at several crop sides (--min-size), decided before any figure of it was computed: on "
    "the six training clips, self-reenacted at their own scale and at 0.8 of it (about a 256 px output's mouth), "
    "the mean mouth-box PSNR of its refined frames (at the crop sides it runs at) must be at most "
    f"{SIZES_TOLERANCE_DB} dB below that of the refiner shipped before it (at its 96 px crops), at both scales; "
    "and the held-out rule must hold. Otherwise the shipped refiner stays."
)


# ------------------------------------------------------------------------------------------------ data


@dataclass
class Clip:
    name: str
    frames: np.ndarray  # uint8 [F, H, W, 3]
    landmarks: np.ndarray  # float64 [F, 478, 2] pixels


def load_clip(path: str | Path) -> Clip:
    """Decode and track one clip (Face Mesh, video mode)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"clip not found: {path}")
    frames, _ = load_video(path)
    try:
        lm, _ = track_frames(frames)
    except InputError as err:
        raise InputError(f"{path}: {err}") from None
    return Clip(path.stem, np.ascontiguousarray(frames), lm[..., :2].astype(np.float64))


def load_clips(data_dir: str | Path, names: tuple[str, ...]) -> list[Clip]:
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise InputError(f"data folder not found: {data_dir}; pass the folder with the GRID sample clips")
    return [load_clip(data_dir / f"{n}.mpg") for n in names]


@dataclass
class Pairs:
    """Training pairs: renders[i] uint8 [H, W, 3] is source `index[i, 1]` of clip `index[i, 0]` driven to its
    frame `index[i, 2]` (the frame itself for an identity pair); neutral[(clip, source)] the source's neutral
    mouth crop; gate[i] the refinement's strength (`refine_strength`; 1 for identity pairs); weight[i] the
    probability a sample is pair i."""

    clips: list[Clip]
    renders: list[np.ndarray]
    index: np.ndarray  # int [N, 3] (clip, source, frame)
    neutral: dict[tuple[int, int], np.ndarray]
    gate: np.ndarray  # float32 [N]
    weight: np.ndarray  # float64 [N], sums to 1
    size: int

    def __len__(self) -> int:
        return len(self.index)


def build_pairs(clips: list[Clip], sources: int = SOURCES, seed: int = 0, size: int = MouthRefinerConfig.size,
                frames: slice | None = None, identity_clips: list[Clip] | None = None,
                identity_share: float = IDENTITY_SHARE) -> Pairs:
    """Render every clip's sources to all of its frames (or the `frames` slice of them). With identity_share
    > 0, identity pairs (render = target = the frame, its own neutral crop) of every frame of `clips` and
    `identity_clips` make up that share of the samples, split evenly between the clips."""
    rng = np.random.default_rng(seed)
    renders, index, neutral, gate, group = [], [], {}, [], []
    for c, clip in enumerate(clips):
        n = len(clip.frames)
        picks = [0] + sorted(rng.choice(np.arange(1, n), size=min(sources - 1, n - 1), replace=False).tolist())
        for s in picks:
            renderer = PhotoRenderer(photo_from_landmarks(clip.frames[s], clip.landmarks[s]))
            if (renderer.height, renderer.width) != clip.frames.shape[1:3]:
                raise InputError(f"{clip.name}: frames larger than the renderer's size are not supported")
            neutral[(c, s)] = neutral_mouth_crop(clip.frames[s], clip.landmarks[s], size)
            for k in range(n)[frames or slice(None)]:
                renders.append(renderer.render(clip.landmarks[k]))
                index.append((c, s, k))
                gate.append(refine_strength(clip.landmarks[k], clip.landmarks[s]))
                group.append(-1)
    all_clips = list(clips) + list(identity_clips or [])
    if identity_share > 0:
        for c, clip in enumerate(all_clips):
            for k in range(len(clip.frames)):
                neutral.setdefault((c, k), neutral_mouth_crop(clip.frames[k], clip.landmarks[k], size))
                renders.append(clip.frames[k])  # zero motion: the renderer gives the photo back unchanged
                index.append((c, k, k))
                gate.append(1.0)
                group.append(c)
    group = np.array(group)
    weight = np.zeros(len(group))
    motion = group < 0
    weight[motion] = (1.0 - identity_share if identity_share > 0 else 1.0) / max(int(motion.sum()), 1)
    for c in range(len(all_clips)):
        members = group == c
        if members.any():
            weight[members] = identity_share / len(all_clips) / members.sum()
    return Pairs(all_clips, renders, np.array(index, np.int64), neutral, np.array(gate, np.float32),
                 weight / weight.sum(), size)


def portrait_clip() -> Clip:
    """The bundled portrait (engine/assets/portrait.png) as a one-frame clip, landmarks as prepare_photo places
    them."""
    photo = prepare_photo(load_image(PORTRAIT))
    return Clip("portrait", np.ascontiguousarray(photo.image[None]), np.asarray(photo.landmarks)[None])


def _jittered_box(lm: np.ndarray, shape, size: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = mouth_crop_box(lm, shape, size)
    h, w = shape[:2]
    centre = np.array([x0 + x1, y0 + y1]) / 2
    side = (x1 - x0) * rng.uniform(*BOX_SCALE)
    cx, cy = centre + rng.uniform(-BOX_SHIFT, BOX_SHIFT, 2) * side
    side = int(min(round(side), h, w))
    bx = int(np.clip(round(cx - side / 2), 0, w - side))
    by = int(np.clip(round(cy - side / 2), 0, h - side))
    return bx, by, bx + side, by + side


def _jitter_neutral(crop: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    import cv2

    size = crop.shape[0]
    scale = 1.0 + rng.uniform(-NEUTRAL_SCALE, NEUTRAL_SCALE)
    shift = rng.uniform(-NEUTRAL_SHIFT, NEUTRAL_SHIFT, 2) * size
    c = (size - 1) / 2
    m = np.array([[scale, 0.0, c - scale * c + shift[0]], [0.0, scale, c - scale * c + shift[1]]])
    return cv2.warpAffine(crop, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def sample_batch(pairs: Pairs, idx: np.ndarray, rng: np.random.Generator | None = None, size: int | None = None):
    """Pairs idx → (render, neutral [B, 3, S, S], mask [B, 1, S, S], target [B, 3, S, S] float32 tensors in
    [0, 1], gate [B, 1, 1, 1]) at crop side S = size (default: the pairs'); augmented when rng is given, else
    the plain crops."""
    size = size or pairs.size
    out = np.zeros((len(idx), 10, size, size), np.float32)
    for j, i in enumerate(idx):
        c, s, k = pairs.index[i]
        clip = pairs.clips[c]
        lm = clip.landmarks[k]
        shape = clip.frames.shape[1:]
        box = mouth_crop_box(lm, shape, size) if rng is None else _jittered_box(lm, shape, size, rng)
        neutral = pairs.neutral[(c, s)] if rng is None else _jitter_neutral(pairs.neutral[(c, s)], rng)
        neutral = sized_crop(neutral, size)
        images = np.stack([resize_crop(pairs.renders[i], box, size), neutral, resize_crop(clip.frames[k], box, size)])
        images = images.astype(np.float32) / 255.0  # [3, S, S, 3]
        mask = inner_lip_mask(lm, box, size)
        if rng is not None:
            gain = rng.uniform(1 - CHANNEL_GAIN, 1 + CHANNEL_GAIN, 3) * rng.uniform(1 - GAIN, 1 + GAIN)
            images = np.clip(images * gain.astype(np.float32) + np.float32(rng.uniform(-OFFSET, OFFSET)), 0, 1)
            if rng.random() < 0.5:
                images, mask = images[:, :, ::-1], mask[:, ::-1]
        out[j, 0:3], out[j, 3:6], out[j, 9:10] = images[0].transpose(2, 0, 1), images[1].transpose(2, 0, 1), mask
        out[j, 6:9] = images[2].transpose(2, 0, 1)
    t = torch.from_numpy(out)
    gate = torch.from_numpy(pairs.gate[np.asarray(idx)]).view(-1, 1, 1, 1)
    return t[:, 0:3], t[:, 3:6], t[:, 9:10], t[:, 6:9], gate


# ------------------------------------------------------------------------------------------------ training


def loss_weight(refiner: MouthRefiner, mask: torch.Tensor) -> torch.Tensor:
    """The blend window, with the inner mouth (mask grown by MOUTH_GROW px) weighted 1 + MOUTH_WEIGHT → [B, 1, S, S]."""
    grown = F.max_pool2d(mask, 2 * MOUTH_GROW + 1, stride=1, padding=MOUTH_GROW)
    return refiner.window_for(mask.shape[-1]) * (1.0 + MOUTH_WEIGHT * grown)


def refiner_loss(refined: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Weighted L1 + GRAD_WEIGHT × weighted L1 of the pixel differences; [B, 3, S, S] ×2, weight [B, 1, S, S]."""
    norm = weight.sum() * refined.shape[1] + 1e-8
    loss = (weight * (refined - target).abs()).sum() / norm
    for dim in (2, 3):
        n = weight.shape[dim] - 1
        w = torch.minimum(weight.narrow(dim, 0, n), weight.narrow(dim, 1, n))
        loss = loss + GRAD_WEIGHT * (w * (refined.diff(dim=dim) - target.diff(dim=dim)).abs()).sum() / norm
    return loss


def train_refiner(pairs: Pairs, steps: int, batch: int = 16, lr: float = 1e-3, seed: int = 0,
                  cfg: MouthRefinerConfig | None = None, max_seconds: float | None = None,
                  log_every: int = 100, log=print, ema_decay: float = EMA_DECAY) -> tuple[MouthRefiner, dict]:
    """Train a refiner from its zero-initialised output → (the EMA refiner in eval mode, a summary with the loss
    history and the steps run, fewer than `steps` if max_seconds ran out). ema_decay 0: the last weights."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    fast = torch.channels_last  # about a fifth faster on the CPU
    refiner = MouthRefiner(cfg).to(memory_format=fast)
    ema = MouthRefiner(refiner.cfg).to(memory_format=fast)
    ema.load_state_dict(refiner.state_dict())
    ema.requires_grad_(False)
    opt = torch.optim.AdamW(refiner.parameters(), lr=lr, weight_decay=1e-4)
    schedule = lambda s: min(1.0, (s + 1) / WARMUP) * (
        MIN_LR_SHARE + (1 - MIN_LR_SHARE) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    history, running, start, step = [], [], time.monotonic(), 0
    for step in range(1, steps + 1):
        for g in opt.param_groups:
            g["lr"] = lr * schedule(step - 1)
        sizes = refiner.cfg.sizes  # one crop side a step, drawn when trained at several
        side = int(rng.choice(sizes)) if len(sizes) > 1 else sizes[0]
        batch_ = sample_batch(pairs, rng.choice(len(pairs), batch, p=pairs.weight), rng, side)
        render, neutral, mask, target, gate = (t.contiguous(memory_format=fast) for t in batch_)
        refined = render + gate * (refiner(render, neutral, mask) - render)  # as refine_frame applies it
        loss = refiner_loss(refined, target, loss_weight(refiner, mask))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(refiner.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            for p_ema, p in zip(ema.parameters(), refiner.parameters()):
                p_ema.lerp_(p, 1.0 - ema_decay)
        running.append(loss.item())
        if step % log_every == 0 or step == steps:
            history.append((step, float(np.mean(running))))
            log(f"step {step}: loss {history[-1][1]:.5f} ({time.monotonic() - start:.0f} s)")
            running = []
        if max_seconds is not None and time.monotonic() - start > max_seconds:
            log(f"time limit reached after step {step}")
            break
    summary = {"steps": step, "batch": batch, "lr": lr, "seed": seed, "seconds": round(time.monotonic() - start, 1),
               "loss": [[s, round(v, 5)] for s, v in history]}
    return ema.eval(), summary


def save_refiner(refiner: MouthRefiner, path: str | Path, meta: dict) -> None:
    """Weights as fp16 safetensors at path, and meta (with the config) in the .json beside it."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().to(torch.float16).contiguous() for k, v in refiner.state_dict().items()}, str(path))
    path.with_suffix(".json").write_text(json.dumps({"config": config_dict(refiner.cfg), **meta}, indent=1) + "\n")


# ------------------------------------------------------------------------------------------------ evaluation


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else float(10.0 * np.log10(255.0**2 / mse))


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM of the luma of two uint8 [H, W, 3] images (Wang et al. 2004 constants, Gaussian window)."""
    import cv2

    x, y = a.astype(np.float64) @ LUMA, b.astype(np.float64) @ LUMA
    c1, c2 = (SSIM_K[0] * 255) ** 2, (SSIM_K[1] * 255) ** 2
    blur = lambda z: cv2.GaussianBlur(z, (SSIM_WINDOW, SSIM_WINDOW), SSIM_SIGMA)
    mx, my = blur(x), blur(y)
    sxx, syy, sxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    return float((((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))).mean())


def face_box(lm: np.ndarray, shape) -> tuple[int, int, int, int]:
    pts = np.asarray(lm)[list(mesh.FACE_OVAL), :2]
    (x0, y0), (x1, y1) = pts.min(0), pts.max(0)
    px, py = FACE_PAD * (x1 - x0), FACE_PAD * (y1 - y0)
    return (max(0, int(x0 - px)), max(0, int(y0 - py)), min(shape[1], int(np.ceil(x1 + px))),
            min(shape[0], int(np.ceil(y1 + py))))


def reenact(refiner: MouthRefiner | None, clip: Clip, source: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Self-reenactment of a clip from one source frame → (plain renders, refined renders) of every frame."""
    renderer = PhotoRenderer(photo_from_landmarks(clip.frames[source], clip.landmarks[source]))
    neutral = neutral_mouth_crop(renderer.image, renderer.neutral)
    renders = [renderer.render(lm) for lm in clip.landmarks]
    refined = [refine_frame(refiner, r, lm, neutral, renderer.neutral) for r, lm in zip(renders, clip.landmarks)]
    return renders, refined


def _crop(image: np.ndarray, box) -> np.ndarray:
    x0, y0, x1, y1 = box
    return image[y0:y1, x0:x1]


def evaluate(refiner: MouthRefiner | None, clips: list[Clip]) -> dict:
    """Held-out figures (module docstring), each the mean over the clips' frames 1..F-1 (frame 0 is the source)."""
    rows = {"render": [], "refined": []}
    flicker = {"render": [], "refined": []}
    for clip in clips:
        renders, refined = reenact(refiner, clip)
        shape = clip.frames.shape[1:]
        boxes = np.array([mouth_crop_box(lm, shape) for lm in clip.landmarks])
        union = (*boxes[:, :2].min(0), *boxes[:, 2:].max(0))
        real_u = np.stack([_crop(f, union) for f in clip.frames]).astype(np.float64)
        for name, outs in (("render", renders), ("refined", refined)):
            for k in range(1, len(outs)):
                mb, fb = boxes[k], face_box(clip.landmarks[k], shape)
                a, b = _crop(outs[k], mb), _crop(clip.frames[k], mb)
                fa, fr = _crop(outs[k], fb), _crop(clip.frames[k], fb)
                rows[name].append((psnr(a, b), ssim(a, b), psnr(fa, fr), ssim(fa, fr)))
            out_u = np.stack([_crop(f, union) for f in outs]).astype(np.float64)
            flicker[name].append(float(np.abs(np.diff(out_u[1:], axis=0) - np.diff(real_u[1:], axis=0)).mean()))
    result = {}
    for name, r in rows.items():
        r = np.array(r)
        result[name] = {"mouth_psnr": round(float(r[:, 0].mean()), 3), "mouth_ssim": round(float(r[:, 1].mean()), 4),
                        "face_psnr": round(float(r[:, 2].mean()), 3), "face_ssim": round(float(r[:, 3].mean()), 4),
                        "flicker": round(float(np.mean(flicker[name])), 3)}
    return result


def scaled_clip(clip: Clip, scale: float) -> Clip:
    """The clip resized by `scale` (area filter), its landmarks with it."""
    import cv2

    if scale == 1.0:
        return clip
    frames = np.stack([cv2.resize(f, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) for f in clip.frames])
    landmarks = clip.landmarks.copy()
    landmarks[..., :2] = (landmarks[..., :2] + 0.5) * scale - 0.5
    return Clip(clip.name, frames, landmarks)


def compare_sizes(candidate: MouthRefiner, shipped: MouthRefiner, clips: list[Clip]) -> dict:
    """SIZES_RULE's figures: the mean refined mouth-box PSNR of both refiners per scale of the clips."""
    out = {}
    for scale in SIZES_SCALES:
        resized = [scaled_clip(c, scale) for c in clips]
        out[str(scale)] = {"candidate": evaluate(candidate, resized)["refined"]["mouth_psnr"],
                           "shipped": evaluate(shipped, resized)["refined"]["mouth_psnr"]}
    out["passes"] = all(v["candidate"] >= v["shipped"] - SIZES_TOLERANCE_DB for k, v in out.items() if k != "passes")
    return out


def passes(figures: dict) -> bool:
    """SELECTION_RULE on evaluate's figures."""
    render, refined = figures["render"], figures["refined"]
    return refined["mouth_psnr"] > render["mouth_psnr"] and refined["mouth_ssim"] >= render["mouth_ssim"]


def contact_sheet(refiner: MouthRefiner | None, clip: Clip, frames: list[int], scale: int = 2) -> np.ndarray:
    """Mouth crops of a clip's self-reenactment, one row per frame: real | render | refined | 4×|refined - render|
    → uint8 [rows · side, 4 · side, 3] (side: the first frame's box side × scale)."""
    import cv2

    renders, refined = reenact(refiner, clip)
    x0, _, x1, _ = mouth_crop_box(clip.landmarks[frames[0]], clip.frames.shape[1:])
    side = (x1 - x0) * scale
    rows = []
    for k in frames:
        box = mouth_crop_box(clip.landmarks[k], clip.frames.shape[1:])
        crops = [_crop(im, box) for im in (clip.frames[k], renders[k], refined[k])]
        diff = np.clip(4 * np.abs(crops[2].astype(np.int16) - crops[1].astype(np.int16)), 0, 255).astype(np.uint8)
        rows.append(np.concatenate([cv2.resize(c, (side, side), interpolation=cv2.INTER_NEAREST)
                                    for c in crops + [diff]], 1))
    return np.concatenate(rows, 0)


# ------------------------------------------------------------------------------------------------ command


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m livehead.engine.training.mouth",
                                description="Train the mouth refiner on the GRID training clips; check it on the "
                                            "held-out ones and keep it only if the selection rule says so.")
    p.add_argument("--data", required=True, help="folder with the GRID sample clips (<name>.mpg)")
    p.add_argument("--out", default=str(DEFAULT_PATH), help="the .safetensors to write (its .json beside it)")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sources", type=int, default=SOURCES, help="source frames per clip")
    p.add_argument("--max-minutes", type=float, default=None, help="stop training after this long")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--evaluate", metavar="WEIGHTS", help="only report the held-out figures of these weights")
    p.add_argument("--note", help="a note to keep in the .json (why this run was made)")
    p.add_argument("--widths", type=int, nargs=3, default=list(MouthRefinerConfig.widths),
                   help="channels at S/2, S/4, S/8")
    p.add_argument("--baseline", help="the refiner a --min-size run is compared with (default: the --out file)")
    p.add_argument("--min-size", type=int, default=0, help="train at every crop side from this (a multiple of 8) to "
                   "96, so small output sizes refine near the mouth's own resolution; 0: at 96 only")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    assert not set(GRID_TRAIN) & set(GRID_HELD_OUT)
    try:
        if args.evaluate:
            refiner = load_mouth_refiner(args.evaluate)
            if refiner is None:
                raise InputError(f"weights not found: {args.evaluate}")
            print(json.dumps(evaluate(refiner, load_clips(args.data, GRID_HELD_OUT)), indent=1))
            return 0
        if args.baseline and not Path(args.baseline).exists():  # before any training, not after it
            raise InputError(f"--baseline weights not found: {args.baseline}")
        train = load_clips(args.data, GRID_TRAIN)
        pairs = build_pairs(train, sources=args.sources, seed=args.seed, identity_clips=[portrait_clip()])
        print(f"{len(pairs)} pairs from {len(train)} clips")
        cfg = MouthRefinerConfig(widths=tuple(args.widths), min_size=args.min_size)
        refiner, summary = train_refiner(pairs, args.steps, args.batch, args.lr, args.seed, cfg=cfg,
                                         max_seconds=None if args.max_minutes is None else 60 * args.max_minutes)
        meta = {"data": list(GRID_TRAIN), "held_out": list(GRID_HELD_OUT), "sources_per_clip": args.sources,
                "pairs": len(pairs), "synthetic": SYNTHETIC, **summary, "selection_rule": SELECTION_RULE,
                **({"note": args.note} if args.note else {}),
                "command": "python -m livehead.engine.training.mouth " + shlex.join(argv if argv is not None
                                                                                   else sys.argv[1:])}
        with tempfile.TemporaryDirectory() as tmp:
            candidate = Path(tmp) / "mouth_refiner.safetensors"
            save_refiner(refiner, candidate, meta)
            sizes_ok = True
            if cfg.min_size:
                before = load_mouth_refiner(args.baseline or args.out)
                if before is not None:
                    meta["sizes_rule"] = SIZES_RULE
                    meta["sizes_check"] = compare_sizes(load_mouth_refiner(candidate), before, train)
                    sizes_ok = meta["sizes_check"]["passes"]
                    print("sizes check:", json.dumps(meta["sizes_check"]))
            figures = evaluate(load_mouth_refiner(candidate), load_clips(args.data, GRID_HELD_OUT))
            meta.update(heldout=figures, shipped=passes(figures) and sizes_ok,
                        heldout_mouth_psnr={k: figures[k]["mouth_psnr"] for k in ("render", "refined")})
            out = Path(args.out)
            out.parent.mkdir(parents=True, exist_ok=True)
            record = json.dumps({"config": config_dict(refiner.cfg), **meta}, indent=1) + "\n"
            if meta["shipped"]:
                shutil.copyfile(candidate, out)
                out.with_suffix(".json").write_text(record)
            else:  # the weights there stay, and so does the record that describes them
                out.with_suffix(".rejected.json").write_text(record)
    except InputError as err:
        print(f"mouth: error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(meta["heldout"], indent=1))
    print(f"{'wrote' if meta['shipped'] else 'did not ship (selection rule)'} {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`livehead eval` for the motion tier: the lip-sync, silence, identity and jitter metrics of `evaluate`, plus what
only a tier that moves the photo can be asked: a mismatched-audio margin and self-reenactment.

Per clip (photo = the clip's first frame, whole; audio = the clip's own speech):
- the generated video, cropped like the ground truth, through `evaluate_pair` (mouth-opening correlation with
  the real video, silent frames closed beside the real video's own rate, identity, landmark jitter beside the
  real video's);
- mismatched audio: the same photo driven by another clip's speech; its mouth-opening correlation with this
  clip's real video, and the margin the matched audio keeps over it;
- self-reenactment: the first frame driven by the clip's own tracked motion (`engine.motion.space`), PSNR and
  SSIM of the face box and the mouth box against the real frames, beside the first frame held still.

    result = evaluate_motion_clips(find_clips("grid_held_out/"), runners, size=256)
"""

from __future__ import annotations

import time

import cv2
import numpy as np
from tqdm import tqdm

from livehead.engine.common.constants import SAMPLE_RATE
from livehead.engine.eval.evaluate import (
    ClipSource,
    PreparedClip,
    aggregate,
    crop_frames,
    evaluate_pair,
    generate_frames,
    prepare_clip,
    thresholds,
)
from livehead.engine.eval.image_metrics import crop, face_box, mouth_box, psnr, ssim
from livehead.engine.motion.tracker import track_frames
from livehead.engine.runtime.motion_runners import MotionRunners
from livehead.engine.runtime.portrait import portrait_for
from livehead.engine.runtime.session import prepare_avatar

EVAL_SIZE = 256  # side of the face crops the metrics look at
# What issue-level success means for the motion tier on held-out speakers (written before any evaluation).
MOTION_CRITERIA = {
    "identity_same_min": 0.95,
    "mouth_corr_gt_min": 0.6,
    "mismatch_margin_min": 0.3,
    "silent_closed_within": 0.1,  # of the real video's own rate
}


def _crop_like_truth(frames: list[np.ndarray], clip: PreparedClip, size: int) -> list[np.ndarray]:
    """Generated frames at the photo's size → the ground truth's face crop (its box scaled to their size)."""
    h0, w0 = clip.full_frames[0].shape[:2]
    h, w = frames[0].shape[:2]
    x0, y0, x1, y1 = clip.crop_box
    box = (round(x0 * w / w0), round(y0 * h / h0), round(x1 * w / w0), round(y1 * h / h0))
    return crop_frames(frames, box, size)


def generate_clip(runners: MotionRunners, clip: PreparedClip, pcm: np.ndarray, seed: int = 0) -> list[np.ndarray]:
    """The clip's first frame (whole) speaking `pcm` through the streaming session → full-size frames."""
    picture = portrait_for(runners.cfg, clip.full_frames[0])
    return generate_frames(runners, picture.image, picture.mask, pcm, seed=seed)


def _fit_length(pcm: np.ndarray, n: int) -> np.ndarray:
    """pcm repeated or cut to n samples."""
    return np.resize(pcm, n).astype(np.float32)


def self_reenactment(runners: MotionRunners, clip: PreparedClip) -> dict:
    """The first frame driven by the clip's own tracked motion vs the real frames 1.. (face and mouth boxes of
    each real frame's landmarks), beside the first frame held still."""
    real = clip.full_frames
    picture = portrait_for(runners.cfg, real[0])
    h, w = picture.image.shape[:2]
    scaled = [f if f.shape[:2] == (h, w) else _resize(f, w, h) for f in real]
    landmarks, _ = track_frames(scaled)
    rig = prepare_avatar(runners, picture.image, picture.mask).decoder_reference
    motion = runners.space.encode(landmarks[..., :2], neutral=rig.neutral)
    moved = runners.space.decode(motion, rig.neutral)
    rendered = [rig.renderer.render(m) for m in moved]
    out: dict = {}
    for name, box_of in (("face", face_box), ("mouth", mouth_box)):
        scores = {"reenacted": [], "held_still": []}
        for k, frame in enumerate(scaled[1:], start=1):  # frame 0 is the photo itself: equal for both
            b = box_of(landmarks[k, :, :2], frame.shape)
            target = crop(frame, b)
            for key, image in (("reenacted", rendered[k]), ("held_still", picture.image)):
                scores[key].append((psnr(crop(image, b), target), ssim(crop(image, b), target)))
        for key, values in scores.items():
            arr = np.array(values)
            out[f"{name}_psnr_{key}"] = round(float(arr[:, 0].mean()), 3)
            out[f"{name}_ssim_{key}"] = round(float(arr[:, 1].mean()), 4)
    return out


def _resize(frame: np.ndarray, w: int, h: int) -> np.ndarray:
    return cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA)


def evaluate_motion_clips(clips: list[ClipSource], runners: MotionRunners, size: int = EVAL_SIZE,
                          identity_stride: int = 2, seed: int = 0, progress: bool = True,
                          reenact: bool = True) -> dict:
    """Evaluate the motion tier on every clip (see the module doc); returns the JSON-ready result."""
    t0 = time.perf_counter()
    prepared = [prepare_clip(source, size) for source in clips]
    results = []
    for i, clip in enumerate(tqdm(prepared, desc="eval", unit="clip", disable=not progress)):
        frames = _crop_like_truth(generate_clip(runners, clip, clip.pcm, seed), clip, size)
        metrics = evaluate_pair(frames, clip.reference, clip.pcm, SAMPLE_RATE, gt_open=clip.gt_open,
                                gt_frames=clip.gt_frames, silent=clip.silent, identity_stride=identity_stride)
        row = {"clip": clip.source.name, "kind": clip.source.kind, **metrics}
        if len(prepared) > 1:
            other = prepared[(i + 1) % len(prepared)]
            mismatched = _crop_like_truth(generate_clip(runners, clip, _fit_length(other.pcm, len(clip.pcm)), seed),
                                          clip, size)
            wrong = evaluate_pair(mismatched, clip.reference, clip.pcm, SAMPLE_RATE, gt_open=clip.gt_open,
                                  gt_frames=clip.gt_frames, silent=clip.silent, identity=False)
            row["mismatched_audio_from"] = other.source.name
            row["mouth_corr_gt_mismatched"] = wrong.get("mouth_corr_gt")
            if row.get("mouth_corr_gt") is not None and wrong.get("mouth_corr_gt") is not None:
                row["mismatch_margin"] = round(row["mouth_corr_gt"] - wrong["mouth_corr_gt"], 4)
        if reenact and clip.full_frames is not None:
            row["reenactment"] = self_reenactment(runners, clip)
        results.append(row)
    return {
        "thresholds": thresholds(MOTION_CRITERIA),
        "summary": motion_summary(results),
        "clips": results,
        "seconds": round(time.perf_counter() - t0, 1),
    }


def motion_summary(rows: list[dict]) -> dict:
    """`evaluate.aggregate`'s figures plus the motion tier's, and the criteria checked."""
    out = aggregate(rows)
    out.pop("pass", None)

    def mean(key, source=None):
        vals = [(r.get(source) or {}).get(key) if source else r.get(key) for r in rows]
        vals = [v for v in vals if v is not None]
        return round(float(np.mean(vals)), 4) if vals else None

    d = sum(r.get("silent_frames", 0) for r in rows)
    gt_closed = sum((r.get("gt_silent_closed") or 0) * r.get("silent_frames", 0) for r in rows)
    out["gt_silent_closed"] = round(gt_closed / d, 4) if d else None
    out["mouth_corr_gt_mismatched"] = mean("mouth_corr_gt_mismatched")
    out["mismatch_margin"] = mean("mismatch_margin")
    reen = [r["reenactment"] for r in rows if "reenactment" in r]
    if reen:
        out["reenactment"] = {key: round(float(np.mean([r[key] for r in reen])), 4) for key in reen[0]}
    c = MOTION_CRITERIA
    checks = {
        "identity_same": out["identity_same"] is not None and out["identity_same"] >= c["identity_same_min"],
        "mouth_corr_gt": out["mouth_corr_gt"] is not None and out["mouth_corr_gt"] >= c["mouth_corr_gt_min"],
        "mismatch_margin": out["mismatch_margin"] is not None and out["mismatch_margin"] >= c["mismatch_margin_min"],
        "silent_closed": (out["silent_closed"] is not None and out["gt_silent_closed"] is not None
                          and abs(out["silent_closed"] - out["gt_silent_closed"]) <= c["silent_closed_within"]),
        "jitter": (out["landmark_jitter"] is not None and out["gt_landmark_jitter"] is not None
                   and out["landmark_jitter"] <= out["gt_landmark_jitter"]),
    }
    if reen:
        r = out["reenactment"]
        checks["reenactment_face_psnr"] = r["face_psnr_reenacted"] > r["face_psnr_held_still"]
        checks["reenactment_mouth_psnr"] = r["mouth_psnr_reenacted"] > r["mouth_psnr_held_still"]
    out["pass"] = checks
    return out

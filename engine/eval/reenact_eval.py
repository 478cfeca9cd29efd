"""Scores of video-driven reenactment (`engine.runtime.reenact`): self-reenactment with 1 and more references,
and cross-reenactment (one speaker's video driving another's photo).

Self-reenactment: the photo is the clip's frame 0, the driving video the clip itself (relative transfer from
frame 0); every rendered frame is compared with the real one in the face box and the mouth box of the real
frame's landmarks (PSNR, SSIM), and its dlib descriptor with the photo's (same person below
SAME_PERSON_DISTANCE). With more references, the extra ones are frames of the same clip picked by
`spread_over_openings`; the frames within EXCLUDE_RADIUS of any reference (frame 0 included) are left out of
the scores of every run, so all runs are scored on the same frames, none of which is a reference or its
neighbour. The scores over all frames 1.. are reported beside them.

Cross-reenactment: speaker A's clip drives speaker B's frame 0; identity against B's photo, and the rendered
mouth opening (tracked again) correlated with A's tracked mouth opening.

    result = self_reenactment_scores(frames, counts=(1, 4))
    result = cross_reenactment_scores(driver_frames, photo)
"""

from __future__ import annotations

import numpy as np

from livehead.engine.common.constants import FPS
from livehead.engine.eval.evaluate import SAME_PERSON_DISTANCE, face_embedder, pearson
from livehead.engine.eval.image_metrics import crop, face_box, mouth_box, psnr, ssim
from livehead.engine.motion import mesh
from livehead.engine.motion.driver import DEFAULT_SMOOTHING
from livehead.engine.motion.few_shot import spread_over_openings
from livehead.engine.motion.tracker import track_frames
from livehead.engine.runtime.reenact import Reenactor, driving_motion, track_driving

EXCLUDE_RADIUS = 2  # frames on each side of a reference frame left out of the scores
REENACT_CRITERIA = {"identity_same_min": 0.95, "cross_mouth_corr_min": 0.8}


def reenact_frames(reenactor: Reenactor, driver: list[np.ndarray], smoothing: float = DEFAULT_SMOOTHING,
                   neutral_frame: int | None = 0, mode: str = "relative") -> tuple[list[np.ndarray], np.ndarray]:
    """Driver frames uint8 [H, W, 3] (at FPS) → (rendered frames, reference weights [F, R]). neutral_frame None:
    the driving frame matching the photo's mouth (`reenact_file`'s default)."""
    track = track_driving(driver, FPS, neutral_frame=neutral_frame, photo_neutral=reenactor.neutral)
    motion = driving_motion(track, reenactor.space, reenactor.neutral, mode, smoothing)
    out = [reenactor.render(m) for m in motion]
    return [f for f, _ in out], np.stack([w for _, w in out])


def identity_same(frames: list[np.ndarray], photo: np.ndarray, stride: int = 1) -> float | None:
    """Fraction of frames (every `stride`-th) whose dlib descriptor is within SAME_PERSON_DISTANCE of the photo's
    (a frame without a found face counts as not the same)."""
    embed = face_embedder().embed
    ref = embed(photo)
    if ref is None:
        return None
    same = [(e := embed(f)) is not None and float(np.linalg.norm(e - ref)) < SAME_PERSON_DISTANCE
            for f in frames[::stride]]
    return round(float(np.mean(same)), 4)


def box_scores(rendered: list[np.ndarray], real: list[np.ndarray], landmarks: np.ndarray, keep: list[int]) -> dict:
    """Mean face and mouth-box PSNR / SSIM of rendered frames against real ones over the frames `keep`."""
    out = {}
    for name, box_of in (("face", face_box), ("mouth", mouth_box)):
        vals = []
        for k in keep:
            b = box_of(landmarks[k], real[k].shape)
            vals.append((psnr(crop(rendered[k], b), crop(real[k], b)), ssim(crop(rendered[k], b), crop(real[k], b))))
        arr = np.array(vals)
        out[f"{name}_psnr"] = round(float(arr[:, 0].mean()), 3)
        out[f"{name}_ssim"] = round(float(arr[:, 1].mean()), 4)
    return out


def self_reenactment_scores(frames: list[np.ndarray], counts: tuple[int, ...] = (1, 4),
                            smoothing: float = DEFAULT_SMOOTHING, identity_stride: int = 1) -> dict:
    """One clip's frames [H, W, 3] (at FPS, the speaker's whole clip) → scores per reference count."""
    landmarks = track_frames(frames)[0][..., :2].astype(np.float64)
    picks = {n: spread_over_openings(landmarks, n) for n in counts}
    near = {i + d for idx in picks.values() for i in idx for d in range(-EXCLUDE_RADIUS, EXCLUDE_RADIUS + 1)}
    scored = [k for k in range(1, len(frames)) if k not in near]
    everything = list(range(1, len(frames)))
    result: dict = {"frames": len(frames), "scored_frames": len(scored),
                    "held_still": box_scores([frames[0]] * len(frames), frames, landmarks, scored)}
    for n, idx in picks.items():
        rendered, weights = reenact_frames(Reenactor([frames[i] for i in idx]), frames, smoothing)
        result[f"references_{n}"] = {
            "reference_frames": idx,
            "reference_use": [round(float(x), 3) for x in weights.mean(0)],
            **box_scores(rendered, frames, landmarks, scored),
            "all_frames": box_scores(rendered, frames, landmarks, everything),
            "identity_same": identity_same(rendered, frames[0], identity_stride),
        }
    return result


def cross_reenactment_scores(driver: list[np.ndarray], photo: np.ndarray, smoothing: float = DEFAULT_SMOOTHING,
                             identity_stride: int = 1,
                             neutral_frame: int | None = None) -> tuple[dict, list[np.ndarray]]:
    """Driver frames (speaker A, at FPS) moving photo (speaker B) → (identity against B and mouth-opening
    correlation against A, the rendered frames). neutral_frame None: `reenact_file`'s default rule."""
    rendered, _ = reenact_frames(Reenactor([photo]), driver, smoothing, neutral_frame)
    driver_open = np.asarray(mesh.mouth_opening(track_frames(driver)[0][..., :2]))
    out_lm, found = track_frames(rendered)
    out_open = np.asarray(mesh.mouth_opening(out_lm[..., :2]))
    return {
        "frames": len(rendered),
        "rendered_frames_with_face": round(float(found.mean()), 4),
        "identity_same_as_photo": identity_same(rendered, photo, identity_stride),
        "identity_same_as_driver": identity_same(rendered, driver[0], identity_stride),
        "mouth_corr_driver": None if (c := pearson(out_open, driver_open)) is None else round(c, 4),
    }, rendered

"""The stochastic part of the motion tier's sampling: blinks and idle head motion, drawn from the window's noise.

The generator (`engine.model.motion_generator`) regresses what the audio determines: lips, jaw, cheeks, brows
and the nods that go with the voice. What the audio does not determine is drawn here, from the same per-clip
noise the sampler starts from, and continued from the motion prefix, so a session stays a deterministic function
of its audio and seed (20 ms pushes give the same frames as one push) and clips join without jumps:

- blinks at a natural rate (`BLINKS_PER_MINUTE`), each a fixed 7-frame closing/opening profile; a blink cut by
  a clip boundary is recognised in the prefix and finished;
- idle head motion: the pose (rotation, scale, position) as a damped spring pulled towards the generator's pose
  and pushed by the noise, its position and velocity carried over from the prefix; `head_motion` scales the
  push (EMO's speed control), 0 keeps the head as predicted.

Motion vectors here are in motion units: [expression K | eyelids 2 | pose 4] (`engine.motion.space`).
"""

from __future__ import annotations

import math

import torch

BLINKS_PER_MINUTE = 17.0
BLINK_PROFILE = (0.55, 0.12, 0.04, 0.25, 0.6, 0.85, 0.96)  # eyelid openness, times the predicted, per frame
MIN_FRAMES_BETWEEN_BLINKS = 12
POSE_PULL = 0.02  # per frame: spring pulling the head towards the predicted pose
VELOCITY_KEEP = 0.9  # per frame: how much of the idle velocity carries over
POSE_STEP = (0.0012, 0.0008, 0.0025, 0.0018)  # idle velocity noise per frame: rad, log scale, x, y (face sizes)


def _normal_cdf(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))


def blink_phase(openness: torch.Tensor) -> int | None:
    """Where a blink stands at the end of a prefix. openness [n] (eyelids / predicted, 1 = open) →
    index into BLINK_PROFILE of the prefix's last frame, or None when the eyes are open."""
    n = len(BLINK_PROFILE)
    tail = openness[-min(len(openness), 3):]
    if float(tail.min()) > 0.9:
        return None
    best, best_err = None, float("inf")
    for phase in range(n):
        ref = [BLINK_PROFILE[phase - k] if phase - k >= 0 else 1.0 for k in range(len(tail) - 1, -1, -1)]
        err = float(((tail - torch.tensor(ref, dtype=tail.dtype)) ** 2).sum())
        if err < best_err:
            best, best_err = phase, err
    return best


def add_blinks(motion: torch.Tensor, noise: torch.Tensor, known: int, fps: float, k: int) -> torch.Tensor:
    """motion [W, D] (the first `known` frames given), noise [W] standard normal → motion with blinks on the
    eyelid channels [k, k+2) of the new frames. The prefix's eyelids are taken as they are."""
    out = motion.clone()
    eyes = slice(k, k + 2)
    prefix_open = motion[:known, eyes].mean(dim=1) if known else motion.new_ones(0)
    phase = blink_phase(prefix_open) if known else None
    since = 0 if phase is not None else MIN_FRAMES_BETWEEN_BLINKS
    if phase is None and known:
        closed = (prefix_open < 0.9).nonzero()
        since = known - 1 - int(closed[-1]) if len(closed) else MIN_FRAMES_BETWEEN_BLINKS
    chance = BLINKS_PER_MINUTE / 60.0 / fps
    uniform = _normal_cdf(noise)
    for f in range(known, motion.shape[0]):
        if phase is not None and phase + 1 < len(BLINK_PROFILE):
            phase += 1
        elif since >= MIN_FRAMES_BETWEEN_BLINKS and float(uniform[f]) < chance:
            phase = 0
        else:
            phase = None
        if phase is None:
            since += 1
        else:
            since = 0
            out[f, eyes] = motion[f, eyes] * BLINK_PROFILE[phase]
    return out


def add_idle_pose(motion: torch.Tensor, predicted: torch.Tensor, noise: torch.Tensor, known: int,
                  head_motion: float) -> torch.Tensor:
    """motion [W, D] (prefix given), predicted [W, D] the generator's estimate, noise [W, 4] → motion whose new
    frames' pose [-4:] follows a damped spring pulled towards the predicted pose and pushed by the noise,
    starting from the prefix's last pose and velocity (so clips join smoothly)."""
    if head_motion <= 0 or known == 0:
        return motion
    out = motion.clone()
    step = torch.tensor(POSE_STEP, dtype=motion.dtype) * head_motion
    current = motion[known - 1, -4:]
    velocity = current - motion[known - 2, -4:] if known >= 2 else torch.zeros_like(current)
    for f in range(known, motion.shape[0]):
        velocity = VELOCITY_KEEP * velocity + POSE_PULL * (predicted[f, -4:] - current) + step * noise[f]
        current = current + velocity
        out[f, -4:] = current
    return out

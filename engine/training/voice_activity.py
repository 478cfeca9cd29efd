"""Training the voice-activity probe (`engine.model.voice_activity`) that lets the motion tier's face rest in silence.

    python -m livehead.engine.training.voice_activity --data GRID_DIR --cache runs/cache --folds
    # writes engine/assets/motion/voice_activity.safetensors + .json (--out to put it elsewhere)

Data: the motion generator's own training data (`engine.training.motion.build_motion_dataset`): the training
clips (the held-out GRID clips are left out by name) and `--augment` copies of each with another voice and room
(pitch ±3 semitones, tempo 0.9-1.1, noise 15-30 dB SNR, a synthetic room, a gain), the per-frame Whisper tokens
computed as a session with the generator's training schedule computes them (`training_schedule`: 8 + 5 frames,
the whole look-ahead). Labels: a frame is voiced when its level in the clean clip is
above the clip's silence threshold (`evaluate`'s rule, without the trimming of silent stretches: noise floor
+ 10 dB, bounded to 20-40 dB below the loudest frame); an augmented copy takes its clean clip's labels, resampled
with its tempo, so noise and reverberation do not count as voice. Beside them, clips of silence alone
(`silence_clips`: digital zeros and quiet white or pink room noise), all unvoiced: a session that starts, or stays,
silent has no speech to set Whisper's running log-mel maximum, and its tokens look unlike a pause in speech.

Fitting: logistic loss, AdamW on the probe's ~2 k parameters (full passes in shuffled batches), the token
standardisation measured on the training tokens. `--folds` first reports leave-one-speaker-out accuracy (the
probe trained without each training speaker, scored on that speaker's clean clip) so the figure is not one of
memorisation. A few minutes on 2 CPU cores once the motion data is cached (`--cache`, shared with
`livehead train motion`).
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch

from livehead.engine.common.errors import InputError
from livehead.engine.model.config import ModelConfig
from livehead.engine.model.voice_activity import (
    DEFAULT_PATH,
    VoiceActivityProbe,
    VoiceGateConfig,
    save_voice_probe,
)
from livehead.engine.motion.space import MotionSpace
from livehead.engine.runtime.audio_tokens import session_audio_tokens
from livehead.engine.training.motion import (
    AUGMENT,
    HELD_OUT,
    SILENCE_ABOVE_FLOOR,
    SILENCE_DB_RANGE,
    MotionClip,
    build_motion_dataset,
    default_space_path,
    find_videos,
    load_audio_stack,
    training_schedule,
)

SILENCE_SECONDS = 3.0
SILENCE_LEVELS_DBFS = (None, -90.0, -75.0, -60.0, -50.0)  # None: digital zeros; else the noise's RMS level


def silence_clips(audio_stack, cfg: ModelConfig, seed: int = 0) -> list[torch.Tensor]:
    """Session tokens [F, Ta, Ca] of SILENCE_SECONDS of silence at every SILENCE_LEVELS_DBFS, white and pink."""
    rng = np.random.default_rng(seed)
    n = int(SILENCE_SECONDS * cfg.audio.sample_rate)
    out = []
    for level in SILENCE_LEVELS_DBFS:
        for pink in ((False,) if level is None else (False, True)):
            pcm = np.zeros(n) if level is None else rng.standard_normal(n)
            if pink:  # 1/f power
                spectrum = np.fft.rfft(pcm)
                spectrum /= np.sqrt(np.maximum(np.arange(len(spectrum)), 1.0))
                pcm = np.fft.irfft(spectrum, n)
            if level is not None:
                pcm *= 10 ** (level / 20) / max(float(np.sqrt(np.mean(pcm ** 2))), 1e-12)
            out.append(session_audio_tokens(audio_stack, cfg, pcm.astype(np.float32)).half())
    return out


@dataclass(frozen=True)
class ProbeRecipe:
    """How the probe is fitted."""

    epochs: int = 40
    batch: int = 256
    lr: float = 3e-3
    weight_decay: float = 1e-2
    seed: int = 0


def voiced_frames(level_db: np.ndarray) -> np.ndarray:
    """bool [F]: frames above the clip's silence threshold (noise floor = 10th-percentile level, + 10 dB, bounded
    to SILENCE_DB_RANGE below the loudest frame), as `livehead eval` finds speech, before trimming."""
    level_db = np.asarray(level_db, np.float64)
    floor = float(np.percentile(level_db, 10)) if level_db.size else SILENCE_DB_RANGE[0]
    return level_db >= float(np.clip(floor + SILENCE_ABOVE_FLOOR, *SILENCE_DB_RANGE))


def clip_labels(clips: list[MotionClip]) -> list[np.ndarray]:
    """Voiced labels float32 [F] of every clip: its clean copy's, resampled (nearest frame) to the copy's tempo."""
    clean = {c.source: voiced_frames(c.level_db) for c in clips if c.name == c.source}
    out = []
    for c in clips:
        labels = clean[c.source]
        ratio = (len(labels) - 1) / max(c.frames - 1, 1)
        index = np.minimum(np.round(np.arange(c.frames) * ratio).astype(int), len(labels) - 1)
        out.append(labels[index].astype(np.float32))
    return out


def fit_probe(tokens: torch.Tensor, labels: torch.Tensor, recipe: ProbeRecipe = ProbeRecipe(),
              cfg: VoiceGateConfig | None = None) -> tuple[VoiceActivityProbe, list[float]]:
    """tokens [N, Ta, Ca] (float16 or 32), labels [N] in {0, 1} → the fitted probe and its mean loss per epoch."""
    cfg = cfg or VoiceGateConfig()
    probe = VoiceActivityProbe(cfg)
    x = tokens.reshape(len(tokens), cfg.positions, cfg.layers, cfg.channels)
    layer_mean = torch.zeros(cfg.layers, cfg.channels, dtype=torch.float64)
    layer_sq = torch.zeros_like(layer_mean)
    for part in x.split(1024):
        part = part.double()
        layer_mean += part.sum((0, 1))
        layer_sq += (part ** 2).sum((0, 1))
    count = len(x) * cfg.positions
    layer_mean /= count
    probe.mean.copy_(layer_mean.float())
    probe.std.copy_((layer_sq / count - layer_mean ** 2).clamp_min(1e-8).sqrt().float())
    gen = torch.Generator().manual_seed(recipe.seed)
    opt = torch.optim.AdamW(probe.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    positive = float(labels.mean())
    pos_weight = torch.tensor((1 - positive) / max(positive, 1e-6))  # balanced classes
    losses = []
    for _ in range(recipe.epochs):
        order = torch.randperm(len(x), generator=gen)
        total = 0.0
        for idx in order.split(recipe.batch):
            logits = probe(tokens[idx])
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels[idx], pos_weight=pos_weight)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        losses.append(total / len(x))
    return probe.eval(), losses


def _stack(clips: list[MotionClip], labels: list[np.ndarray],
           silence: list[torch.Tensor] = ()) -> tuple[torch.Tensor, torch.Tensor]:
    """The clips' tokens [N, Ta, Ca] and labels [N], silence clips (all unvoiced) appended."""
    tokens = [c.tokens for c in clips] + list(silence)
    labels = list(labels) + [np.zeros(len(t), np.float32) for t in silence]
    return torch.cat(tokens), torch.from_numpy(np.concatenate(labels))


def accuracy(probe: VoiceActivityProbe, tokens: torch.Tensor, labels: torch.Tensor) -> float:
    """Share of frames [N] whose probability is on the right side of 0.5."""
    return float(((probe.probability(tokens) > 0.5).float() == labels).float().mean())


def leave_one_speaker_out(clips: list[MotionClip], labels: list[np.ndarray], recipe: ProbeRecipe,
                          silence: list[torch.Tensor] = ()) -> dict:
    """Accuracy on each training clip's clean copy of a probe fitted without that clip (and its copies)."""
    out = {}
    for source in sorted({c.source for c in clips}):
        train = [i for i, c in enumerate(clips) if c.source != source]
        probe, _ = fit_probe(*_stack([clips[i] for i in train], [labels[i] for i in train], silence), recipe)
        test = next(i for i, c in enumerate(clips) if c.name == source)
        out[source] = round(accuracy(probe, *_stack([clips[test]], [labels[test]])), 4)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m livehead.engine.training.voice_activity",
                                description="Fit the voice-activity probe that gates the motion tier's expression.")
    p.add_argument("--data", required=True, nargs="+", help="folders (or files) of talking-face clips")
    p.add_argument("--out", default=str(DEFAULT_PATH), help="the .safetensors to write (its .json beside it)")
    p.add_argument("--cache", default=None, help="motion data cache (as `livehead train motion --cache`)")
    p.add_argument("--augment", type=int, default=AUGMENT, help=f"augmented copies per clip (default {AUGMENT})")
    p.add_argument("--epochs", type=int, default=ProbeRecipe.epochs)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--folds", action="store_true", help="report leave-one-speaker-out accuracy first")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    try:
        videos = find_videos(args.data, HELD_OUT)
    except InputError as e:
        print(f"livehead: error: {e}", file=sys.stderr)
        return 2
    cfg = training_schedule(ModelConfig.from_name("motion"))  # the generator's windows: 8 + 5, whole look-ahead
    space = MotionSpace.load(default_space_path(cfg))
    start = time.time()
    stack = load_audio_stack(cfg)
    clips = build_motion_dataset(videos, space, stack, cfg, augment=args.augment, seed=0, cache=args.cache,
                                 progress=not args.quiet)
    labels = clip_labels(clips)
    silence = silence_clips(stack, cfg, args.seed)
    recipe = ProbeRecipe(epochs=args.epochs, seed=args.seed)
    folds = leave_one_speaker_out(clips, labels, recipe, silence) if args.folds else None
    probe, losses = fit_probe(*_stack(clips, labels, silence), recipe)
    clean = [i for i, c in enumerate(clips) if c.name == c.source]
    info = {
        "data": sorted({c.source for c in clips}), "held_out": list(HELD_OUT), "augment": args.augment,
        "frames": int(sum(c.frames for c in clips)), "silence_frames": int(sum(len(t) for t in silence)),
        "silence_levels_dbfs": list(SILENCE_LEVELS_DBFS),
        "voiced_share": round(float(np.concatenate(labels).mean()), 4),
        "recipe": recipe.__dict__,
        "labels": "voiced = level above the clean clip's silence threshold (noise floor + 10 dB, bounded to "
                  "20-40 dB below the loudest frame); augmented copies take their clean clip's labels, resampled",
        "training_accuracy_clean": round(accuracy(probe, *_stack([clips[i] for i in clean],
                                                                [labels[i] for i in clean])), 4),
        "training_accuracy_silence": round(accuracy(probe, *_stack([], [], silence)), 4),
        "leave_one_speaker_out_accuracy": folds, "loss": [round(v, 4) for v in losses[::5] + losses[-1:]],
        "seconds": round(time.time() - start, 1), "torch": torch.__version__, "cpu": platform.processor() or
        platform.machine(), "threads": torch.get_num_threads(),
        "command": "python -m livehead.engine.training.voice_activity --data GRID_DIR" + (" --folds" if folds else ""),
    }
    save_voice_probe(probe, args.out, info)
    print({k: info[k] for k in ("frames", "voiced_share", "training_accuracy_clean", "training_accuracy_silence",
                                "leave_one_speaker_out_accuracy", "seconds")})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

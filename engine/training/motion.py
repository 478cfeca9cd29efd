"""Training the motion tier's generator (`engine.model.motion_generator`) on tracked talking-face videos.

    livehead train motion --preset motion --data DIR --out runs/motion \
        --steps 800 --batch 16 --lr 1e-3 --warmup 80 --first-clip-prob 0.2 --mouth-weight 4
    python -m livehead.engine.training.motion --weights runs/motion/weights --data DIR   # held-out figures

Data (`build_motion_dataset`): every video is tracked once (MediaPipe Face Mesh in video mode,
`engine.motion.tracker`) and encoded in the motion space (`engine.motion.space`) relative to its rest frame
(`rest_frame`: the first frame with closed lips in a silent stretch; the first frame itself on most clips).
Not always the first frame: three of the six GRID training clips start with the lips apart (0.07-0.15
eye-corner distances), and motion relative to an open mouth means something else on a user's closed-mouth photo.
Its audio gives the per-frame Whisper tokens exactly as a live session computes them
(`engine.runtime.audio_tokens.session_audio_tokens`), and its rest frame the face's shape code (`shape_code`).
`augment` more copies of every clip carry the same motion with other voices and rooms: a resample-based pitch
shift of up to ±3 semitones whose duration change is folded into one WSOLA time stretch, a tempo of 0.9-1.1
(the motion track is resampled to the new length), noise at 15-30 dB SNR (white or pink), a synthetic room
(exponentially decaying noise, RT60 0.2-0.6 s) and a gain. Everything is cached per video under `cache`
(keyed by the video, the space, the Whisper weights and the options).

Windows (`MotionWindows`): W = motion_frames + clip_frames consecutive frames (8 + 5 for the motion preset)
anywhere in a clip, also overlapping its start, where the frames before frame 0 are the neutral motion with
frame 0's tokens (as in a session's first clips). The model sees the known prefix as clean normalised motion
z = (m - mean) / std (+ a little noise, since live prefixes are its own predictions) and standard normal
noise for the new frames, at t = 999; with probability `first_clip_prob` the prefix is the neutral motion
with the first new frame's tokens, as in the first clip of a session. The per-channel mean / std are measured
on the training set and stored in the generator's `motion_mean` / `motion_std`.

Loss on the new frames' x0 (= -v at t = 999, zero terminal SNR):
- MSE with per-channel weights: expression channel i weighs 1 + mouth_weight * |r_i|, r_i its correlation
  with the real mouth opening on the training clips; eyelids `EYELID_WEIGHT`, pose `POSE_WEIGHT`. The eyelid
  targets are blink-free (a running median): blinks are drawn at sampling time (`engine.model.motion_sampling`)
  and may enter through the prefix, but the generator should not average them into half-closed eyes;
- `VELOCITY_WEIGHT` × the same MSE on frame-to-frame differences, the step from the prefix's last frame
  included when the prefix is real (clips join smoothly).

Against regression to the mean: with targets measured from each clip's first frame, the generator's mouth moved
about a third as much as the real one on training clips left out of its training, and a loss on the per-window
spread of the mouth channels did not change that (it is met on the training clips already; measured on a split
of the training clips, then dropped). Most of it was the inconsistent reference: measured from the rest frame,
out-of-fold predictions vary 0.92 times as much as the real mouth. What is left is calibrated
(`cross_validated_gain`): `folds` models are trained with the same recipe, each without a share of the training
clips; each generates its left-out clips as a session does, and one gain g on the expression channels is fitted
so that the mouth opening of those out-of-fold predictions varies as much as the real one (mean per-clip
standard deviation). The final model's expression outputs are multiplied by g at export (its `motion_out` rows;
the checkpoint keeps the trained values, so resuming stays exact). Eyelids and pose are left as trained. The
gain and the out-of-fold figures are recorded in livehead.json.

Optimisation: AdamW, linear warm-up then cosine decay to `MIN_LR_SHARE` of --lr, gradient clipping, optional
EMA, resumable checkpoints (`engine.training.train.Trainer`). OUT/weights holds `motion_generator.safetensors`
(the generator's state dict, fp16; the loader casts) and `livehead.json` (what it was trained on, the held-out
clips, the selection rule). Whisper-tiny is not copied: the loader takes the tiny preset's.

Evaluation (`evaluate_generator`, the `__main__` entry): each clip is generated as a session does it
(windows of 8 + 5, the prefix its own previous predictions, the first one neutral), decoded onto the clip's rest
frame (also reported: onto its first frame), and its mouth opening (inner-lip gap / eye-corner distance) compared
with the tracked real video: correlation, the same with another clip's audio, and the rate of closed mouths
(< 0.05) in the silent frames beside the real video's. Silent frames as `livehead eval` finds them without an
alignment: below the clip's noise floor + 10 dB, bounded to [-40, -20] dB below the loudest frame, each stretch
trimmed by 2 frames.

Shipped weights (engine/assets/motion): the six GRID training clips (bbaf2n, brbk7n, id2_vcd_swwp2s, lbax4n,
lrwp9a, pwij3p: 450 frames, 5 speakers) with 16 augmented copies each, the flags above, 3 calibration folds
(gain 1.107); lbbc2a and sbia1a held out of everything. On two shared CPU cores: the data 1-6 minutes (tracking
and session Whisper of 102 copies, then cached), each fold's 800 steps about 17 minutes (three at once, one
thread each), the final 800 steps 7 minutes (two threads, 0.5 s per step). Figures:
`python -m livehead.engine.training.motion --weights engine/assets/motion --data GRID_DIR` →
benchmarks/results/motion_generator_heldout.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import platform
import zlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from livehead.engine.common.constants import LAST_TIMESTEP
from livehead.engine.common.errors import InputError
from livehead.engine.media.audio_video import load_audio, load_video
from livehead.engine.model.audio_encoder import WhisperEncoder
from livehead.engine.model.config import ModelConfig
from livehead.engine.model.motion_generator import MotionGenerator, denormalise, normalise
from livehead.engine.motion import mesh
from livehead.engine.motion.shape import shape_code as neutral_shape_code
from livehead.engine.motion.space import MotionSpace
from livehead.engine.motion.tracker import track_frames
from livehead.engine.runtime.audio_tokens import session_audio_tokens
from livehead.engine.training.data import VIDEO_SUFFIXES, publish
from livehead.engine.training.options import TrainOptions
from livehead.engine.training.train import CHECKPOINT, WEIGHTS_DIR, Trainer, config_doc, run_dir, setup_device
from livehead.engine.training.whisper_ct2 import is_ct2_model, read_whisper_encoder
from livehead.engine.weights.files import check_state_dict, read_state_dict
from livehead.engine.weights.loading import ENGINE_DIR

STAGE = "motion"
HELD_OUT = ("lbbc2a", "sbia1a")  # GRID clips never used for training, tuning or selection
GENERATOR_FILE = "motion_generator.safetensors"
MOTION_SPACE_FILE = "motion_space.npz"
WHISPER_FILE = "audio_processor/whisper_tiny.safetensors"  # inside the tiny preset's shipped weights
DATA_FORMAT = "livehead-motion-data/2"
SHAPE_DIM = 14
SELECTION_RULE = ("ship the final step of the fixed recipe (no choice between checkpoints), its expression outputs "
                  "multiplied by the gain fitted on out-of-fold predictions of the training clips; the recipe was "
                  "set on splits of the training clips only; the held-out clips are evaluated once, after this "
                  "was written, and only reported")

# audio augmentation of the extra copies
PITCH_SEMITONES = 3.0  # uniform in ±this
TEMPO_RANGE = (0.9, 1.1)
NOISE_PROB, SNR_DB = 0.5, (15.0, 30.0)
REVERB_PROB, RT60_S, DRR_DB = 0.5, (0.2, 0.6), (0.0, 10.0)  # direct-to-reverberant ratio of the synthetic room
GAIN_DB = (-6.0, 6.0)
STRETCH_FRAME_S, STRETCH_SEARCH_S = 0.04, 0.01  # WSOLA: 40 ms Hann frames, 50 % overlap, ±10 ms alignment

# training
EYELID_WEIGHT = 0.5
POSE_WEIGHT = 0.2
VELOCITY_WEIGHT = 0.5
PREFIX_NOISE = 0.1  # std of the noise on the clean prefix (normalised units)
SHAPE_NOISE = 0.05  # std of the noise on the shape code (eye-corner distances): six faces do not make a space
BLINK_FILTER = 9  # frames of the running median that takes blinks out of the eyelid targets
MIN_LR_SHARE = 0.05
STD_FLOOR = 1e-4
AUGMENT = 16  # augmented copies of every training clip
CALIBRATION_FOLDS = 3
GAIN_BOUNDS = (0.5, 6.0)

# evaluation
SILENCE_DB_RANGE = (-40.0, -20.0)  # speech threshold bounds, dB below the loudest frame (as `livehead eval`)
SILENCE_ABOVE_FLOOR = 10.0
SILENCE_MARGIN = 2
MOUTH_CLOSED = 0.05


# ------------------------------------------------------------------------------------------- data


@dataclass
class MotionClip:
    """One clip of training data. motion [F, D] float32 (relative to the clip's rest frame), tokens
    [F, Ta, Ca] float16 (the session's), shape [S] float32, neutral [478, 2] float32 (the rest frame's landmarks,
    pixels), first [478, 2] float32 (the first frame's), mouth [F] float32 (real mouth opening), level_db [F]
    float32 (audio level below the loudest frame), source: the video's stem (augmented copies share it)."""

    name: str
    motion: np.ndarray
    tokens: torch.Tensor
    shape: np.ndarray
    neutral: np.ndarray
    first: np.ndarray
    mouth: np.ndarray
    level_db: np.ndarray
    source: str

    @property
    def frames(self) -> int:
        return self.motion.shape[0]


def shape_code(space: MotionSpace, neutral_landmarks: np.ndarray, dims: int = SHAPE_DIM) -> np.ndarray:
    """A face's shape code as the runtime computes it (`engine.motion.shape.shape_code`) → float32 [dims]."""
    return neutral_shape_code(space, neutral_landmarks, dims).astype(np.float32)


def frame_levels(pcm: np.ndarray, frames: int, sample_rate: int, fps: float) -> np.ndarray:
    """RMS level of each frame's audio ([k / fps, (k + 1) / fps)) in dB below the loudest frame → float32 [F]."""
    edges = np.round(np.arange(frames + 1) * sample_rate / fps).astype(int)
    pcm = np.asarray(pcm, np.float64)
    rms = np.array([np.sqrt(np.mean(pcm[a:b] ** 2)) if b > a and a < len(pcm) else 0.0
                    for a, b in zip(edges[:-1], np.minimum(edges[1:], len(pcm)))])
    peak = rms.max() if rms.size and rms.max() > 0 else 1.0
    return np.maximum(20 * np.log10(np.maximum(rms / peak, 1e-6)), -120.0).astype(np.float32)


def rest_frame(mouth: np.ndarray, level_db: np.ndarray) -> int:
    """The frame a clip's motion is measured from: the first silent frame (`silent_frames`) with closed lips
    (opening < MOUTH_CLOSED), else the silent frame, else any frame, with the smallest opening."""
    mouth = np.asarray(mouth)
    silent = silent_frames(level_db)[:len(mouth)]
    closed = np.flatnonzero(silent & (mouth < MOUTH_CLOSED))
    if closed.size:
        return int(closed[0])
    if silent.any():
        return int(np.flatnonzero(silent)[np.argmin(mouth[silent])])
    return int(np.argmin(mouth))


def retime(track: np.ndarray, n_out: int, ratio: float) -> np.ndarray:
    """Linear resampling of a per-frame track [F, ...]: output frame j is input frame j * ratio → [n_out, ...]."""
    pos = np.minimum(np.arange(n_out) * ratio, len(track) - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, len(track) - 1)
    frac = (pos - lo).reshape((-1,) + (1,) * (track.ndim - 1))
    return (track[lo] * (1 - frac) + track[hi] * frac).astype(track.dtype)


# ---- audio augmentation (numpy only)


def resample_fft(pcm: np.ndarray, n_out: int) -> np.ndarray:
    """Band-limited resampling of pcm [T] to n_out samples (FFT: truncate or zero-pad the spectrum)."""
    spectrum = np.fft.rfft(np.asarray(pcm, np.float64))
    out = np.zeros(n_out // 2 + 1, complex)
    k = min(len(spectrum), len(out))
    out[:k] = spectrum[:k]
    return (np.fft.irfft(out, n_out) * (n_out / len(pcm))).astype(np.float32)


def time_stretch(pcm: np.ndarray, rate: float, sample_rate: int) -> np.ndarray:
    """pcm [T] played `rate` times as fast at the same pitch → [round(T / rate)] (WSOLA: Hann frames at 50 %
    overlap, each read from where it best continues the previous frame's waveform, within ±10 ms)."""
    pcm = np.asarray(pcm, np.float32)
    out_len = int(round(len(pcm) / rate))
    if abs(rate - 1.0) < 1e-6:
        return pcm.copy()
    n = int(STRETCH_FRAME_S * sample_rate) // 2 * 2
    hop, tol = n // 2, int(STRETCH_SEARCH_S * sample_rate)
    window = np.hanning(n + 1)[:n].astype(np.float32)  # periodic: overlapping halves sum to 1
    count = out_len // hop + 2
    x = np.pad(pcm, (tol, int(count * hop * rate) + n + 2 * tol + hop + 1))
    y = np.zeros(count * hop + n, np.float32)
    prev = tol
    y[:n] += window * x[prev:prev + n]
    for k in range(1, count):
        nominal = tol + int(round(k * hop * rate))
        natural = x[prev + hop:prev + hop + n]
        score = np.correlate(x[nominal - tol:nominal + tol + n], natural, mode="valid")
        prev = nominal - tol + int(np.argmax(score))
        y[k * hop:k * hop + n] += window * x[prev:prev + n]
    return y[:out_len]


def add_noise(pcm: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """pcm [T] + white or pink noise at `snr_db` below its mean power."""
    noise = rng.standard_normal(len(pcm))
    if rng.random() < 0.5:  # pink: 1/f power
        spectrum = np.fft.rfft(noise)
        spectrum /= np.sqrt(np.maximum(np.arange(len(spectrum)), 1.0))
        noise = np.fft.irfft(spectrum, len(pcm))
    power = float(np.mean(np.asarray(pcm, np.float64) ** 2)) + 1e-12
    noise *= math.sqrt(power / 10 ** (snr_db / 10) / (np.mean(noise ** 2) + 1e-12))
    return (pcm + noise).astype(np.float32)


def room_reverb(pcm: np.ndarray, rt60: float, drr_db: float, rng: np.random.Generator,
                sample_rate: int) -> np.ndarray:
    """pcm [T] in a synthetic room: + its convolution with exponentially decaying noise (60 dB down after
    `rt60` s, unit energy) at `drr_db` below the direct sound; same length."""
    t = np.arange(int(rt60 * sample_rate)) / sample_rate
    ir = rng.standard_normal(len(t)) * np.exp(-math.log(1000.0) * t / rt60)
    ir /= np.sqrt(np.sum(ir ** 2))
    size = len(pcm) + len(ir) - 1
    wet = np.fft.irfft(np.fft.rfft(pcm, size) * np.fft.rfft(ir, size), size)[:len(pcm)]
    return (pcm + 10 ** (-drr_db / 20) * wet).astype(np.float32)


def augment_audio(pcm: np.ndarray, rng: np.random.Generator, sample_rate: int) -> tuple[np.ndarray, dict]:
    """A new voice and room for pcm [T] → (pcm' [T'], what was done). The pitch shift resamples (which also
    speeds the audio up by the same ratio); one time stretch then sets the drawn tempo, so T' = T / tempo."""
    semitones = float(rng.uniform(-PITCH_SEMITONES, PITCH_SEMITONES))
    tempo = float(rng.uniform(*TEMPO_RANGE))
    ratio = 2.0 ** (semitones / 12)
    out = resample_fft(pcm, max(1, int(round(len(pcm) / ratio))))  # pitch × ratio, tempo × ratio
    out = time_stretch(out, tempo / ratio, sample_rate)
    done = {"semitones": round(semitones, 3), "tempo": round(tempo, 4)}
    if rng.random() < REVERB_PROB:
        done["rt60"], done["drr_db"] = float(rng.uniform(*RT60_S)), float(rng.uniform(*DRR_DB))
        out = room_reverb(out, done["rt60"], done["drr_db"], rng, sample_rate)
    if rng.random() < NOISE_PROB:
        done["snr_db"] = float(rng.uniform(*SNR_DB))
        out = add_noise(out, done["snr_db"], rng)
    done["gain_db"] = float(rng.uniform(*GAIN_DB))
    out = out * 10 ** (done["gain_db"] / 20)
    peak = float(np.abs(out).max()) if out.size else 0.0
    if peak > 0.99:
        out = out * (0.99 / peak)
    return out.astype(np.float32), done


# ---- dataset


def stack_fingerprint(audio_stack: Callable[[torch.Tensor], torch.Tensor], cfg: ModelConfig) -> str:
    """A digest of what the audio encoder computes (its output on a fixed pseudo-random log-mel)."""
    mel = torch.rand((1, cfg.audio.n_mels, 200), generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        out = audio_stack(mel).float().cpu().numpy()
    return hashlib.sha1(np.round(out, 3).tobytes()).hexdigest()[:16]


def _file_digest(path: Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def _space_digest(space: MotionSpace) -> str:
    h = hashlib.sha1(np.ascontiguousarray(space.canon, np.float64).tobytes())
    h.update(np.ascontiguousarray(space.components[:max(space.k, SHAPE_DIM)], np.float64).tobytes())
    h.update(str(space.k).encode())
    return h.hexdigest()[:16]


def _track(path: Path) -> tuple[np.ndarray, float]:
    frames, fps = load_video(path)
    landmarks, _found = track_frames(frames)
    return np.asarray(landmarks, np.float32)[..., :2], fps


def _clip_copies(path: Path, space: MotionSpace, audio_stack, cfg: ModelConfig, augment: int, seed: int,
                 bar) -> list[dict]:
    """The clean copy and `augment` augmented copies of one video, as dicts of MotionClip fields."""
    rate, fps = cfg.audio.sample_rate, cfg.stream.fps
    landmarks, video_fps = _track(path)
    pcm = load_audio(path, rate)
    mouth = np.asarray(mesh.mouth_opening(landmarks), np.float32)
    rest = rest_frame(mouth, frame_levels(pcm, len(mouth), rate, video_fps))
    motion = space.encode(landmarks.astype(np.float64), neutral=landmarks[rest]).astype(np.float32)
    if abs(video_fps - fps) > 1e-3:  # to the preset's frame rate
        n = int((len(motion) - 1) * fps / video_fps) + 1
        motion, mouth = retime(motion, n, video_fps / fps), retime(mouth, n, video_fps / fps)
    shape = shape_code(space, landmarks[rest])
    out = []
    for copy in range(augment + 1):
        if copy == 0:
            audio, ratio, done = pcm, 1.0, {}
        else:
            rng = np.random.default_rng([seed, zlib.crc32(path.stem.encode()), copy])
            audio, done = augment_audio(pcm, rng, rate)
            ratio = len(pcm) / max(len(audio), 1)
        tokens = session_audio_tokens(audio_stack, cfg, audio)
        n = min(len(tokens), int((len(motion) - 1) / ratio) + 1)
        out.append({
            "name": path.stem if copy == 0 else f"{path.stem}#{copy}",
            "motion": retime(motion, n, ratio), "tokens": tokens[:n].half(), "shape": shape,
            "neutral": landmarks[rest], "first": landmarks[0], "mouth": retime(mouth, n, ratio),
            "level_db": frame_levels(audio, n, rate, fps), "source": path.stem, "augmentation": done,
        })
        bar.update(1)
    return out


def build_motion_dataset(video_paths: Sequence[str | Path], space: MotionSpace,
                         audio_stack: Callable[[torch.Tensor], torch.Tensor], cfg: ModelConfig, augment: int = 0,
                         seed: int = 0, cache: str | Path | None = None, progress: bool = True) -> list[MotionClip]:
    """Every video (with audio, a face in every frame) → its clean MotionClip and `augment` augmented copies.

    audio_stack: Whisper-tiny (`load_audio_stack`); cfg: the motion preset (audio, stream). With `cache`, each
    video's copies are stored in cache/motion-data/STEM-DIGEST.pt and read back on later calls."""
    from tqdm import tqdm

    if augment < 0:
        raise InputError(f"augment must be 0 or more copies, got {augment}")
    paths = [Path(p) for p in video_paths]
    folder = Path(cache) / "motion-data" if cache is not None else None
    key = None
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        key = json.dumps({"format": DATA_FORMAT, "space": _space_digest(space), "augment": augment, "seed": seed,
                          "audio": asdict(cfg.audio), "stream": asdict(cfg.stream),
                          "whisper": stack_fingerprint(audio_stack, cfg)}, sort_keys=True)
    clips = []
    with tqdm(total=len(paths) * (augment + 1), desc="motion data", unit="clip", disable=not progress) as bar:
        for path in paths:
            if not path.is_file():
                raise InputError(f"video {path} not found")
            file = None
            if folder is not None:
                digest = hashlib.sha1((key + _file_digest(path)).encode()).hexdigest()[:16]
                file = folder / f"{path.stem}-{digest}.pt"
            if file is not None and file.is_file():
                copies = [{k: v.numpy() if isinstance(v, torch.Tensor) and k != "tokens" else v for k, v in c.items()}
                          for c in torch.load(file, map_location="cpu", weights_only=True)]
                bar.update(len(copies))
            else:
                copies = _clip_copies(path, space, audio_stack, cfg, augment, seed, bar)
                if file is not None:
                    tmp = file.with_name(f".{file.name}.partial")
                    torch.save([{k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in c.items()}
                                for c in copies], tmp)
                    publish(tmp, file)
            clips += [MotionClip(**{k: v for k, v in c.items() if k != "augmentation"}) for c in copies]
    return clips


def load_audio_stack(cfg: ModelConfig, whisper: str | Path | None = None) -> WhisperEncoder:
    """Whisper-tiny's encoder for `cfg.audio` (eval mode, frozen): from `whisper` (a Whisper-tiny `.pt`,
    `.safetensors` of `encoder.*` tensors or CTranslate2 `model.bin`) or the tiny preset's shipped weights.
    Called as audio_stack(mel [1, n_mels, T]) → [1, T/2, L, C]."""
    path = Path(whisper) if whisper is not None else ENGINE_DIR / ModelConfig.from_name("tiny").bundled_weights / \
        WHISPER_FILE
    if not path.is_file():
        raise InputError(f"Whisper weights file not found: {path}")
    encoder = WhisperEncoder(cfg.audio)
    if is_ct2_model(path):
        state = {f"encoder.{k}": torch.from_numpy(v) for k, v in read_whisper_encoder(path, cfg.audio.n_layer).items()}
    else:
        state = read_state_dict(path)
    raw = {k[len("encoder."):]: v.float() for k, v in state.items() if k.startswith("encoder.")}
    check_state_dict(raw, {k: list(v.shape) for k, v in encoder.state_dict().items()}, path)
    encoder.load_state_dict(raw)
    return encoder.eval().requires_grad_(False)


def find_videos(data_dirs, held_out: Sequence[str] = HELD_OUT) -> list[Path]:
    """The videos in `data_dirs` (folders or files), minus those whose stem is held out."""
    data_dirs = [data_dirs] if isinstance(data_dirs, (str, Path)) else list(data_dirs)
    found = []
    for d in map(Path, data_dirs):
        if d.is_file():
            found.append(d)
        elif d.is_dir():
            found += sorted(p for p in d.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
        else:
            raise InputError(f"--data {d} does not exist")
    videos = [p for p in found if p.stem not in set(held_out)]
    if not videos:
        raise InputError(f"no training videos ({', '.join(VIDEO_SUFFIXES)}) in {', '.join(map(str, data_dirs))} "
                         f"(held out: {', '.join(held_out)})")
    return videos


def default_space_path(cfg: ModelConfig) -> Path:
    return ENGINE_DIR / (cfg.bundled_weights or "assets/motion") / MOTION_SPACE_FILE


# ------------------------------------------------------------------------------------------- training


def deblink(eyelids: np.ndarray, width: int = BLINK_FILTER) -> np.ndarray:
    """Eyelid openness [F, 2] without blinks: a running median over `width` frames (edges repeated)."""
    half = width // 2
    padded = np.pad(eyelids, ((half, half), (0, 0)), mode="edge")
    return np.median(np.stack([padded[i:i + len(eyelids)] for i in range(width)]), axis=0).astype(eyelids.dtype)


def mouth_correlations(clips: Sequence[MotionClip], k: int) -> np.ndarray:
    """|correlation| of each expression channel with the real mouth opening over the clean clips → [k]."""
    clean = [c for c in clips if c.name == c.source] or list(clips)
    motion = np.concatenate([c.motion[:, :k] for c in clean]).astype(np.float64)
    mouth = np.concatenate([c.mouth for c in clean]).astype(np.float64)
    out = np.zeros(k)
    for i in range(k):
        if motion[:, i].std() > 0 and mouth.std() > 0:
            out[i] = abs(np.corrcoef(motion[:, i], mouth)[0, 1])
    return out


def channel_weights(corr: np.ndarray, dim: int, mouth_weight: float) -> np.ndarray:
    """Loss weight per motion channel [dim]: expression 1 + mouth_weight·|r|, eyelids and pose low."""
    k = len(corr)
    w = np.empty(dim, np.float32)
    w[:k] = 1.0 + mouth_weight * corr
    w[k:k + 2] = EYELID_WEIGHT
    w[k + 2:] = POSE_WEIGHT
    return w


def motion_statistics(clips: Sequence[MotionClip]) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std [D] over every frame of the clips."""
    motion = np.concatenate([c.motion for c in clips]).astype(np.float64)
    return motion.mean(0).astype(np.float32), np.maximum(motion.std(0), STD_FLOOR).astype(np.float32)


class MotionWindows:
    """Training windows of `known` + `new` frames drawn from clips (see the module doc)."""

    def __init__(self, clips: Sequence[MotionClip], neutral: np.ndarray, known: int, new: int, k: int,
                 first_clip_prob: float):
        self.clips, self.known, self.new, self.first_clip_prob = list(clips), known, new, first_clip_prob
        self.neutral = torch.as_tensor(neutral, dtype=torch.float32)
        self.motion = [torch.as_tensor(c.motion, dtype=torch.float32) for c in self.clips]
        self.target = []
        for c in self.clips:
            t = c.motion.copy()
            t[:, k:k + 2] = deblink(t[:, k:k + 2])
            self.target.append(torch.as_tensor(t, dtype=torch.float32))
        self.shapes = torch.as_tensor(np.stack([c.shape for c in self.clips]), dtype=torch.float32)
        # every (clip, first frame) whose new frames lie inside the clip; frames before 0 are the neutral motion
        self.index = [(i, s) for i, c in enumerate(self.clips) for s in range(-known, c.frames - known - new + 1)]
        if not self.index:
            raise InputError(f"no clip has the {new + known} frames a training window needs")

    def sample(self, batch: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
        """→ prefix [B, n, D] and target [B, F, D] motion, tokens [B, n+F, Ta, Ca] float32, shape [B, S],
        real_prefix [B] bool (False: the neutral prefix of a session's first clip)."""
        n, f = self.known, self.new
        picks = torch.randint(len(self.index), (batch,), generator=gen).tolist()
        first = torch.rand(batch, generator=gen) < self.first_clip_prob
        prefix, target, tokens, shapes = [], [], [], []
        for b, p in enumerate(picks):
            i, s = self.index[p]
            frames = torch.arange(s, s + n + f)
            clamped = frames.clamp_min(0)
            m = self.motion[i][clamped]
            m[frames < 0] = self.neutral
            tok = self.clips[i].tokens[clamped].float()
            if first[b]:  # the session's first clip: neutral prefix, with the first new frame's tokens
                m[:n] = self.neutral
                tok[:n] = tok[n]
            prefix.append(m[:n])
            target.append(self.target[i][s + n:s + n + f])
            tokens.append(tok)
            shapes.append(self.shapes[i])
        return {"prefix": torch.stack(prefix), "target": torch.stack(target), "tokens": torch.stack(tokens),
                "shape": torch.stack(shapes), "real_prefix": ~first}


def motion_loss(model: MotionGenerator, batch: dict[str, torch.Tensor], weights: torch.Tensor,
                gen: torch.Generator, device: torch.device) -> tuple[torch.Tensor, dict]:
    """The loss of the module doc on one batch → (loss, stats); weights [D] the per-channel MSE weights."""
    prefix, target = batch["prefix"].to(device), batch["target"].to(device)
    tokens, shape, real = batch["tokens"].to(device), batch["shape"].to(device), batch["real_prefix"].to(device)
    b, n, d = prefix.shape
    f = target.shape[1]
    z_prefix = normalise(model, prefix)
    z_target = normalise(model, target)
    noisy_prefix = z_prefix + PREFIX_NOISE * torch.randn(z_prefix.shape, generator=gen).to(device)
    window = torch.cat([noisy_prefix, torch.randn((b, f, d), generator=gen).to(device)], dim=1)
    shape = shape + SHAPE_NOISE * torch.randn(shape.shape, generator=gen).to(device)
    t = torch.full((b,), LAST_TIMESTEP, dtype=torch.long, device=device)
    v = model(window.transpose(1, 2)[..., None, None], t, tokens, shape[..., None, None], known_frames=n)
    x0 = -v[..., 0, 0].transpose(1, 2)[:, n:]  # at t = T-1 (ᾱ = 0) the sampler's x0 is -v

    def weighted(err: torch.Tensor) -> torch.Tensor:
        return (err.square() * weights).mean() / weights.mean()

    mse = weighted(x0 - z_target)
    # frame-to-frame steps; the one from the prefix's last (clean) frame only where the prefix is real
    last = z_prefix[:, -1:]
    step_pred = torch.diff(torch.cat([last, x0], 1), dim=1)
    step_true = torch.diff(torch.cat([last, z_target], 1), dim=1)
    keep = torch.ones(b, f, 1, device=device)
    keep[:, 0] = real[:, None].float()
    velocity = weighted((step_pred - step_true) * keep)
    loss = mse + VELOCITY_WEIGHT * velocity
    return loss, {"mse": round(float(mse.detach()), 5), "velocity": round(float(velocity.detach()), 5)}


class _CosineTrainer(Trainer):
    """The stages' Trainer with the learning rate decaying on a cosine after the warm-up."""

    def lr_at(self, step: int) -> float:
        o = self.opts
        warm = min(1.0, (step + 1) / max(1, o.warmup))
        progress = min(1.0, max(0, step - o.warmup) / max(1, o.steps - o.warmup))
        return o.lr * warm * (MIN_LR_SHARE + (1 - MIN_LR_SHARE) * 0.5 * (1 + math.cos(math.pi * progress)))


def save_generator(state: dict[str, torch.Tensor], out_dir: Path, info: dict,
                   dtype: torch.dtype = torch.float16) -> Path:
    """OUT/weights: motion_generator.safetensors (the state dict in `dtype`) and livehead.json, atomically."""
    from safetensors.torch import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    tensors = {k: (v.to(dtype) if v.is_floating_point() else v).contiguous().cpu() for k, v in state.items()}
    path = out_dir / GENERATOR_FILE
    tmp = path.with_name(f".{path.name}.partial")
    save_file(tensors, str(tmp), metadata={"format": "pt", "livehead_group": "motion_generator",
                                           "livehead_preset": info.get("preset", "motion")})
    publish(tmp, path)
    meta = out_dir / "livehead.json"
    tmp = meta.with_name(".livehead.json.partial")
    tmp.write_text(json.dumps(info, indent=1) + "\n")
    publish(tmp, meta)
    return path


def load_generator(cfg: ModelConfig, weights_dir: str | Path) -> MotionGenerator:
    """A MotionGenerator from OUT/weights (strict; fp16 files cast to float32), eval mode."""
    from safetensors.torch import load_file

    path = Path(weights_dir) / GENERATOR_FILE
    if not path.is_file():
        raise InputError(f"{path} not found: pass a motion weights folder (OUT/weights of `livehead train motion`)")
    model = MotionGenerator(cfg.motion, cfg.sampler)
    model.load_state_dict({k: v.float() for k, v in load_file(str(path)).items()}, strict=True)
    return model.eval()


def fit_generator(cfg: ModelConfig, clips: Sequence[MotionClip], space: MotionSpace, out: str | Path,
                  opts: TrainOptions, init: str | Path | None = None, device: torch.device | str = "cpu",
                  resume: bool = False, info: dict | None = None, gain: float = 1.0) -> Path:
    """Train `cfg.motion`'s generator on prepared clips; writes OUT/weights (expression outputs × `gain`) and
    returns it."""
    opts.check()
    if cfg.motion is None:
        raise InputError(f"preset {cfg.name} has no motion generator: train the motion stage with --preset motion")
    if cfg.motion.motion_dim != space.dim:
        raise InputError(f"motion space has {space.dim} channels, the generator {cfg.motion.motion_dim}")
    out = run_dir(out)
    device, _ = setup_device(device, opts)
    k, s = space.k, cfg.stream
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(opts.seed)
        model = MotionGenerator(cfg.motion, cfg.sampler)
    if init is not None:
        model.load_state_dict(load_generator(cfg, init).state_dict())
    else:
        mean, std = motion_statistics(clips)
        model.motion_mean.copy_(torch.as_tensor(mean))
        model.motion_std.copy_(torch.as_tensor(std))
    model.to(device)
    corr = mouth_correlations(clips, k)
    weights = torch.as_tensor(channel_weights(corr, space.dim, opts.mouth_weight), device=device)
    neutral = space.neutral_motion(1)[0]
    windows = MotionWindows(clips, neutral, s.motion_frames, s.clip_frames, k, opts.first_clip_prob)
    meta = {"stage": STAGE, "config": config_doc(cfg), "options": asdict(opts), "init": str(init)}
    params = dict(model.named_parameters())
    trainer = _CosineTrainer(model, params, opts, out, meta)
    trainer.start(resume)
    model.train()

    def loss_fn(gen):
        return motion_loss(model, windows.sample(opts.batch, gen), weights, gen, device)

    recipe = {"loss": {"mouth_corr": [round(float(c), 4) for c in corr], "eyelid_weight": EYELID_WEIGHT,
                       "pose_weight": POSE_WEIGHT, "velocity_weight": VELOCITY_WEIGHT,
                       "prefix_noise": PREFIX_NOISE, "shape_noise": SHAPE_NOISE, "blink_filter": BLINK_FILTER},
              "options": {f: getattr(opts, f) for f in ("steps", "batch", "lr", "weight_decay", "warmup", "grad_clip",
                                                        "ema", "seed", "first_clip_prob", "mouth_weight")},
              "windows": len(windows.index), "clips": len(clips)}

    def export() -> Path:
        doc = {"preset": cfg.name, "stage": STAGE, "step": trainer.step, "dtype": "float16",
               **(info or {}), "expression_gain": round(gain, 4), "selection_rule": SELECTION_RULE, "recipe": recipe}
        state = trainer.export_state()
        if gain != 1.0:
            state = {**state, **scaled_expression(state, k, gain)}
        save_generator(state, out / WEIGHTS_DIR, doc)
        return out / WEIGHTS_DIR

    trainer.run(loss_fn, STAGE, on_save=export)
    return export()


def scaled_expression(state: dict[str, torch.Tensor], k: int, gain: float) -> dict[str, torch.Tensor]:
    """The `motion_out` entries of a generator state dict with the first k output channels (the expression
    coefficients, normalised) multiplied by `gain`: the generator's expression moves `gain` times as far from
    the training mean."""
    out = {}
    for name in ("motion_out.weight", "motion_out.bias"):
        t = state[name].clone()
        t[:k] *= gain
        out[name] = t
    return out


def fit_gain(pairs: Sequence[tuple[MotionGenerator, MotionClip]], cfg: ModelConfig, space: MotionSpace,
             bounds: tuple[float, float] = GAIN_BOUNDS, iterations: int = 14) -> tuple[float, dict]:
    """The expression gain g (within bounds) at which (model, clip) pairs' streamed predictions, with g folded in,
    give a mouth opening whose mean per-clip standard deviation equals the real clips' (bisection on log g; the
    spread grows with g). → (g, figures before and after)."""
    import copy

    neutral = space.neutral_motion(1)[0]
    k = space.k
    real = float(np.mean([c.mouth.std() for _, c in pairs]))

    def predictions(g: float) -> list[np.ndarray]:
        out = []
        for model, clip in pairs:
            scaled = copy.deepcopy(model)
            scaled.load_state_dict({**scaled.state_dict(), **scaled_expression(scaled.state_dict(), k, g)})
            out.append(predicted_mouth(space, stream_motion(scaled, cfg, clip.tokens, clip.shape, neutral),
                                       clip.neutral))
        return out

    def spread(g: float) -> float:
        return float(np.mean([p.std() for p in predictions(g)]))

    lo, hi = math.log(bounds[0]), math.log(bounds[1])
    for _ in range(iterations):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if spread(math.exp(mid)) < real else (lo, mid)
    gain = math.exp((lo + hi) / 2)

    def figures(g: float) -> dict:
        pred = predictions(g)
        return {"mouth_std_pred": _r3(np.mean([p.std() for p in pred])), "mouth_corr": _r3(np.mean(
            [_corr(p, c.mouth) for p, (_, c) in zip(pred, pairs)])), "silent_closed_pred": _r3(np.mean(np.concatenate(
                [p[silent_frames(c.level_db)[:len(p)]] < MOUTH_CLOSED for p, (_, c) in zip(pred, pairs)])))}

    return gain, {"mouth_std_real": _r3(real), "before": figures(1.0), "after": figures(gain)}


def cross_validated_gain(cfg: ModelConfig, clips: Sequence[MotionClip], space: MotionSpace, folder: Path,
                         opts: TrainOptions, folds: int, device: torch.device | str = "cpu",
                         resume: bool = False) -> tuple[float, dict]:
    """The export's expression gain (module doc): the clips' sources in order, cut into `folds` contiguous
    groups; a generator trained (same options) on all but each group, in folder/foldI (reused when finished);
    `fit_gain` on every group's clean clips with its own fold's generator."""
    sources = list(dict.fromkeys(c.source for c in clips))
    if folds > len(sources):
        raise InputError(f"{folds} calibration folds need as many training videos; got {len(sources)}")
    groups = [list(g) for g in np.array_split(np.array(sources, dtype=object), folds)]
    pairs = []
    for i, group in enumerate(groups):
        run = folder / f"fold{i}"
        done = run / WEIGHTS_DIR / "livehead.json"
        if not (done.is_file() and json.loads(done.read_text()).get("step") == opts.steps):
            fit_generator(cfg, [c for c in clips if c.source not in group], space, run, opts, device=device,
                          resume=resume and (run / CHECKPOINT).is_file(),
                          info={"data": [s for s in sources if s not in group], "fold": group})
        model = load_generator(cfg, run / WEIGHTS_DIR)
        pairs += [(model, c) for c in clips if c.source in group and c.name == c.source]
    gain, figures = fit_gain(pairs, cfg, space)
    return gain, {"folds": groups, "gain": round(gain, 4), "out_of_fold": figures}


TRAIN_CLIP_FRAMES = 5  # new frames per training window (after the preset's motion frames)


def training_schedule(cfg: ModelConfig) -> ModelConfig:
    """The window schedule the generator learns on: `motion_frames` known + TRAIN_CLIP_FRAMES new frames, with
    the audio's whole look-ahead. Live sessions step it in smaller chunks with a shorter look-ahead
    (`StreamConfig`): the window positions are shared, so any chunk up to 5 frames reuses what was learned."""
    return dataclasses.replace(cfg, stream=dataclasses.replace(cfg.stream, clip_frames=TRAIN_CLIP_FRAMES,
                                                               lookahead_s=None))


def train_motion(cfg: ModelConfig, data_dirs, out: str | Path, opts: TrainOptions, init: str | Path | None = None,
                 whisper: str | Path | None = None, cache: str | Path | None = None,
                 device: torch.device | str = "cpu", resume: bool = False, augment: int = AUGMENT,
                 calibration_folds: int = CALIBRATION_FOLDS, space: str | Path | None = None,
                 held_out: Sequence[str] = HELD_OUT) -> Path:
    """`livehead train motion`: the videos of `data_dirs` (minus `held_out`) → OUT/weights (see the module doc):
    `calibration_folds` fold models under OUT/folds for the expression gain (0: no calibration), then the final
    model on every clip. space: the motion space file (default: the preset's shipped one); cache: default
    OUT/../cache."""
    opts.check()
    if cfg.motion is None:
        raise InputError(f"preset {cfg.name} has no motion generator: train the motion stage with --preset motion")
    cfg = training_schedule(cfg)
    out = run_dir(out)
    cache = Path(cache) if cache is not None else out.parent / "cache"
    space_path = Path(space) if space is not None else default_space_path(cfg)
    if not space_path.is_file():
        raise InputError(f"motion space {space_path} not found")
    motion_space = MotionSpace.load(str(space_path))
    videos = find_videos(data_dirs, held_out)
    stack = load_audio_stack(cfg, whisper)
    clips = build_motion_dataset(videos, motion_space, stack, cfg, augment, opts.seed, cache, opts.progress)
    info = {"data": [p.stem for p in videos], "held_out": list(held_out), "augment": augment,
            "frames": int(sum(c.frames for c in clips if c.name == c.source))}
    gain = 1.0
    if calibration_folds > 1:
        gain, info["calibration"] = cross_validated_gain(cfg, clips, motion_space, out / "folds", opts,
                                                         calibration_folds, device, resume)
    return fit_generator(cfg, clips, motion_space, out, opts, init, device, resume, info, gain)


# ------------------------------------------------------------------------------------------- evaluation


@torch.no_grad()
def stream_motion(model: MotionGenerator, cfg: ModelConfig, tokens: torch.Tensor, shape: np.ndarray,
                  neutral: np.ndarray, seed: int = 0) -> np.ndarray:
    """A clip's motion as a session generates it: windows of n known + F new frames, the prefix the previous
    windows' outputs (the neutral motion before frame 0), frames before 0 with frame 0's tokens, new frames
    from standard normal noise at t = 999. tokens [N, Ta, Ca], shape [S], neutral [D] → motion [N, D]."""
    n, f = cfg.stream.motion_frames, cfg.stream.clip_frames
    total = tokens.shape[0]
    gen = torch.Generator().manual_seed(seed)
    z = normalise(model, torch.as_tensor(neutral, dtype=torch.float32))[None].repeat(n, 1)  # [n, D] history
    shape_t = torch.as_tensor(shape, dtype=torch.float32).reshape(1, -1, 1, 1)
    t = torch.full((1,), LAST_TIMESTEP, dtype=torch.long)
    for first in range(0, total, f):
        frames = torch.arange(first - n, first + f).clamp(0, total - 1)
        window = torch.cat([z[-n:], torch.randn((f, z.shape[1]), generator=gen)])
        v = model(window.T[None, ..., None, None], t, tokens[frames][None].float(), shape_t, known_frames=n)
        z = torch.cat([z, -v[0, :, n:, 0, 0].T])
    return denormalise(model, z[n:n + total]).numpy()


def silent_frames(level_db: np.ndarray) -> np.ndarray:
    """bool [F]: the clip's silent stretches. Frames more than SILENCE_ABOVE_FLOOR dB above the noise floor (the
    10th-percentile frame level), with the threshold bounded to SILENCE_DB_RANGE below the loudest frame, are
    speech (GRID's floor sits near -35 dB, so a fixed -40 dB finds almost no silence); each silent stretch is
    trimmed by SILENCE_MARGIN frames at both ends (lips may part before a word and close after it)."""
    level_db = np.asarray(level_db, np.float64)
    floor = float(np.percentile(level_db, 10)) if level_db.size else SILENCE_DB_RANGE[0]
    mask = level_db < float(np.clip(floor + SILENCE_ABOVE_FLOOR, *SILENCE_DB_RANGE))
    padded = np.pad(mask, SILENCE_MARGIN, constant_values=False)
    out = np.ones_like(mask)
    for k in range(2 * SILENCE_MARGIN + 1):
        out &= padded[k:k + len(mask)]
    return out


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    n = min(len(a), len(b))
    a, b = a[:n], b[:n]
    return float(np.corrcoef(a, b)[0, 1]) if n > 2 and a.std() > 0 and b.std() > 0 else float("nan")


def predicted_mouth(space: MotionSpace, motion: np.ndarray, neutral_landmarks: np.ndarray) -> np.ndarray:
    """Mouth opening of motion [N, D] decoded onto a face's neutral landmarks → [N]."""
    return np.asarray(mesh.mouth_opening(space.decode(motion.astype(np.float64), neutral_landmarks)))


def _r3(x) -> float:
    return round(float(x), 3)


def clip_figures(model: MotionGenerator, cfg: ModelConfig, space: MotionSpace, clip: MotionClip,
                 other: MotionClip) -> dict:
    """The evaluation figures of one clip, with `other`'s audio as the mismatched drive."""
    neutral = space.neutral_motion(1)[0]
    motion = stream_motion(model, cfg, clip.tokens, clip.shape, neutral)
    pred = predicted_mouth(space, motion, clip.neutral)
    on_first = predicted_mouth(space, motion, clip.first)
    crossed = predicted_mouth(space, stream_motion(model, cfg, other.tokens, clip.shape, neutral), clip.neutral)
    real = clip.mouth
    silent = silent_frames(clip.level_db)[:len(pred)]
    return {
        "frames": len(pred), "mouth_corr": _r3(_corr(pred, real)), "mismatched_audio": other.source,
        "mouth_corr_mismatched": _r3(_corr(crossed, real)),
        "margin": _r3(_corr(pred, real) - _corr(crossed, real)),
        "opening_range_pred": _r3(np.percentile(pred, 95) - np.percentile(pred, 5)),
        "opening_range_real": _r3(np.percentile(real, 95) - np.percentile(real, 5)),
        "silent_frames": int(silent.sum()),
        "silent_closed_pred": _r3((pred[silent] < MOUTH_CLOSED).mean()) if silent.any() else None,
        "silent_closed_real": _r3((real[:len(pred)][silent] < MOUTH_CLOSED).mean()) if silent.any() else None,
        "first_frame": {"opening": _r3(mesh.mouth_opening(clip.first)), "mouth_corr": _r3(_corr(on_first, real)),
                        "silent_closed_pred": _r3((on_first[silent] < MOUTH_CLOSED).mean()) if silent.any() else None},
    }


def evaluate_generator(model: MotionGenerator, cfg: ModelConfig, space: MotionSpace,
                       clips: Sequence[MotionClip]) -> dict:
    """Per-clip figures (mismatched audio: the next clip's) and their means; `silent_closed_*` pooled."""
    clean = [c for c in clips if c.name == c.source]
    rows = {c.source: clip_figures(model, cfg, space, c, clean[(i + 1) % len(clean)]) for i, c in enumerate(clean)}
    mean = {key: round(float(np.nanmean([r[key] for r in rows.values()])), 3)
            for key in ("mouth_corr", "mouth_corr_mismatched", "margin", "opening_range_pred", "opening_range_real")}
    silent = sum(r["silent_frames"] for r in rows.values())
    for key in ("silent_closed_pred", "silent_closed_real"):
        pooled = sum((r[key] or 0.0) * r["silent_frames"] for r in rows.values())
        mean[key] = round(pooled / silent, 3) if silent else None
    mean["silent_frames"] = silent
    first = [r["first_frame"] for r in rows.values()]
    mean["first_frame_mouth_corr"] = _r3(np.nanmean([f["mouth_corr"] for f in first]))
    if silent:
        mean["first_frame_silent_closed_pred"] = _r3(sum((f["silent_closed_pred"] or 0.0) * r["silent_frames"]
                                                         for f, r in zip(first, rows.values())) / silent)
    return {"clips": rows, "mean": mean}


def _machine() -> dict:
    import os

    from livehead.kernels.bench_io import cpu_name

    return {"cpu": cpu_name(), "logical_cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__}


def main(argv: Sequence[str] | None = None) -> int:
    """Held-out and training-clip figures of a trained generator; prints them and writes a JSON."""
    p = argparse.ArgumentParser(prog="python -m livehead.engine.training.motion",
                                description="evaluate a motion generator on held-out and training clips")
    p.add_argument("--weights", required=True, help="weights folder (motion_generator.safetensors, livehead.json)")
    p.add_argument("--data", action="append", required=True, metavar="DIR", help="folder of the clips (repeatable)")
    p.add_argument("--held-out", default=",".join(HELD_OUT), help="comma-separated held-out clip stems")
    p.add_argument("--space", default=None, help="motion space file (default: the preset's shipped one)")
    p.add_argument("--whisper", default=None)
    p.add_argument("--cache", default=None)
    p.add_argument("--out", default="benchmarks/results/motion_generator_heldout.json")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = ModelConfig.from_name("motion")
    space = MotionSpace.load(str(args.space or default_space_path(cfg)))
    stack = load_audio_stack(cfg, args.whisper)
    model = load_generator(cfg, args.weights)
    held = [s for s in args.held_out.split(",") if s]
    everything = find_videos(args.data, held_out=())
    info = json.loads((Path(args.weights) / "livehead.json").read_text())
    trained = set(info.get("data", []))
    if trained & set(held):
        raise InputError(f"the weights were trained on held-out clips {sorted(trained & set(held))}")
    groups = {"held_out": [v for v in everything if v.stem in held],
              "training": [v for v in everything if v.stem in trained]}
    result = {"weights": str(args.weights), "step": info.get("step"), "selection_rule": info.get("selection_rule"),
              "machine": _machine(), "definitions": {
                  "mouth_corr": "Pearson r of the predicted mouth opening (generated as a session does, decoded "
                                "onto the clip's rest frame: its first silent frame with closed lips) with the "
                                "tracked real video's; first_frame: decoded onto the clip's first frame instead",
                  "mouth_corr_mismatched": "the same with the next clip's audio (and this clip's face)",
                  "silent": f"frames below min(max(noise floor + {SILENCE_ABOVE_FLOOR} dB, "
                            f"{SILENCE_DB_RANGE[0]} dB), {SILENCE_DB_RANGE[1]} dB) of the loudest frame (noise floor: "
                            f"the 10th-percentile frame level), stretches trimmed by {SILENCE_MARGIN} frames; closed: "
                            f"opening < {MOUTH_CLOSED} eye-corner distances"}}
    for label, videos in groups.items():
        clips = build_motion_dataset(videos, space, stack, cfg, 0, 0, args.cache, progress=False)
        result[label] = evaluate_generator(model, cfg, space, clips)
        print(f"{label}: " + json.dumps(result[label]["mean"]))
        for name, row in result[label]["clips"].items():
            print(f"  {name}: " + json.dumps(row))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

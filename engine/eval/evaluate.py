"""Does the avatar talk? Lip-sync, silence, identity and stability metrics of generated video.

    livehead eval --preset tiny [--weights DIR] --data DIR [--out result.json]

For every clip in DIR the model animates the clip's first frame (cropped as `prepare_portrait` does)
with the clip's audio, and the generated video is compared with the clip:

| metric | what | pass (issue #6, GRID held-out speakers) |
|---|---|---|
| `mouth_corr_gt` | Pearson correlation of the generated mouth opening with the ground-truth one (GRID and other videos: the real speaker's, measured the same way; synthetic clips: the generator's `mouth_open`) | mean over clips >= 0.5 |
| `mouth_corr_audio` | ... with the audio envelope (RMS per frame, dB) | reported |
| `mouth_lag_frames` | lag (frames, + = generated is late) that maximises the correlation with the ground truth, within ±6 | reported |
| `silent_closed` | fraction of silent frames whose mouth opening is below `MOUTH_CLOSED` (0.05) | pooled >= 0.90 |
| `identity_same` | fraction of frames the face-recognition model calls the reference's person (distance < 0.6) | pooled >= 0.95 |
| `audio_effect_mouth`, `audio_effect_elsewhere` | mean absolute difference of frames with the audio and frames with silence (0-255) inside the mouth box and outside it (model runs only) | reported |
| `mouth_change_corr_gt` | correlation of the per-frame mouth-box change (audio vs silence) with the ground-truth opening: lip sync seen in pixels, before the lips move enough for landmarks | reported |
| `landmark_jitter` | mean frame-to-frame acceleration of the 478 landmarks, in eye-corner distances | reported, beside the ground truth's |

Definitions (`engine.landmarks`): mouth opening = mean gap of the three central inner-lip landmark
pairs / distance of the outer eye corners, measured by MediaPipe Face Mesh on each frame on its own.
On the GRID speakers, closed lips measure 0.000-0.003 and speech peaks at 0.13-0.24; `MOUTH_CLOSED`
= 0.05 (about 4-5 mm of lip gap on an adult face) separates resting, touching lips from speech.
A frame without a detected face counts as open and as not the same person.

Silent frames: from the alignment when the clip has one (GRID `.align` words sil/sp; synthetic
clips' phone pauses), else from the audio: frames more than 10 dB above the clip's noise floor (its
10th-percentile frame level), bounded to [-40, -20] dB below the loudest frame, are speech. Silence is
then shrunk by `SILENCE_MARGIN` frames on both sides, so the lips may part just before a word starts
and close just after it ends.

Identity: dlib's ResNet face descriptor (`face_recognition_models`, the model behind the
`face_recognition` package; 99.38 % on LFW) on each frame's face (found by MediaPipe, aligned by
dlib's 5-point shape predictor), compared with the reference's: dlib's documented same-person
threshold is a Euclidean distance of 0.6.

Reference figures (`--ground-truth`: each clip's own video scored as if generated), on the eight GRID
sample clips: mouth correlation 1.0 (0.22 when delayed by 8 frames), with the audio envelope 0.44,
silent frames closed 0.62 (real speakers part their lips before speaking and some rest with them
apart: the criterion asks more of the avatar than of them), same person 1.0 (median distance 0.19),
landmark jitter 0.0062. On synthetic_talker clips: mouth correlation with the generator's
parameters 0.94 at lag 0, silent frames closed 1.0.

Clips in DIR: any video with audio (`.mpg`, `.mp4`, `.avi`, `.mov`, `.mkv`, `.webm`); `STEM.align`
beside it gives GRID word timings; `STEM.json` written by `engine.synthetic_talker` makes it a
synthetic clip (ground truth from the generator's parameters; its frames are already the portrait
crop and are used as they are, as training uses them).
"""

from __future__ import annotations

import importlib.util
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from livehead.engine.common.constants import FPS, SAMPLE_RATE
from livehead.engine.common.errors import InputError
from livehead.engine.media import landmarks as L
from livehead.engine.media.audio_video import load_audio
from livehead.engine.media.face import detect_face, mouth_box, prepare_portrait
from livehead.engine.runtime.session import Session, decoder_reference, prepare_avatar, to_pixels, to_uint8
from livehead.engine.synth.speech_alignment import read_grid_align, silent_frames
from livehead.engine.synth.talker import read_params

MOUTH_CLOSED = 0.05  # mouth opening (eye-corner distances) below which the mouth counts as closed
SAME_PERSON_DISTANCE = 0.6  # dlib face descriptor distance below which two faces are the same person
SILENCE_MARGIN = 2  # frames trimmed from both ends of every silent stretch
MAX_LAG = 6  # frames searched for the best lip-sync lag
MIN_FRAMES_FOR_CORR = 10
CRITERIA = {"mouth_corr_gt": 0.5, "silent_closed": 0.90, "identity_same": 0.95}
VIDEO_SUFFIXES = (".mpg", ".mpeg", ".mp4", ".avi", ".mov", ".mkv", ".webm")


# ------------------------------------------------------------------------------------------- input


@dataclass
class ClipSource:
    name: str
    video: Path
    align: Path | None = None  # GRID word alignment
    params: Path | None = None  # synthetic_talker ground truth

    @property
    def kind(self) -> str:
        return "synthetic" if self.params else ("grid" if self.align else "video")


def find_clips(data_dir: str | Path) -> list[ClipSource]:
    """Clips of a data folder, sorted by name. InputError for a missing folder or one without clips."""
    data_dir = Path(data_dir)
    if not data_dir.exists():
        raise InputError(f"data directory not found: {data_dir}")
    if not data_dir.is_dir():
        raise InputError(f"--data must be a directory of clips, got a file: {data_dir}")
    clips = []
    for video in sorted(p for p in data_dir.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file()):
        align = video.with_suffix(".align")
        params = video.with_suffix(".json")
        clips.append(ClipSource(video.stem, video, align if align.is_file() else None,
                                params if params.is_file() else None))
    if not clips:
        raise InputError(f"no clips in {data_dir}: expected videos with audio ({', '.join(VIDEO_SUFFIXES)}), "
                         f"e.g. GRID .mpg files or `python -m livehead.engine.synth.make_clips` output")
    return clips


def read_video(path: str | Path) -> tuple[list[np.ndarray], float]:
    """All frames of a video's first video stream as RGB uint8 [H, W, 3], and its frame rate."""
    import av

    path = Path(path)
    if not path.is_file():
        raise InputError(f"video file not found: {path}")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise InputError(f"no video stream in {path}")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    except av.error.FFmpegError as err:
        raise InputError(f"cannot decode video {path}: {err}") from None
    if not frames:
        raise InputError(f"video {path} has no frames")
    return frames, float(rate) if rate else float(FPS)


def resample_frames(frames: list[np.ndarray], fps: float, n_frames: int, out_fps: float = FPS) -> list[np.ndarray]:
    """The frame shown at each output frame's centre time (nearest earlier source frame)."""
    idx = np.floor((np.arange(n_frames) + 0.5) / out_fps * fps).astype(int)
    return [frames[min(i, len(frames) - 1)] for i in idx]


def crop_frames(frames: list[np.ndarray], crop_box: tuple[int, int, int, int], size: int) -> list[np.ndarray]:
    """The same square region of every frame, resized to size x size (as the reference was cropped)."""
    from PIL import Image

    x0, y0, x1, y1 = crop_box
    return [np.asarray(Image.fromarray(f[y0:y1, x0:x1]).resize((size, size), Image.Resampling.BILINEAR))
            for f in frames]


# ------------------------------------------------------------------------------------------- audio


def audio_envelope(pcm: np.ndarray, sample_rate: int, n_frames: int, fps: float = FPS) -> np.ndarray:
    """RMS level of the audio each frame shows ([k / fps, (k + 1) / fps)), in dB below the loudest frame,
    floored at -60 dB → float64 [F]."""
    pcm = np.asarray(pcm, np.float64)
    edges = np.round(np.arange(n_frames + 1) * sample_rate / fps).astype(int)
    rms = np.array([np.sqrt(np.mean(pcm[a:b] ** 2)) if b > a and a < len(pcm) else 0.0
                    for a, b in zip(edges[:-1], np.minimum(edges[1:], len(pcm)))])
    peak = rms.max() if rms.size and rms.max() > 0 else 1.0
    return np.maximum(20 * np.log10(np.maximum(rms / peak, 1e-6)), -60.0)


def energy_silence(env_db: np.ndarray) -> np.ndarray:
    """bool [F]: frames quieter than the speech threshold (see the module docstring)."""
    floor = float(np.percentile(env_db, 10)) if env_db.size else -60.0
    threshold = float(np.clip(floor + 10.0, -40.0, -20.0))
    return env_db < threshold


def shrink(mask: np.ndarray, margin: int) -> np.ndarray:
    """Trim `margin` frames from both ends of every True stretch (binary erosion)."""
    mask = np.asarray(mask, bool)
    if margin <= 0 or not mask.size:
        return mask.copy()
    padded = np.pad(mask, margin, constant_values=False)
    out = np.ones_like(mask)
    for k in range(2 * margin + 1):
        out &= padded[k:k + mask.size]
    return out


# ----------------------------------------------------------------------------------------- identity


class FaceEmbedder:
    """dlib's ResNet face descriptor (128-d) with its 5-point aligner; faces found by MediaPipe."""

    def __init__(self):
        try:
            import dlib
        except ImportError:
            raise InputError("the identity metric needs dlib: pip install 'livehead[eval]' "
                             "(dlib-bin, face_recognition_models)") from None
        spec = importlib.util.find_spec("face_recognition_models")
        if spec is None or not spec.submodule_search_locations:
            raise InputError("the identity metric needs face_recognition_models: pip install 'livehead[eval]'")
        models = Path(next(iter(spec.submodule_search_locations))) / "models"
        self._dlib = dlib
        self._shape = dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat"))
        self._net = dlib.face_recognition_model_v1(str(models / "dlib_face_recognition_resnet_model_v1.dat"))

    def embed(self, image: np.ndarray) -> np.ndarray | None:
        """128-d descriptor of the largest face in an RGB uint8 image, or None when there is none."""
        image = np.ascontiguousarray(image)
        found = detect_face(image)
        if found is None:
            return None
        x0, y0, x1, y1 = (int(v) for v in found[:4])
        shape = self._shape(image, self._dlib.rectangle(x0, y0, x1, y1))
        return np.asarray(self._net.compute_face_descriptor(image, shape, 0), dtype=np.float64)


_embedder: FaceEmbedder | None = None


def face_embedder() -> FaceEmbedder:
    global _embedder
    if _embedder is None:
        _embedder = FaceEmbedder()
    return _embedder


# ------------------------------------------------------------------------------------------ metrics


def pearson(a: np.ndarray, b: np.ndarray) -> float | None:
    """Pearson correlation over the frames where both are finite; None with too few frames or no variance."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    n = min(len(a), len(b))
    a, b = a[:n], b[:n]
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < MIN_FRAMES_FOR_CORR:
        return None
    a, b = a[ok] - a[ok].mean(), b[ok] - b[ok].mean()
    den = math.sqrt(float((a * a).sum() * (b * b).sum()))
    return None if den < 1e-12 else float((a * b).sum() / den)


def best_lag(gen: np.ndarray, gt: np.ndarray, max_lag: int = MAX_LAG) -> tuple[int | None, float | None]:
    """Lag (frames; + = `gen` is late) in [-max_lag, max_lag] with the highest correlation, and that correlation."""
    best = (None, None)
    for lag in range(-max_lag, max_lag + 1):
        a = gen[lag:] if lag >= 0 else gen[:lag]
        b = gt[: len(gt) - lag] if lag >= 0 else gt[-lag:]
        r = pearson(a, b)
        if r is not None and (best[1] is None or r > best[1]):
            best = (lag, r)
    return best


def landmark_jitter(lms: list[np.ndarray | None]) -> float | None:
    """Mean |second difference| of the landmarks over consecutive detected triples, in eye-corner distances."""
    acc = []
    for a, b, c in zip(lms, lms[1:], lms[2:]):
        if a is None or b is None or c is None:
            continue
        iod = L.eye_corner_distance(b)
        acc.append(float(np.linalg.norm(a[:, :2] - 2 * b[:, :2] + c[:, :2], axis=1).mean() / max(iod, 1e-6)))
    return float(np.mean(acc)) if acc else None


def _round(x, nd=4):
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return None
    return round(float(x), nd)


def evaluate_pair(frames: list[np.ndarray], reference: np.ndarray, pcm: np.ndarray, sample_rate: int,
                  gt_open: np.ndarray | None = None, gt_frames: list[np.ndarray] | None = None,
                  silent: np.ndarray | None = None, fps: float = FPS, identity_stride: int = 1,
                  identity: bool = True, series: bool = False, silence_frames: list[np.ndarray] | None = None,
                  mask: np.ndarray | None = None) -> dict:
    """Metrics of a generated video (`frames`, RGB uint8, one per 1/fps from t = 0) against its ground truth.

    reference: the portrait it was made from (identity). Ground-truth mouth opening: `gt_open` [F] if
    given, else measured on `gt_frames`. silent: bool [F] from an alignment, else from the audio energy
    (then trimmed by SILENCE_MARGIN either way). identity_stride: embed every k-th frame (identity is
    the slowest metric: ~60 ms a frame). silence_frames (the same avatar driven by silence) and the
    reference's face mask add the audio-response metrics (`audio_response`). Returns a JSON-ready dict.
    """
    if not frames:
        raise InputError("no generated frames to evaluate")
    if not isinstance(identity_stride, int) or identity_stride < 1:
        raise InputError(f"identity stride must be a whole number of frames, at least 1, got {identity_stride!r}")
    lms = L.video_landmarks(frames)
    gen_open = L.series(lms, L.mouth_opening)
    gt_lms = L.video_landmarks(gt_frames) if gt_frames is not None else None
    if gt_open is None and gt_lms is not None:
        gt_open = L.series(gt_lms, L.mouth_opening)
    n = len(frames) if gt_open is None else min(len(frames), len(gt_open))
    gen_open = gen_open[:n]
    env = audio_envelope(pcm, sample_rate, n, fps)
    silent = energy_silence(env) if silent is None else np.asarray(silent, bool)[:n]
    if len(silent) < n:
        silent = np.concatenate([silent, np.ones(n - len(silent), bool)])
    silent = shrink(silent, SILENCE_MARGIN)
    closed = np.nan_to_num(gen_open, nan=np.inf) < MOUTH_CLOSED

    out: dict = {"frames": n, "face_detected": _round(np.isfinite(gen_open).mean())}
    if gt_open is not None:
        gt_open = np.asarray(gt_open, np.float64)[:n]
        lag, lag_r = best_lag(gen_open, gt_open)
        out.update(mouth_corr_gt=_round(pearson(gen_open, gt_open)), mouth_lag_frames=lag,
                   mouth_corr_gt_best_lag=_round(lag_r), gt_mouth_corr_audio=_round(pearson(gt_open, env)))
    out.update(
        mouth_corr_audio=_round(pearson(gen_open, env)),
        mouth_open_speech=_round(np.nanmean(gen_open[~silent]) if np.isfinite(gen_open[~silent]).any() else None),
        mouth_open_silence=_round(np.nanmean(gen_open[silent]) if np.isfinite(gen_open[silent]).any() else None),
        silent_frames=int(silent.sum()),
        silent_closed_frames=int((closed & silent).sum()),
        silent_closed=_round(closed[silent].mean() if silent.any() else None),
    )
    if gt_open is not None:
        gt_closed = np.nan_to_num(gt_open, nan=np.inf) < MOUTH_CLOSED
        out["gt_silent_closed"] = _round(gt_closed[silent].mean() if silent.any() else None)
    if identity:
        emb = face_embedder()
        ref = emb.embed(reference)
        if ref is None:
            raise InputError("no face found in the reference image; the identity metric needs one")
        picked = list(range(0, n, identity_stride))
        dists = []
        for k in picked:
            e = emb.embed(frames[k])
            dists.append(math.inf if e is None else float(np.linalg.norm(e - ref)))
        d = np.array(dists)
        finite = d[np.isfinite(d)]
        out.update(identity_frames=len(picked), identity_same_frames=int((d < SAME_PERSON_DISTANCE).sum()),
                   identity_same=_round((d < SAME_PERSON_DISTANCE).mean()),
                   identity_distance_median=_round(np.median(finite) if finite.size else None))
    if silence_frames is not None and mask is not None:
        out.update(audio_response(frames[:n], silence_frames[:n], mask, gt_open))
    out["landmark_jitter"] = _round(landmark_jitter(lms[:n]), 5)
    if gt_lms is not None:
        out["gt_landmark_jitter"] = _round(landmark_jitter(gt_lms[:n]), 5)
    if series:
        out["series"] = {
            "mouth_open": [_round(x) for x in gen_open],
            "gt_mouth_open": None if gt_open is None else [_round(x) for x in gt_open],
            "audio_db": [_round(x, 1) for x in env],
            "silent": [bool(x) for x in silent],
        }
    return out


def audio_response(frames: list[np.ndarray], silence_frames: list[np.ndarray], mask: np.ndarray,
                   gt_open: np.ndarray | None = None) -> dict:
    """How the audio changes the picture: frames driven by the clip's audio against frames of the same
    avatar and seed driven by silence (RGB uint8 [S, S, 3] each, equal counts).

    `audio_effect_mouth` / `audio_effect_elsewhere`: mean |speech − silence| (0-255) inside the mouth
    box (`engine.face.mouth_box`) and outside it. `mouth_change_corr_gt`: correlation of the mouth
    box's per-frame change with the ground-truth opening (the wider the mouth should be open, the more
    the audio should have changed it from the silent face).
    Unlike the landmark metrics these see an audio pathway that moves the mouth too little for Face
    Mesh to measure, which is where training starts (the audio layers start at zero)."""
    n = min(len(frames), len(silence_frames))
    box = mouth_box(mask)
    if n == 0 or box is None:
        return {}
    x0, y0, x1, y1 = box
    inside = np.zeros(np.asarray(mask).shape, bool)
    inside[y0:y1, x0:x1] = True
    speech = np.stack(frames[:n]).astype(np.float32).mean(-1)
    quiet = np.stack(silence_frames[:n]).astype(np.float32).mean(-1)
    diff = np.abs(speech - quiet)
    out = {"audio_effect_mouth": _round(diff[:, inside].mean(), 3),
           "audio_effect_elsewhere": _round(diff[:, ~inside].mean(), 3)}
    if gt_open is not None:
        change = diff[:, inside].mean(1)
        m = min(n, len(gt_open))
        out["mouth_change_corr_gt"] = _round(pearson(change[:m], np.asarray(gt_open, np.float64)[:m]))
    return out


# ------------------------------------------------------------------------------------- clip driver


@dataclass
class PreparedClip:
    source: ClipSource
    reference: np.ndarray  # [S, S, 3] the cropped first frame (or the given reference)
    mask: np.ndarray  # [S, S] face-region mask of the reference
    gt_frames: list[np.ndarray]  # [S, S, 3] each, cropped like the reference, one per 1/25 s
    pcm: np.ndarray  # 16 kHz mono
    gt_open: np.ndarray | None  # synthetic clips: the generator's mouth_open
    silent: np.ndarray | None
    full_frames: list[np.ndarray] | None = None  # [H, W, 3] each, uncropped, one per 1/25 s
    crop_box: tuple[int, int, int, int] | None = None  # (x0, y0, x1, y1) of the full frames that gt_frames show


def prepare_clip(source: ClipSource, size: int, sample_rate: int = SAMPLE_RATE,
                 reference: np.ndarray | None = None) -> PreparedClip:
    """Load a clip: its audio, its frames cropped like its first frame (synthetic clips: as they are),
    ground truth and silence."""
    pcm = load_audio(source.video, sample_rate=sample_rate)
    frames, fps = read_video(source.video)
    n = -(-len(pcm) * FPS // sample_rate)
    frames = resample_frames(frames, fps, n)
    try:
        # synthetic_talker frames are already the portrait crop (as training takes them): only resized.
        first = prepare_portrait(frames[0], size, crop=source.kind != "synthetic")
        if not first.detected:
            raise InputError("no face")
    except InputError:
        raise InputError(f"no face found in the first frame of {source.video}") from None
    ref = first
    if reference is not None:
        ref = prepare_portrait(reference, size)
    gt_frames = crop_frames(frames, first.crop_box, size)
    gt_open = silent = None
    if source.params:
        doc = read_params(source.params)
        gt_open = np.asarray(doc["params"]["mouth_open"], np.float64)
        silent = np.asarray(doc["silent"], bool)
    elif source.align:
        silent = silent_frames(read_grid_align(source.align), n, FPS)
    return PreparedClip(source, ref.image, ref.mask, gt_frames, pcm, gt_open, silent, frames, first.crop_box)


def generate_frames(runners, image: np.ndarray, mask: np.ndarray, pcm: np.ndarray, seed: int = 0) -> list[np.ndarray]:
    """The model animating `image` (already cropped, [S, S, 3]) with `pcm` (16 kHz) → frames, through
    the same streaming Session as `livehead animate`."""
    sr = runners.cfg.audio.sample_rate
    session = Session(runners, prepare_avatar(runners, image, mask), seed=seed)
    out = []
    step = sr  # one-second pieces
    for start in range(0, len(pcm), step):
        session.push_audio(pcm[start:start + step], sr)
        out += [f.image for f in session.frames()]
    session.flush()
    out += [f.image for f in session.frames()]
    return out


def vae_roundtrip_frames(runners, frames: list[np.ndarray], reference: np.ndarray, mask: np.ndarray,
                         batch: int = 16) -> list[np.ndarray]:
    """Each frame ([S, S, 3] uint8) through the model's VAE: encoded to its latent (the posterior mean,
    as training caches it) and decoded (with the reference photo [S, S, 3] and its face mask [S, S]
    when the decoder takes one, as a session does). A denoiser that predicted every latent exactly
    would show these frames, so scoring them gives the ceiling the VAE puts on every metric."""
    ref = decoder_reference(runners.cfg, reference, mask)
    out: list[np.ndarray] = []
    for a in range(0, len(frames), batch):
        latents = runners.encode_image(to_pixels(np.stack(frames[a:a + batch])))
        out += list(to_uint8(runners.decode(latents, ref)))
    return out


def aggregate(clips: list[dict]) -> dict:
    """Means of the per-clip correlations, pooled fractions, and the issue's pass/fail checks."""
    def mean(key):
        vals = [c[key] for c in clips if c.get(key) is not None]
        return _round(np.mean(vals)) if vals else None

    def pooled(num, den):
        d = sum(c.get(den, 0) or 0 for c in clips)
        return _round(sum(c.get(num, 0) or 0 for c in clips) / d) if d else None

    out = {
        "clips": len(clips),
        "mouth_corr_gt": mean("mouth_corr_gt"),
        "mouth_corr_audio": mean("mouth_corr_audio"),
        "gt_mouth_corr_audio": mean("gt_mouth_corr_audio"),
        "silent_closed": pooled("silent_closed_frames", "silent_frames"),
        "identity_same": pooled("identity_same_frames", "identity_frames"),
        "identity_distance_median": mean("identity_distance_median"),
        "face_detected": mean("face_detected"),
        "landmark_jitter": mean("landmark_jitter"),
        "gt_landmark_jitter": mean("gt_landmark_jitter"),
    }
    for key in ("audio_effect_mouth", "audio_effect_elsewhere", "mouth_change_corr_gt"):
        if any(key in c for c in clips):
            out[key] = mean(key)
    out["pass"] = {k: (out[k] is not None and out[k] >= v) for k, v in CRITERIA.items()}
    return out


def evaluate_clips(clips: list[ClipSource], size: int, generate: Callable[[PreparedClip], list[np.ndarray]] | None,
                   identity_stride: int = 1, reference: np.ndarray | None = None, shift: int = 0,
                   progress: bool = True, series: bool = False, with_silence: bool = True) -> dict:
    """Evaluate every clip. generate(clip) → frames; None evaluates the clips' own (cropped) videos,
    shifted later by `shift` frames (the ground truth against itself: the best achievable figures).
    with_silence: also generate each clip driven by silence for the audio-response metrics."""
    from tqdm import tqdm

    results = []
    t0 = time.perf_counter()
    for source in tqdm(clips, desc="eval", unit="clip", disable=not progress):
        clip = prepare_clip(source, size, reference=reference)
        quiet = None
        if generate is None:
            frames = shift_frames(clip.gt_frames, shift)
        else:
            frames = generate(clip)
            if with_silence:
                quiet = generate(replace(clip, pcm=np.zeros_like(clip.pcm)))
        metrics = evaluate_pair(frames, clip.reference, clip.pcm, SAMPLE_RATE, gt_open=clip.gt_open,
                                gt_frames=clip.gt_frames, silent=clip.silent, identity_stride=identity_stride,
                                series=series, silence_frames=quiet, mask=clip.mask)
        results.append({"clip": source.name, "kind": source.kind, **metrics})
    return {
        "thresholds": thresholds(CRITERIA),
        "summary": aggregate(results),
        "clips": results,
        "seconds": round(time.perf_counter() - t0, 1),
    }


def thresholds(criteria: dict) -> dict:
    """The thresholds every evaluation result records, with the pass criteria it applied."""
    return {"mouth_closed": MOUTH_CLOSED, "same_person_distance": SAME_PERSON_DISTANCE,
            "silence_margin_frames": SILENCE_MARGIN, "criteria": criteria}


def shift_frames(frames: list[np.ndarray], shift: int) -> list[np.ndarray]:
    """The video `shift` frames later (+: frame k shows frame k - shift; the ends repeat the edge frame)."""
    n = len(frames)
    return [frames[min(max(k - shift, 0), n - 1)] for k in range(n)]

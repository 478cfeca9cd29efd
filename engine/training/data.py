"""Training data: talking-face clips → cropped clip store → cached latents → training windows.

    clips = prepare_clips(["data/grid", "data/synthetic"], "runs/cache/clips-128", size=128)  # ClipStore
    data = ensure_latent_cache(clips, model, "runs/cache")        # VAE-encode + audio tokens, once
    windows = WindowSampler(data, motion_frames=2, clip_frames=10)
    batch = windows.sample(8, torch.Generator().manual_seed(step))

A `Clip` is the one interface every source plugs into: frames uint8 [T, S, S, 3] at 25 fps, audio
float32 [N] 16 kHz mono, the reference image uint8 [S, S, 3] and its face-region mask float32 [S, S].
`clip_from_video` makes one from any video with audio (GRID `.mpg`, `.mp4`): the first frame is the
reference, cropped and masked exactly as `engine.face.prepare_portrait` prepares a user's portrait,
and every frame is cut from that same square (the head moves inside a fixed crop, as in a live
session). Videos written by `engine.synthetic_talker` (a `STEM.json` beside them) are already that
crop and are only masked.

Latent cache (one directory per VAE + audio encoder + shape fingerprint, one file per clip):
`latents` [4, T, s, s] fp16 (VAE posterior mean × scale, as `prepare_avatar` encodes), `reference`
[4, s, s] fp16, `mask` [S, S] fp16, and the audio tokens as `audio_stack` [P, L, C] fp16 + `audio_index`
[T, K] int32: frame i's tokens are `audio_stack[audio_index[i]]` flattened to [K·L, C], the exact
tokens `Session` gives frame i in the clip where it is generated (same rolling window, same running
log-mel max, silence after the end), stored without the 2–5× repetition of overlapping windows.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from livehead.engine.common.constants import FPS, SAMPLE_RATE
from livehead.engine.common.errors import InputError
from livehead.engine.media.audio_video import load_audio
from livehead.engine.media.face import blank_mouth, prepare_portrait
from livehead.engine.model.audio_encoder import StreamingAudioFeatures, frame_audio_tokens, frame_token_index
from livehead.engine.model.config import ModelConfig
from livehead.engine.runtime.session import to_pixels

VIDEO_SUFFIXES = (".mpg", ".mpeg", ".mp4", ".avi", ".mov", ".mkv", ".webm")
CLIP_SUFFIX = ".safetensors"  # a saved `Clip` (save_clip)
CACHE_FORMAT = "livehead-latent-cache/1"
ENCODE_BATCH = 64  # frames per VAE encoder call while caching
OPEN_FILES = 256  # latent cache files a LatentDataset keeps open


# ------------------------------------------------------------------------------------------- clips


@dataclass
class Clip:
    """One talking-face clip at the preset's size: the unit every data source yields.

    frames [T, S, S, 3] uint8 at 25 fps; audio [N] float32 16 kHz mono (frame k shows
    [k/25, (k+1)/25) s); reference [S, S, 3] uint8; mask [S, S] float32 in [0, 1]; source: index of
    the data folder it came from (for the data mix).
    """

    name: str
    frames: np.ndarray
    audio: np.ndarray
    reference: np.ndarray
    mask: np.ndarray
    source: int = 0

    def check(self, size: int) -> Clip:
        f = self.frames
        if f.ndim != 4 or f.shape[1:] != (size, size, 3) or f.dtype != np.uint8 or len(f) == 0:
            raise InputError(f"clip {self.name}: frames must be uint8 [T, {size}, {size}, 3], "
                             f"got {f.dtype} {list(f.shape)}")
        if self.reference.shape != (size, size, 3) or self.mask.shape != (size, size):
            raise InputError(f"clip {self.name}: reference must be [{size}, {size}, 3] with a [{size}, {size}] mask")
        if self.audio.ndim != 1 or not np.isfinite(self.audio).all():
            raise InputError(f"clip {self.name}: audio must be finite mono samples")
        return self


def save_clip(path: str | Path, clip: Clip) -> Path:
    """Write a clip as one `.safetensors` file (atomic: a partial file never has the final name)."""
    from safetensors.torch import save_file

    path = Path(path)
    tensors = {
        "frames": torch.tensor(np.asarray(clip.frames, dtype=np.uint8)),  # a copy: the arrays may be read-only
        "audio": torch.tensor(np.asarray(clip.audio, dtype=np.float32)),
        "reference": torch.tensor(np.asarray(clip.reference, dtype=np.uint8)),
        "mask": torch.tensor(np.asarray(clip.mask, dtype=np.float32)),
    }
    tmp = path.with_name(f".{path.name}.partial")
    save_file(tensors, str(tmp), metadata={"format": "livehead-clip/1", "name": clip.name, "fps": str(FPS)})
    publish(tmp, path)
    return path


def publish(tmp: Path, path: Path) -> None:
    """Give a finished temporary file ordinary permissions (rw-r--r--) and move it into place atomically."""
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def load_clip(path: str | Path, source: int = 0) -> Clip:
    from safetensors import safe_open

    path = Path(path)
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            t = {k: f.get_tensor(k).numpy() for k in ("frames", "audio", "reference", "mask")}
    except Exception as err:
        raise InputError(f"{path} is not a readable clip file ({type(err).__name__}); delete it and prepare again") \
            from None
    return Clip(meta.get("name", path.stem), t["frames"], t["audio"], t["reference"], t["mask"], source)


def _resize(img: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    if img.shape[:2] == (size, size):
        return np.ascontiguousarray(img)
    return np.asarray(Image.fromarray(img).resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)


def _video_frames(path: Path, n_frames: int, fps: int = FPS) -> Iterator[np.ndarray]:
    """RGB uint8 frames of the first video stream resampled to `fps`: output frame k is the last source
    frame shown at time (k + 0.5) / fps (times relative to the first frame). Yields exactly n_frames."""
    import av

    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as err:
        raise InputError(f"cannot read video {path} ({err}); pass .mp4/.mpg videos with audio") from None
    with container:
        if not container.streams.video:
            raise InputError(f"no video stream in {path}")
        stream = container.streams.video[0]
        rate = float(stream.average_rate or stream.guessed_rate or fps)
        k, prev, t0 = 0, None, None
        try:
            for i, frame in enumerate(container.decode(stream)):
                t = float(frame.time) if frame.time is not None else i / rate
                t0 = t if t0 is None else t0
                t -= t0
                while k < n_frames and prev is not None and t > (k + 0.5) / fps:
                    yield prev
                    k += 1
                if k >= n_frames:
                    return
                prev = frame.to_ndarray(format="rgb24")
        except av.error.FFmpegError:
            pass  # a damaged tail: keep what decoded
        if prev is None:
            raise InputError(f"video {path} has no decodable frames")
        while k < n_frames:  # the video ends before the audio: hold the last frame
            yield prev
            k += 1


def _is_synthetic(path: Path) -> bool:
    """True for `engine.synthetic_talker` output: frames are already the portrait crop."""
    doc = path.with_suffix(".json")
    if not doc.is_file():
        return False
    try:
        return str(json.loads(doc.read_text()).get("format", "")).startswith("livehead-synthetic-talker")
    except (ValueError, OSError, AttributeError):
        return False


def clip_from_video(path: str | Path, size: int, sample_rate: int = SAMPLE_RATE, source: int = 0,
                    crop: bool | None = None) -> Clip:
    """A clip from a video file with audio (see the module docstring). crop=None: crop unless the file
    is synthetic_talker output. InputError for unreadable files and (when cropping) no face in frame 0."""
    path = Path(path)
    crop = (not _is_synthetic(path)) if crop is None else crop
    audio = load_audio(path, sample_rate=sample_rate)
    n = -(-len(audio) * FPS // sample_rate)  # ⌈duration · fps⌉, as a session makes
    frames = _video_frames(path, n)
    first = next(frames)
    try:
        face = prepare_portrait(first, size, crop=crop)
    except InputError:
        raise InputError(f"no face found in the first frame of {path}") from None
    x0, y0, x1, y1 = face.crop_box
    out = np.empty((n, size, size, 3), dtype=np.uint8)
    out[0] = face.image
    for i, frame in enumerate(frames, start=1):
        out[i] = _resize(np.ascontiguousarray(frame[y0:y1, x0:x1]), size)
    return Clip(path.stem, out, audio, face.image, face.mask, source)


# ------------------------------------------------------------------------------------ clip store


def _data_files(data_dir: Path) -> list[Path]:
    if not data_dir.exists():
        raise InputError(f"data directory not found: {data_dir}")
    if not data_dir.is_dir():
        raise InputError(f"--data must be a directory of videos or clip files, got a file: {data_dir}")
    return sorted(p for p in data_dir.iterdir()
                  if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES + (CLIP_SUFFIX,))


def _dir_tag(path: Path) -> str:
    return hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:8]


@dataclass
class ClipStore:
    """Prepared clips on disk: `paths[i]` is a saved Clip whose data folder index is `sources[i]`."""

    paths: list[Path]
    sources: list[int]
    size: int

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, i: int) -> Clip:
        return load_clip(self.paths[i], self.sources[i])

    def __iter__(self) -> Iterator[Clip]:
        return (self.load(i) for i in range(len(self)))

    def frame_counts(self) -> list[int]:
        from safetensors import safe_open

        counts = []
        for p in self.paths:
            with safe_open(str(p), "pt") as f:
                counts.append(int(f.get_slice("frames").get_shape()[0]))
        return counts

    def mask(self, i: int) -> np.ndarray:
        """Clip i's face mask: float32 [S, S] in [0, 1] (read alone, without the frames)."""
        from safetensors import safe_open

        with safe_open(str(self.paths[i]), "pt") as f:
            return f.get_tensor("mask").numpy()

    def reference(self, i: int) -> np.ndarray:
        """Clip i's reference image: uint8 [S, S, 3] (read alone)."""
        from safetensors import safe_open

        with safe_open(str(self.paths[i]), "pt") as f:
            return f.get_tensor("reference").numpy()

    def frames(self, i: int, index: Sequence[int]) -> np.ndarray:
        """Frames `index` of clip i: uint8 [len(index), S, S, 3] (memory-mapped read)."""
        from safetensors import safe_open

        with safe_open(str(self.paths[i]), "pt") as f:
            sl = f.get_slice("frames")
            return np.stack([sl[int(k):int(k) + 1].numpy()[0] for k in index])


def prepare_clips(data_dirs: Sequence[str | Path], store_dir: str | Path, size: int,
                  progress: bool = True) -> ClipStore:
    """Crop every video (and copy every clip file) of `data_dirs` into `store_dir` once.

    Already prepared files are reused (an interrupted run continues). Files that cannot be used (no
    audio, no face in the first frame) are skipped with a note; no usable clip at all is an InputError.
    """
    from tqdm import tqdm

    store_dir = Path(store_dir)
    dirs = [Path(d) for d in data_dirs]
    if not dirs:
        raise InputError("pass at least one --data directory")
    files = [(src, f) for src, d in enumerate(dirs) for f in _data_files(d)]
    if not files:
        raise InputError(f"no videos or clip files in {', '.join(map(str, dirs))}: expected "
                         f"{', '.join(VIDEO_SUFFIXES)} videos with audio or {CLIP_SUFFIX} clips")
    store_dir.mkdir(parents=True, exist_ok=True)
    paths, sources, skipped = [], [], []
    for src, f in tqdm(files, desc="prepare clips", unit="clip", disable=not progress):
        out = store_dir / f"{_dir_tag(f.parent)}-{f.stem}{CLIP_SUFFIX}"
        if not out.is_file():
            try:
                clip = load_clip(f, src) if f.suffix == CLIP_SUFFIX else clip_from_video(f, size, source=src)
                save_clip(out, clip.check(size))
            except InputError as err:
                skipped.append(f"{f.name}: {err}")
                continue
        paths.append(out)
        sources.append(src)
    if skipped:
        tqdm.write(f"livehead: note: skipped {len(skipped)} of {len(files)} files, e.g. {skipped[0]}")
    if not paths:
        raise InputError(f"none of the {len(files)} files in {', '.join(map(str, dirs))} gave a usable clip "
                         f"(first problem: {skipped[0]})")
    return ClipStore(paths, sources, size)


# ---------------------------------------------------------------------------------- audio tokens


class _RecordingEncoder:
    """Wraps the audio encoder for `StreamingAudioFeatures` and keeps its last stack [1, P, L, C]."""

    def __init__(self, encoder: torch.nn.Module):
        self.encoder = encoder
        p = next(encoder.parameters())
        self.device, self.dtype = p.device, p.dtype
        self.last: torch.Tensor | None = None

    def __call__(self, mel: torch.Tensor) -> torch.Tensor:
        self.last = self.encoder(mel.to(self.device, self.dtype)).float().cpu()
        return self.last


@torch.no_grad()
def session_audio_tokens(encoder: torch.nn.Module, audio: np.ndarray, cfg: ModelConfig,
                         n_frames: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The tokens a `Session` gives each of `n_frames` frames of `audio`, as (stack [P, L, C], index [T, K]).

    Runs the session's clip schedule: clip k computes tokens for frames [kF − n, kF + F) (clamped at 0)
    with the rolling-window encoder and running log-mel max; frame i keeps the tokens of the clip in
    which it is new. Audio after the end reads as silence, as after `Session.flush`.
    """
    s = cfg.stream
    rec = _RecordingEncoder(encoder)
    feats = StreamingAudioFeatures(rec, cfg.audio)
    audio = np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0)
    rows: list[torch.Tensor] = []
    index = np.zeros((n_frames, cfg.audio.tokens_before + cfg.audio.tokens_after + 1), dtype=np.int64)
    offset = 0
    for k in range(-(-n_frames // s.clip_frames)):
        new = k * s.clip_frames
        first = max(new - s.motion_frames, 0)
        count = new + s.clip_frames - first
        a, b = feats.required_span(first, count, s.fps)
        window = np.zeros(b - a, dtype=np.float32)
        have = audio[a:min(b, len(audio))]
        window[: len(have)] = have
        tokens = feats.tokens_for_frames(window, a, first, count, s.fps)
        start_pos, end_pos = a // feats.samples_per_position, b // feats.samples_per_position
        idx = frame_token_index(count, s.fps, end_pos, cfg.audio, first) - start_pos  # as tokens_for_frames
        stack = rec.last[0, : feats.window_positions]
        assert torch.equal(frame_audio_tokens(stack, idx), tokens.float().cpu())
        keep = idx[new - first:][: n_frames - new]  # the clip's new frames
        lo, hi = int(keep.min()), int(keep.max()) + 1
        rows.append(stack[lo:hi])
        index[new:new + len(keep)] = keep - lo + offset
        offset += hi - lo
    return torch.cat(rows), torch.from_numpy(index.astype(np.int32))


def gather_tokens(stack: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """stack [P, L, C], index [T, K] → tokens [T, K·L, C] (token = L·k + layer, as the session's)."""
    return frame_audio_tokens(stack, index.long())


# ----------------------------------------------------------------------------------- latent cache


VAE_ENCODER_PARTS = ("encoder.", "quant_conv.")  # what `encode_mean` reads


def cache_fingerprint(model, cfg: ModelConfig) -> str:
    """sha256 of what the cached values depend on: the VAE encoder's and audio encoder's weights, shapes and
    windowing. The VAE decoder is left out: fine-tuning it (`livehead train vae --decoder-only`) keeps a cache."""
    h = hashlib.sha256()
    doc = {"format": CACHE_FORMAT, "vae": asdict(cfg.vae), "audio": asdict(cfg.audio),
           "stream": {k: v for k, v in asdict(cfg.stream).items() if k != "max_pending_frames"}}
    h.update(json.dumps(doc, sort_keys=True).encode())
    encoder = {f"vae.{k}": v for k, v in model.vae.state_dict().items() if k.startswith(VAE_ENCODER_PARTS)}
    audio = {f"audio.{k}": v for k, v in model.audio_encoder.state_dict().items()}
    for k, v in sorted({**encoder, **audio}.items()):
        h.update(k.encode())
        h.update(v.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


@torch.no_grad()
def encode_clip(model, cfg: ModelConfig, clip: Clip) -> dict[str, torch.Tensor]:
    """The cached tensors of one clip (see the module docstring)."""
    p = next(model.vae.parameters())
    device, dtype = p.device, p.dtype
    size = cfg.stream.image_size
    clip.check(size)
    n = len(clip.frames)

    def encode(images: np.ndarray) -> torch.Tensor:  # uint8 [N, S, S, 3] → [N, 4, s, s]
        return model.vae.encode_mean(to_pixels(images).to(device, dtype)).float().cpu()

    latents = torch.cat([encode(clip.frames[i:i + ENCODE_BATCH]) for i in range(0, n, ENCODE_BATCH)])
    stack, index = session_audio_tokens(model.audio_encoder, clip.audio, cfg, n)
    return {
        "latents": latents.permute(1, 0, 2, 3).half().contiguous(),  # [4, T, s, s]
        "reference": encode(clip.reference[None])[0].half().contiguous(),
        "mask": torch.from_numpy(np.ascontiguousarray(clip.mask)).half(),
        "audio_stack": stack.half().contiguous(),
        "audio_index": index.contiguous(),
    }


def build_latent_cache(clips: Iterable[Clip], model, cfg: ModelConfig, cache_dir: str | Path,
                       names: Sequence[str] | None = None, progress: bool = True) -> Path:
    """Encode every clip into `cache_dir/<name>.safetensors` (existing files are kept: resumable).

    `names` gives each clip's file name (default: `clip.name`); `cache_dir/meta.json` records the
    fingerprint. Returns cache_dir.
    """
    from safetensors.torch import save_file
    from tqdm import tqdm

    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    fp = cache_fingerprint(model, cfg)
    meta = cache_dir / "meta.json"
    if meta.is_file() and json.loads(meta.read_text()).get("fingerprint") != fp:
        raise InputError(f"latent cache {cache_dir} was made with another VAE or audio encoder; delete it or "
                         f"choose another --cache")
    meta.write_text(json.dumps({"format": CACHE_FORMAT, "fingerprint": fp, "preset": cfg.name,
                                "image_size": cfg.stream.image_size, "latent_size": cfg.latent_size}) + "\n")
    clips = list(clips) if names is None else clips
    total = len(names) if names is not None else len(clips)
    names = list(names) if names is not None else [c.name for c in clips]
    bar = tqdm(total=total, desc="cache latents", unit="clip", disable=not progress)
    for name, clip in zip(names, clips):
        out = cache_dir / f"{name}.safetensors"
        if not out.is_file():
            tmp = out.with_name(f".{out.name}.partial")
            save_file(encode_clip(model, cfg, clip), str(tmp), metadata={"source": str(clip.source)})
            publish(tmp, out)
        bar.update(1)
    bar.close()
    return cache_dir


class _LazyClips:
    """Loads only the clips whose cache file is missing (a rerun over a complete cache reads nothing)."""

    def __init__(self, store: ClipStore, cache_dir: Path):
        self.store, self.cache_dir = store, cache_dir

    def __iter__(self):
        for i, p in enumerate(self.store.paths):
            if (self.cache_dir / f"{p.stem}.safetensors").is_file():
                yield Clip(p.stem, np.zeros(0), np.zeros(0), np.zeros(0), np.zeros(0), self.store.sources[i])
            else:
                yield self.store.load(i)


def ensure_latent_cache(store: ClipStore, model, cfg: ModelConfig, cache_root: str | Path,
                        progress: bool = True) -> LatentDataset:
    """The latent cache of `store` for this model's VAE and audio encoder under `cache_root/latents-<fp>`."""
    cache_dir = Path(cache_root) / f"latents-{cache_fingerprint(model, cfg)[:12]}"
    names = [p.stem for p in store.paths]
    build_latent_cache(_LazyClips(store, cache_dir), model, cfg, cache_dir, names=names, progress=progress)
    return LatentDataset(cache_dir, names, store.sources)


class LatentDataset:
    """Cached clips, read lazily (memory-mapped safetensors). `window(i, a, b)` slices frames [a, b)."""

    def __init__(self, cache_dir: str | Path, names: Sequence[str] | None = None,
                 sources: Sequence[int] | None = None):
        self.dir = Path(cache_dir)
        if not (self.dir / "meta.json").is_file():
            raise InputError(f"{self.dir} is not a latent cache (no meta.json)")
        if names is None:
            names = sorted(p.stem for p in self.dir.glob("*.safetensors"))
        self.names = list(names)
        if not self.names:
            raise InputError(f"latent cache {self.dir} holds no clips")
        self._files = {}
        self.frames, self.sources = [], []
        for j, _name in enumerate(self.names):
            f = self._file(j)
            self.frames.append(int(f.get_slice("latents").get_shape()[1]))
            src = int((f.metadata() or {}).get("source", 0))
            self.sources.append(int(sources[j]) if sources is not None else src)

    def __len__(self) -> int:
        return len(self.names)

    def _file(self, i: int):
        """The clip's open (memory-mapped) file; at most OPEN_FILES stay open, least recently used first out."""
        from safetensors import safe_open

        f = self._files.pop(i, None)
        if f is None:
            path = self.dir / f"{self.names[i]}.safetensors"
            if not path.is_file():
                raise InputError(f"latent cache file missing: {path}; rerun to rebuild the cache")
            f = safe_open(str(path), "pt")
            while len(self._files) >= OPEN_FILES:
                self._files.pop(next(iter(self._files)))
        self._files[i] = f  # dicts keep insertion order: re-inserting marks it most recent
        return f

    def reference(self, i: int) -> torch.Tensor:
        return self._file(i).get_tensor("reference").float()

    def mask(self, i: int) -> torch.Tensor:
        return self._file(i).get_tensor("mask").float()

    def latents(self, i: int, a: int, b: int) -> torch.Tensor:
        """[4, b − a, s, s] float32."""
        return self._file(i).get_slice("latents")[:, a:b].float()

    def tokens(self, i: int, a: int, b: int) -> torch.Tensor:
        """Audio tokens of frames [a, b): [b − a, Ta, Ca] float32."""
        f = self._file(i)
        index = f.get_slice("audio_index")[a:b].long()
        lo, hi = int(index.min()), int(index.max()) + 1
        return gather_tokens(f.get_slice("audio_stack")[lo:hi].float(), index - lo)


# ----------------------------------------------------------------------------------- windows


def mixed_weights(counts: np.ndarray, sources: Sequence[int], mix: Sequence[float] | None) -> torch.Tensor:
    """Sampling probabilities [N] of N clips: in proportion to `counts` (windows or frames) within each
    data folder, each folder's total being `mix[source]` when given (else its share of all counts)."""
    counts = np.array(counts, dtype=np.float64)
    sources = np.asarray(sources)
    if mix is not None:
        if len(mix) <= sources.max() or any(m < 0 for m in mix) or sum(mix) <= 0:
            raise InputError(f"--mix needs one non-negative weight per --data folder, got {list(mix)}")
        for s in np.unique(sources):
            part = counts[sources == s].sum()
            if part > 0:
                counts[sources == s] *= mix[s] / part
    if not counts.sum() > 0:
        raise InputError(f"--mix {list(mix)} gives every clip weight 0")
    return torch.from_numpy(counts / counts.sum())


class WindowSampler:
    """Random training windows of `motion_frames + clip_frames` consecutive cached frames.

    sample(batch, gen) → dict of float32 tensors:
      latents [B, 4, W, s, s], tokens [B, W, Ta, Ca], reference [B, 4, s, s], mask [B, 1, S, S].
    Clips are drawn in proportion to their number of windows (within each data folder, whose share is
    `mix[source]` when given). The reference is the clip's cached reference, or with probability
    `reference_frame_prob` a random frame of the same clip (EMO's stage-1 pairing). With probability
    `first_clip_prob` a window is the session's first clip instead: frames [0, F) after a prefix of
    the reference latent repeated `motion_frames` times carrying frame 0's tokens, as `Session` does.
    """

    def __init__(self, data: LatentDataset, motion_frames: int, clip_frames: int,
                 first_clip_prob: float = 0.0, reference_frame_prob: float = 0.0,
                 mix: Sequence[float] | None = None):
        self.data = data
        self.n, self.f = int(motion_frames), int(clip_frames)
        self.w = self.n + self.f
        self.first_clip_prob = float(first_clip_prob)
        self.reference_frame_prob = float(reference_frame_prob)
        counts = np.array([max(t - self.w + 1, 0) for t in data.frames], dtype=np.float64)
        if counts.sum() == 0:
            raise InputError(f"no clip has the {self.w} frames a training window needs "
                             f"(longest: {max(data.frames)} frames)")
        self.weights = mixed_weights(counts, data.sources, mix)

    def sample(self, batch: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
        clips = torch.multinomial(self.weights, batch, replacement=True, generator=gen).tolist()
        u = torch.rand(batch, 3, generator=gen)
        out = {"latents": [], "tokens": [], "reference": [], "mask": []}
        d = self.data
        for j, i in enumerate(clips):
            t = d.frames[i]
            first_clip = self.n > 0 and bool(u[j, 0] < self.first_clip_prob) and t >= self.f
            if first_clip:
                ref = d.reference(i)
                lat = torch.cat([ref[:, None].expand(-1, self.n, -1, -1), d.latents(i, 0, self.f)], dim=1)
                tok = d.tokens(i, 0, self.f)
                tok = torch.cat([tok[:1].expand(self.n, -1, -1), tok])
            else:
                a = int(u[j, 1] * (t - self.w + 1))
                lat, tok = d.latents(i, a, a + self.w), d.tokens(i, a, a + self.w)
                if bool(u[j, 2] < self.reference_frame_prob):
                    k = int(torch.randint(t, (1,), generator=gen))
                    ref = d.latents(i, k, k + 1)[:, 0]
                else:
                    ref = d.reference(i)
            out["latents"].append(lat)
            out["tokens"].append(tok)
            out["reference"].append(ref)
            out["mask"].append(d.mask(i)[None])
        return {k: torch.stack(v) for k, v in out.items()}


class FrameSampler:
    """Random single frames of a ClipStore for VAE training.

    sample(batch, gen) → images [B, 3, S, S] in [-1, 1] and their clips' face masks [B, 1, S, S] in
    [0, 1], both flipped horizontally half the time (faces are near-symmetric). Clips are drawn in
    proportion to their frames within each data folder, whose share is `mix[source]` when given.

    sample(batch, gen, reference_frame_prob=p) also returns each frame's decoder reference [B, 3, S, S]:
    its clip's reference image, or with probability p another random frame of the clip, with the
    mouth blanked (`engine.face.blank_mouth`) and flipped with the frame: a reference decoder learns to
    take the face from it and the mouth from the latents.
    """

    def __init__(self, store: ClipStore, mix: Sequence[float] | None = None):
        self.store = store
        counts = np.array(store.frame_counts(), dtype=np.float64)
        self.counts = counts.astype(int)
        self.weights = mixed_weights(counts, store.sources, mix)
        self._masks: dict[int, np.ndarray] = {}
        self._references: dict[int, np.ndarray] = {}

    def mask(self, i: int) -> np.ndarray:
        if i not in self._masks:
            self._masks[i] = self.store.mask(i)
        return self._masks[i]

    def reference(self, i: int) -> np.ndarray:
        if i not in self._references:
            self._references[i] = self.store.reference(i)
        return self._references[i]

    def sample(self, batch: int, gen: torch.Generator, reference_frame_prob: float | None = None):
        clips = torch.multinomial(self.weights, batch, replacement=True, generator=gen).tolist()
        u = torch.rand(batch, 2, generator=gen)
        r = torch.rand(batch, 2, generator=gen) if reference_frame_prob is not None else None
        images, masks, refs = [], [], []
        for j, i in enumerate(clips):
            k = int(u[j, 0] * self.counts[i])
            img, mask = self.store.frames(i, [k])[0], self.mask(i)
            ref = None
            if r is not None:
                other = bool(r[j, 0] < reference_frame_prob)
                ref = self.store.frames(i, [int(r[j, 1] * self.counts[i])])[0] if other else self.reference(i)
                ref = blank_mouth(ref, mask)
            if u[j, 1] < 0.5:
                img, mask = img[:, ::-1], mask[:, ::-1]
                ref = None if ref is None else ref[:, ::-1]
            images.append(img)
            masks.append(mask)
            refs.append(ref)
        out = to_pixels(np.stack(images)), torch.from_numpy(np.stack(masks).astype(np.float32))[:, None]
        return out if r is None else (*out, to_pixels(np.stack(refs)))

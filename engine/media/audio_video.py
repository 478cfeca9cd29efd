"""Media I/O: audio decoding and resampling, portrait and video loading, MP4 (H.264 + AAC) writing.

Everything a user hands in (audio files, images, output paths) is validated here and rejected with
an `InputError` whose message is one line naming the path and what to do. Decoding and encoding go
through PyAV (FFmpeg), images through Pillow.

    pcm = load_audio("speech.m4a")                  # float32 [T], 16 kHz mono
    img = load_image("me.jpg")                      # uint8 [H, W, 3] RGB, EXIF-rotated
    img = to_rgb(grey_or_rgba)                      # the same for an array: uint8 [H, W, 3] RGB
    frames, fps = load_video("clip.mpg")            # uint8 [F, H, W, 3] RGB, frames per second
    with Mp4Writer("out.mp4", fps=25, width=512, height=512, audio=pcm) as w:
        for frame in frames:
            w.write(frame)
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from livehead.engine.common.constants import FPS, SAMPLE_RATE
from livehead.engine.common.errors import InputError

DEFAULT_SAMPLE_RATE = SAMPLE_RATE
MIN_AUDIO_SECONDS = 1.0 / 25.0  # shorter than one video frame at 25 fps: nothing to animate
MAX_IMAGE_PIXELS = 40_000_000
MAX_IMAGE_BYTES = 25 * 1024 * 1024
MIN_IMAGE_SIDE = 64

_FLOAT_SAMPLE_FORMATS = {"flt", "fltp", "dbl", "dblp"}
_AAC_SAMPLE_RATES = {8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200, 96000}


# --------------------------------------------------------------------------------------------- audio


def _check_file(path: Path, what: str) -> None:
    if not path.exists():
        raise InputError(f"{what} file not found: {path}")
    if not path.is_file():
        raise InputError(f"{what} path is not a file: {path}")


def _frames_to_mono(frames: list) -> np.ndarray:
    """Concatenate planar-float AudioFrames into one float32 vector, averaging the channels."""
    if not frames:
        return np.zeros(0, dtype=np.float32)
    parts = []
    for f in frames:
        a = f.to_ndarray()  # fltp: [channels, n]; flt: [1, n * channels] (mono only here)
        parts.append(a[0] if a.shape[0] == 1 else a.mean(axis=0))
    return np.concatenate(parts).astype(np.float32, copy=False)


def load_audio(path: str | os.PathLike, sample_rate: int = DEFAULT_SAMPLE_RATE) -> np.ndarray:
    """Decode the first audio stream of any container/codec into float32 mono at `sample_rate`.

    Channels are averaged into mono (as librosa's `to_mono`; FFmpeg's own stereo-to-mono matrix
    adds +3 dB for correlated channels and can leave [-1, 1]). Raises InputError for a missing or
    undecodable file, a file without audio, audio shorter than one 25 fps video frame, or audio
    containing NaN/inf samples.
    """
    path = Path(path)
    _check_file(path, "audio")
    try:
        container = av.open(str(path), mode="r")
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as err:
        raise InputError(
            f"cannot read audio file {path} ({_short(err)}); pass a wav, mp3, m4a, ogg or flac recording"
        ) from None
    chunks: list[np.ndarray] = []
    nonfinite = False
    try:
        if not container.streams.audio:
            raise InputError(f"no audio stream in {path}; pass a speech recording (wav, mp3, m4a, ogg, ...)")
        stream = container.streams.audio[0]
        resampler = None
        setup = None
        try:
            for frame in container.decode(stream):
                if frame.samples == 0:
                    continue
                # Check before resampling: the resampler may turn NaN into silence or spread it.
                if (frame.format.name in _FLOAT_SAMPLE_FORMATS and not nonfinite
                        and not np.isfinite(frame.to_ndarray()).all()):
                    nonfinite = True
                    break
                key = (frame.format.name, frame.layout.name, len(frame.layout.channels), frame.sample_rate)
                if resampler is None or key != setup:
                    # A stream may change format mid-way; a resampler is bound to its first frame's setup.
                    if resampler is not None:
                        chunks.append(_frames_to_mono(resampler.resample(None)))
                    # Keep the source layout; channels are averaged afterwards in _frames_to_mono.
                    resampler = av.AudioResampler(format="fltp", layout=frame.layout, rate=sample_rate)
                    setup = key
                chunks.append(_frames_to_mono(resampler.resample(frame)))
            if resampler is not None and not nonfinite:
                chunks.append(_frames_to_mono(resampler.resample(None)))
        except av.error.FFmpegError as err:
            if not chunks:
                raise InputError(f"cannot decode audio in {path}: {_short(err)}") from None
            # A damaged tail: keep what decoded (players do the same).
    finally:
        container.close()
    if nonfinite:
        raise InputError(f"audio file {path} contains NaN or infinite samples; re-export it as normal PCM")
    pcm = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)
    if pcm.size == 0:
        raise InputError(f"audio file {path} is empty (no samples); pass a recording with speech in it")
    if not np.isfinite(pcm).all():
        raise InputError(f"audio file {path} contains NaN or infinite samples; re-export it as normal PCM")
    if pcm.size < int(round(MIN_AUDIO_SECONDS * sample_rate)):
        raise InputError(
            f"audio file {path} is too short ({pcm.size / sample_rate * 1000:.0f} ms); "
            f"it must last at least one video frame ({MIN_AUDIO_SECONDS * 1000:.0f} ms)"
        )
    return np.ascontiguousarray(pcm, dtype=np.float32)


def _short(err: BaseException) -> str:
    """First line of an error's text, without FFmpeg's errno and path decorations."""
    text = getattr(err, "strerror", None) or str(err)
    lines = str(text).strip().splitlines()
    return lines[0] if lines else type(err).__name__


def resample(pcm: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """One-shot resampling of a float32 mono vector with FFmpeg's resampler."""
    pcm = np.ascontiguousarray(pcm, dtype=np.float32).reshape(-1)
    if from_rate == to_rate or pcm.size == 0:
        return pcm.copy()
    stream = AudioResampleStream(from_rate, to_rate=to_rate)
    out = stream.push(pcm)
    tail = stream.flush()
    return np.concatenate([out, tail]) if tail.size else out


class AudioResampleStream:
    """Stateful streaming resampler: float32 chunks at `from_rate` in, float32 mono at `to_rate` out.

    `push` accepts a mono vector [T] or a planar array [channels, T] (channels averaged); the
    channel count must stay the same across pushes. Output lags input by the filter delay (a few
    ms); `flush` returns the remainder and ends the stream (a later `push` starts a fresh one).
    """

    def __init__(self, from_rate: int, channels: int = 1, to_rate: int = DEFAULT_SAMPLE_RATE):
        if from_rate <= 0 or to_rate <= 0:
            raise ValueError(f"sample rates must be positive, got {from_rate} -> {to_rate}")
        self.from_rate = int(from_rate)
        self.to_rate = int(to_rate)
        self.channels = int(channels)
        self._resampler: av.AudioResampler | None = None
        self._pts = 0

    def _as_planar(self, pcm: np.ndarray) -> np.ndarray:
        pcm = np.asarray(pcm, dtype=np.float32)
        if pcm.ndim == 1:
            pcm = pcm[None, :]
        if pcm.ndim != 2:
            raise ValueError(f"expected [T] or [channels, T] audio, got shape {pcm.shape}")
        if pcm.shape[0] != self.channels:
            if self._resampler is None and self._pts == 0:
                self.channels = pcm.shape[0]  # first push decides
            else:
                raise ValueError(f"channel count changed mid-stream: {self.channels} -> {pcm.shape[0]}")
        return np.ascontiguousarray(pcm)

    def push(self, pcm: np.ndarray) -> np.ndarray:
        planar = self._as_planar(pcm)
        if planar.shape[1] == 0:
            return np.zeros(0, dtype=np.float32)
        mono = planar[0] if self.channels == 1 else planar.mean(axis=0, dtype=np.float32)
        if self.from_rate == self.to_rate:
            return mono.copy()
        frame = av.AudioFrame.from_ndarray(mono[None, :], format="flt", layout="mono")
        frame.sample_rate = self.from_rate
        frame.time_base = Fraction(1, self.from_rate)
        frame.pts = self._pts
        self._pts += mono.size
        if self._resampler is None:
            self._resampler = av.AudioResampler(format="flt", layout="mono", rate=self.to_rate)
        return _frames_to_mono(self._resampler.resample(frame))

    def flush(self) -> np.ndarray:
        if self._resampler is None:
            return np.zeros(0, dtype=np.float32)
        out = _frames_to_mono(self._resampler.resample(None))
        self._resampler = None
        self._pts = 0
        return out


# --------------------------------------------------------------------------------------------- image


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as uint8 [H, W, 3] RGB with its EXIF orientation applied.

    Transparent pixels are composited over white. Raises InputError for a missing file, a file that
    is not an image, one over 25 MB or 40 megapixels, or one with a side under 64 pixels.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    _check_file(path, "image")
    size_bytes = path.stat().st_size
    if size_bytes > MAX_IMAGE_BYTES:
        raise InputError(f"image file {path} is too large ({size_bytes / 2**20:.0f} MB > 25 MB); pass a smaller photo")
    try:
        with Image.open(path) as im:
            w, h = im.size
            if w * h > MAX_IMAGE_PIXELS:
                raise InputError(
                    f"image {path} is too large ({w}x{h} = {w * h / 1e6:.0f} megapixels > 40); downscale it first"
                )
            im.load()
            rgb = np.asarray(_over_white(ImageOps.exif_transpose(im)), dtype=np.uint8)
    except InputError:
        raise
    except UnidentifiedImageError:
        raise InputError(f"{path} is not a readable image; pass a PNG or JPEG portrait") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise InputError(f"cannot decode image {path} ({_short(err)}); pass a PNG or JPEG portrait") from None
    h, w = rgb.shape[:2]
    if min(h, w) < MIN_IMAGE_SIDE:
        raise InputError(f"image {path} is too small ({w}x{h}); each side must be at least {MIN_IMAGE_SIDE} pixels")
    return np.ascontiguousarray(rgb)


def _over_white(im):
    """A Pillow image as RGB, its transparent pixels composited over white."""
    from PIL import Image

    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(background, rgba)
    return im.convert("RGB")


def to_rgb(image: np.ndarray) -> np.ndarray:
    """An image array as load_image returns one: uint8 grey [H, W] or [H, W, 1], grey + alpha [H, W, 2], RGB
    [H, W, 3] or RGBA [H, W, 4] → uint8 [H, W, 3] RGB, transparent pixels composited over white.
    InputError for any other dtype or shape."""
    from PIL import Image

    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise InputError(f"the image must have 8-bit pixels (uint8), got {image.dtype}; load it with load_image")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim == 2:
        return np.ascontiguousarray(np.repeat(image[..., None], 3, axis=2))
    if image.ndim != 3 or image.shape[2] not in (2, 3, 4):
        raise InputError(f"expected a grey, RGB or RGBA image [H, W(, C)], got shape {list(image.shape)}")
    if image.shape[2] == 3:
        return np.ascontiguousarray(image)
    return np.ascontiguousarray(np.asarray(_over_white(Image.fromarray(np.ascontiguousarray(image))), np.uint8))


# --------------------------------------------------------------------------------------------- video


def load_video(path: str | os.PathLike) -> tuple[np.ndarray, float]:
    """Every frame of a file's first video stream as uint8 [F, H, W, 3] RGB, and its frame rate (25 when
    the file gives none). Meant for short clips: all frames are held in memory. Raises InputError for a
    missing or undecodable file, one without a video stream, or one without a decodable frame; a damaged
    tail is dropped (players do the same)."""
    path = Path(path)
    _check_file(path, "video")
    try:
        container = av.open(str(path), mode="r")
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as err:
        raise InputError(f"cannot read video file {path} ({_short(err)}); pass an mp4, mpg, mov or webm clip") from None
    frames: list[np.ndarray] = []
    with container:
        if not container.streams.video:
            raise InputError(f"no video stream in {path}; pass a clip with video (mp4, mpg, mov, webm)")
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
        try:
            for frame in container.decode(stream):
                frames.append(frame.to_ndarray(format="rgb24"))
        except av.error.FFmpegError as err:
            if not frames:
                raise InputError(f"cannot decode video in {path}: {_short(err)}") from None
    if not frames:
        raise InputError(f"video file {path} has no frames; pass a clip with at least one frame")
    return np.stack(frames), float(rate) if rate else float(FPS)



class Mp4Writer:
    """Writes an MP4 with H.264 video (yuv420p) and, optionally, one AAC audio track.

    Frame k gets pts k in time base 1/fps. Odd `width`/`height` are rounded up to even by
    replicating the last column/row (yuv420p needs even dimensions). The audio (float32 mono at
    `sample_rate`) is known up front and is encoded interleaved with the video: after each video
    frame, audio up to that frame's end time is written; `close` writes the rest, flushes both
    encoders and finalises the file (`+faststart`, so browsers can start playback at once).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        fps: int = FPS,
        width: int = 512,
        height: int = 512,
        audio: np.ndarray | None = None,
        sample_rate: int = DEFAULT_SAMPLE_RATE,
        crf: int = 18,
        preset: str = "veryfast",
    ):
        self.path = Path(path)
        parent = self.path.parent if str(self.path.parent) else Path(".")
        if not parent.is_dir():
            raise InputError(f"output directory does not exist: {parent}; create it first")
        if self.path.is_dir():
            raise InputError(f"output path is a directory: {self.path}; pass a file name ending in .mp4")
        if fps <= 0 or width <= 0 or height <= 0:
            raise ValueError(f"bad video geometry: {width}x{height} at {fps} fps")
        self.fps = int(fps)
        self.width = int(width)
        self.height = int(height)
        self.out_width = self.width + (self.width % 2)
        self.out_height = self.height + (self.height % 2)
        self.frames_written = 0
        self._closed = False

        try:
            self._container = av.open(str(self.path), mode="w", format="mp4", options={"movflags": "+faststart"})
        except (av.error.FFmpegError, OSError) as err:
            raise InputError(f"cannot write {self.path}: {_short(err)}") from None
        try:
            self._setup_streams(audio, int(sample_rate), crf, preset)
        except BaseException:
            self._container.close()
            raise

    def _setup_streams(self, audio: np.ndarray | None, sample_rate: int, crf: int, preset: str) -> None:
        self._video = self._container.add_stream("libx264", rate=self.fps)
        self._video.width = self.out_width
        self._video.height = self.out_height
        self._video.pix_fmt = "yuv420p"
        self._video.time_base = Fraction(1, self.fps)
        self._video.codec_context.time_base = Fraction(1, self.fps)
        self._video.codec_context.options = {"crf": str(crf), "preset": preset}

        self._audio_stream = None
        self._audio = None
        self._audio_pos = 0
        if audio is not None and np.size(audio) > 0:
            pcm = np.ascontiguousarray(audio, dtype=np.float32).reshape(-1)
            if not np.isfinite(pcm).all():
                raise ValueError("audio for Mp4Writer contains NaN or infinite samples")
            rate = sample_rate
            if rate not in _AAC_SAMPLE_RATES:
                pcm, rate = resample(pcm, rate, 48000), 48000
            self._audio = np.clip(pcm, -1.0, 1.0)
            self._audio_rate = rate
            self._audio_stream = self._container.add_stream("aac", rate=rate, layout="mono")
            self._audio_stream.time_base = Fraction(1, rate)
            self._audio_stream.codec_context.time_base = Fraction(1, rate)
            self._audio_stream.bit_rate = 96000 if rate <= 24000 else 128000

    # -- context manager
    def __enter__(self) -> Mp4Writer:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close()

    def write(self, frame: np.ndarray) -> None:
        if self._closed:
            raise RuntimeError("Mp4Writer is closed")
        frame = np.asarray(frame)
        if frame.shape != (self.height, self.width, 3) or frame.dtype != np.uint8:
            raise ValueError(
                f"frame must be uint8 [{self.height}, {self.width}, 3], got {frame.dtype} {list(frame.shape)}"
            )
        if self.out_width != self.width or self.out_height != self.height:
            frame = np.pad(
                frame, ((0, self.out_height - self.height), (0, self.out_width - self.width), (0, 0)), mode="edge"
            )
        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        vf.pts = self.frames_written
        vf.time_base = Fraction(1, self.fps)
        for packet in self._video.encode(vf):
            self._container.mux(packet)
        self.frames_written += 1
        if self._audio is not None:
            # Keep the audio a frame ahead so the muxer can interleave the two tracks.
            end = min(self._audio.size, (self.frames_written + 1) * self._audio_rate // self.fps)
            self._write_audio_until(end)

    def _write_audio_until(self, end: int) -> None:
        chunk = 1024  # AAC frame size
        while self._audio_pos < end:
            stop = min(end, self._audio_pos + chunk)
            if stop - self._audio_pos < chunk and end < self._audio.size:
                break  # wait for a full AAC frame unless this is the tail
            samples = self._audio[self._audio_pos : stop]
            af = av.AudioFrame.from_ndarray(samples[None, :], format="fltp", layout="mono")
            af.sample_rate = self._audio_rate
            af.time_base = Fraction(1, self._audio_rate)
            af.pts = self._audio_pos
            for packet in self._audio_stream.encode(af):
                self._container.mux(packet)
            self._audio_pos = stop

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            for packet in self._video.encode(None):
                self._container.mux(packet)
            if self._audio is not None:
                self._write_audio_until(self._audio.size)
                for packet in self._audio_stream.encode(None):
                    self._container.mux(packet)
        finally:
            self._container.close()



"""Video-driven reenactment, offline: photos of a person moved by the face in a driving video → mp4.

    report = reenact_file(["me.jpg"], "driver.mp4", "out.mp4")         # options: see ReenactOptions

Steps: the driving video is decoded once and tracked (MediaPipe, video mode) at the output rate, FPS; its
motion is encoded against the driver's neutral frame (`engine.motion.driver`; by default the driving frame
whose mouth opening is nearest the photo's, so a driver caught mid-word in its first frame does not make
every closed mouth "more closed than neutral"), causally smoothed, decoded
onto the primary photo's landmarks and rendered by the few-shot renderer (`engine.motion.few_shot`), with
the learned mouth refiner applied from the reference nearest each frame. The driving video's audio is
muxed in, cut to the video's length.

What the driving video may be (each rule is tested in tests/engine/runtime/test_reenact.py):
- any frame rate: the output is always FPS; each output frame shows the motion of the source frame at its
  centre time, so the duration is kept;
- no face in any frame, or none in the chosen neutral frame → InputError;
- a face lost mid-clip (or missing at the start): those frames hold the motion of the last frame with a face
  (of the first face, at the start); the report counts them;
- no audio track, or one that cannot be decoded: a silent mp4, and the report says so (`audio` False).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np

from livehead.engine.common.constants import FPS
from livehead.engine.common.errors import InputError
from livehead.engine.media.audio_video import Mp4Writer, load_audio, load_image
from livehead.engine.model.mouth_refiner import MouthRefiner, load_mouth_refiner, neutral_mouth_crop, refine_frame
from livehead.engine.motion import mesh
from livehead.engine.motion.driver import DEFAULT_SMOOTHING, MotionSmoother, encode_driving
from livehead.engine.motion.few_shot import FewShotRenderer
from livehead.engine.motion.photo import DEFAULT_MAX_SIDE, prepare_photo
from livehead.engine.motion.space import MotionSpace, default_motion_space
from livehead.engine.motion.tracker import FaceTracker

AUDIO_RATE = 48_000  # Hz: the driving video's audio is kept at this rate in the output
NEUTRAL_TOLERANCE = 0.005  # IOD: driving frames this close to the best mouth match count as equally good


@dataclass(frozen=True)
class ReenactOptions:
    neutral_frame: int | None = None  # the driver's neutral (source frame index); None: the one matching the photo
    mode: str = "relative"  # "relative" or "absolute" (engine.motion.driver)
    smoothing: float = DEFAULT_SMOOTHING  # 0 (none) .. 1 (strongest), causal
    max_side: int = DEFAULT_MAX_SIDE  # the output's long side (the primary photo's, at most)
    refine_mouth: bool = True  # apply the learned mouth refiner


@dataclass
class DrivingTrack:
    """The driving video tracked at the output rate: landmarks float64 [F, 478, 2] px (frames without a face
    hold the nearest earlier face), found bool [F], the neutral landmarks [478, 2] and its source index."""

    landmarks: np.ndarray
    found: np.ndarray
    neutral: np.ndarray
    neutral_frame: int
    source_fps: float
    source_frames: int


@dataclass
class ReenactReport:
    frames: int
    source_fps: float
    source_frames: int
    frames_without_face: int
    neutral_frame: int
    audio: bool
    references: int
    reference_use: list[float]  # mean blend weight of each reference over the clip
    wall_seconds: float
    notes: list[str] = field(default_factory=list)


def output_frame_sources(n_source: int, source_fps: float, fps: float = FPS) -> np.ndarray:
    """For a video of n_source frames at source_fps: the source index each output frame at `fps` shows (the
    one at its centre time) → int [round(n_source · fps / source_fps)] (at least 1)."""
    n_out = max(1, round(n_source * fps / source_fps))
    return np.minimum(np.floor((np.arange(n_out) + 0.5) * source_fps / fps).astype(np.int64), n_source - 1)


def video_frames(path: str | Path) -> tuple[Iterator[np.ndarray], float]:
    """A video's frames as a lazy iterator of uint8 RGB [H, W, 3] and its frame rate (FPS when it gives none);
    InputError for a missing or unreadable file or one without video."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"driving video not found: {path}")
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as err:
        raise InputError(f"cannot read the driving video {path} ({err}); pass an mp4, mpg, mov or webm clip") from None
    if not container.streams.video:
        container.close()
        raise InputError(f"no video stream in {path}; the driving video must show a face")
    stream = container.streams.video[0]
    rate = stream.average_rate or stream.guessed_rate
    fps = float(rate) if rate and float(rate) > 0 else float(FPS)

    def frames() -> Iterator[np.ndarray]:
        with container:
            try:
                for frame in container.decode(stream):
                    yield frame.to_ndarray(format="rgb24")
            except av.error.FFmpegError:
                return  # a damaged tail: keep what decoded

    return frames(), fps


def matching_neutral(landmarks: np.ndarray, found: np.ndarray, photo_neutral: np.ndarray) -> int:
    """The output frame whose mouth opening is nearest the photo's (the earliest within NEUTRAL_TOLERANCE of the
    nearest): landmarks [F, 478, 2] px, found bool [F], the photo's neutral [478, 2] px → frame index."""
    gap = np.abs(np.asarray(mesh.mouth_opening(landmarks)) - float(mesh.mouth_opening(photo_neutral[None])[0]))
    gap = np.where(found, gap, np.inf)
    return int(np.argmax(gap <= gap.min() + NEUTRAL_TOLERANCE))


def track_driving(frames: Iterable[np.ndarray], source_fps: float, neutral_frame: int | None = None,
                  progress: bool = False, photo_neutral: np.ndarray | None = None) -> DrivingTrack:
    """Track source frames (uint8 RGB [H, W, 3] at source_fps) at the output rate FPS; see the module's rules.
    neutral_frame None: the frame matching photo_neutral [478, 2] px (`matching_neutral`), or without it the
    first frame with a face."""
    from tqdm import tqdm

    if neutral_frame is not None and neutral_frame < 0:
        raise InputError(f"--neutral-frame must be 0 or more, got {neutral_frame}")
    per_source: dict[int, np.ndarray | None] = {}  # tracked landmarks [478, 3] of the source frames used
    n_source, j, frame = 0, 0, None
    with FaceTracker() as track, tqdm(unit="frame", desc="track", disable=not progress) as bar:
        for i, frame in enumerate(frames):
            n_source = i + 1
            if int(np.floor((j + 0.5) * source_fps / FPS)) == i or i == neutral_frame:
                per_source[i] = track(frame)
                bar.update(1)
            while int(np.floor((j + 0.5) * source_fps / FPS)) <= i:
                j += 1
        if n_source == 0:
            raise InputError("the driving video has no frames")
        if n_source - 1 not in per_source:  # the clip's last output frames may show its last source frame
            per_source[n_source - 1] = track(frame)
    sources = output_frame_sources(n_source, source_fps)
    if neutral_frame is not None and neutral_frame >= n_source:
        raise InputError(f"--neutral-frame {neutral_frame} is past the driving video's last frame ({n_source - 1})")
    found = np.array([per_source.get(int(s)) is not None for s in sources])
    if not found.any():
        raise InputError("no face found in any frame of the driving video; use a clip where one face is clearly "
                         "visible")
    last = per_source[int(sources[int(np.argmax(found))])]
    held = []
    for s in sources:
        lm = per_source.get(int(s))
        last = last if lm is None else lm
        held.append(last[:, :2])
    landmarks = np.stack(held).astype(np.float64)
    if neutral_frame is None:
        chosen = int(np.argmax(found)) if photo_neutral is None else matching_neutral(landmarks, found, photo_neutral)
        neutral_frame = int(sources[chosen])
    elif per_source.get(neutral_frame) is None:
        raise InputError(f"no face found in the driving video's frame {neutral_frame}; choose another --neutral-frame "
                         "with the face clearly visible")
    return DrivingTrack(landmarks=landmarks, found=found, neutral=per_source[neutral_frame][:, :2].astype(np.float64),
                        neutral_frame=neutral_frame, source_fps=source_fps, source_frames=n_source)


def driving_audio(path: str | Path, seconds: float) -> tuple[np.ndarray | None, str | None]:
    """The driving video's audio, float32 mono at AUDIO_RATE cut to `seconds`, or (None, why) when it has none
    that decodes."""
    with av.open(str(path)) as container:
        if not container.streams.audio:
            return None, "the driving video has no audio track: the output is silent"
    try:
        pcm = load_audio(path, sample_rate=AUDIO_RATE)
    except InputError as err:
        return None, f"the driving video's audio cannot be used ({err}): the output is silent"
    return pcm[: int(round(seconds * AUDIO_RATE))], None


class Reenactor:
    """Photos of one person (the primary first) rendered at driving motion, frame by frame (also the engine
    part of a future live camera driver: feed it `MotionDriver.push` motions)."""

    def __init__(self, images: list[np.ndarray], max_side: int = DEFAULT_MAX_SIDE, space: MotionSpace | None = None,
                 refiner: MouthRefiner | str | None = "shipped"):
        """images: uint8 RGB photos, each checked and prepared by prepare_photo (InputError naming which)."""
        self.space = space or default_motion_space()
        photos = []
        for k, image in enumerate(images):
            try:
                photos.append(prepare_photo(image, max_side))
            except InputError as err:
                raise InputError(f"photo {k + 1}: {err}" if len(images) > 1 else str(err)) from None
        self.few = FewShotRenderer(photos, max_side, self.space)
        self.refiner = load_mouth_refiner() if isinstance(refiner, str) else refiner
        self.mouth_crops = [neutral_mouth_crop(p.image, p.landmarks) for p in self.few.photos]

    @property
    def neutral(self) -> np.ndarray:
        return self.few.neutral

    def render(self, motion: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Motion [M] → (uint8 [H, W, 3], reference weights [R])."""
        moved = self.space.decode(motion, self.few.neutral)[0]
        frame, w = self.few.render(moved)
        near = int(np.argmax(w))
        frame = refine_frame(self.refiner, frame, moved, self.mouth_crops[near], self.few.photos[near].landmarks)
        return frame, w


def driving_motion(track: DrivingTrack, space: MotionSpace, photo_neutral: np.ndarray, mode: str,
                   smoothing: float) -> np.ndarray:
    """The tracked driver → smoothed motion [F, M] for a photo with neutral landmarks [478, 2] px."""
    motion = encode_driving(space, track.landmarks, track.neutral, photo_neutral, mode)
    return MotionSmoother(smoothing).filter_sequence(motion)


def reenact_file(image_paths: list[str | Path], video_path: str | Path, out_path: str | Path,
                 options: ReenactOptions | None = None, progress: bool = True,
                 refiner: MouthRefiner | str | None = "shipped") -> ReenactReport:
    """Render the photos (the primary first) moved by the driving video's face to out_path (H.264 + AAC)."""
    from tqdm import tqdm

    opts = options or ReenactOptions()
    t0 = time.perf_counter()
    MotionSmoother(opts.smoothing)  # bad smoothing fails before any work
    if not image_paths:
        raise InputError("give at least one --image")
    reenactor = Reenactor([load_image(p) for p in image_paths], opts.max_side, refiner=refiner)
    frames, fps = video_frames(video_path)
    track = track_driving(frames, fps, opts.neutral_frame, progress, photo_neutral=reenactor.neutral)
    motion = driving_motion(track, reenactor.space, reenactor.neutral, opts.mode, opts.smoothing)
    n = len(motion)
    pcm, audio_note = driving_audio(video_path, n / FPS)
    weights = np.zeros(len(reenactor.few.photos))
    try:
        with Mp4Writer(out_path, fps=FPS, width=reenactor.few.width, height=reenactor.few.height, audio=pcm,
                       sample_rate=AUDIO_RATE) as writer:
            for m in tqdm(motion, unit="frame", desc="reenact", disable=not progress):
                frame, w = reenactor.render(m)
                weights += w
                writer.write(frame)
    except BaseException:
        if not Path(out_path).is_dir():
            Path(out_path).unlink(missing_ok=True)  # never leave a truncated video behind
        raise
    notes = [audio_note] if audio_note else []
    lost = int((~track.found).sum())
    if lost:
        notes.append(f"{lost} of {n} frames showed no face: they hold the last face's motion")
    return ReenactReport(frames=n, source_fps=fps, source_frames=track.source_frames, frames_without_face=lost,
                         neutral_frame=track.neutral_frame, audio=pcm is not None, references=len(weights),
                         reference_use=[round(float(x), 3) for x in weights / n],
                         wall_seconds=time.perf_counter() - t0, notes=notes)

"""`livehead live`: the avatar driven by a microphone, a camera, or files played as them, in real time, locally.

    livehead live --mic                                  # window when a display exists, Ctrl-C or close to stop
    livehead live --mic --seconds 10 --out me.mp4        # no display needed: record the avatar + the mic
    livehead live --audio speech.wav --out out.mp4       # a file as a simulated mic, paced in real time
    livehead live --camera 0                             # webcam 0 moves head, eyes and mouth (motion tier)
    livehead live --camera 0 --mic                       # the webcam moves head and eyes, the voice the mouth
    livehead live --camera me.mp4 --no-window --out out.mp4   # a video file as a simulated webcam

No browser, no WebRTC: one `Session` fed 20 ms blocks as they are captured, for quick checks and
latency measurements on a workstation. Threads:

    audio source (sounddevice callback, or a paced file / silence reader) → bounded block queue
    generator: push_audio → clips → frames (latency stamped) → mp4 writer / display queue
    camera (--camera): reader (OpenCV webcam, or a paced video file) → newest frame → tracker (MediaPipe)
        → motion stamped on the session's CameraTimeline (`server/desktop/camera.py`)
    main: window (tkinter + PIL.ImageTk) showing each frame when due, or the periodic stats lines

Latency of a frame = when it is ready − when the audio at its presentation time was captured
(mouth-to-frame, compute and audio look-ahead included). The window shows frames with one playout
delay (the first frame's latency, raised if a later frame comes late), so motion plays smoothly;
"screen" latency = that playout delay.

Camera timing: a camera frame captured at monotonic time w is stamped with the session-timeline time of
the audio captured at w (`CaptureClock.seconds_at`), so output frame k shows the face the camera saw
while the audio of frame k was being captured. `--camera` alone runs the session on paced silence (the
camera then drives everything; a file camera ends the run when it ends); with `--mic` / `--audio` the
camera moves head pose and eyelids and the voice the mouth (`engine.motion.driver.combine_camera`).
Until the camera shows a face the avatar stays at rest (beside a voice, it follows the voice alone); a
face lost later holds its last motion.

The microphone needs the optional `live` extra (`pip install 'livehead[live]'`: sounddevice, which
needs the PortAudio library, e.g. `apt-get install libportaudio2`); the camera uses OpenCV, which
mediapipe installs.
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import queue
import sys
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from livehead.engine.common.errors import InputError
from livehead.engine.media.audio_video import AudioResampleStream, Mp4Writer, load_audio, load_image
from livehead.engine.model.config import ModelConfig
from livehead.engine.motion.driver import CameraTimeline
from livehead.engine.runtime.portrait import portrait_for
from livehead.engine.runtime.runners import resolve_device
from livehead.engine.runtime.session import Session, prepare_avatar
from livehead.server.backends.runners import make_runners, motion_controls, print_seeded_note
from livehead.server.desktop.camera import CameraReader, CameraTracker, open_camera

BLOCK_SECONDS = 0.02  # one push = 20 ms of audio, as a browser / WebRTC frame
MAX_QUEUED_SECONDS = 10.0  # audio waiting for a slow generator beyond this is dropped (and counted)
STATS_EVERY_SECONDS = 1.0
DISPLAY_MIN_SIDE = 384  # the window upscales small presets (tiny = 128²) to at least this
PLAYOUT_MARGIN_SECONDS = 0.02
_END = object()


# ------------------------------------------------------------------------------------------ clock


class CaptureClock:
    """Maps a sample index of the session's 16 kHz timeline to the wall time it was captured, and back.

    Each pushed block logs (end sample index, monotonic time its last sample was captured); a
    sample's capture time is interpolated back from the block that holds it. The inverse
    (`seconds_at`: a capture time → timeline seconds) stamps camera frames from the tracker's thread,
    hence the lock.
    """

    def __init__(self, sample_rate: int):
        self.rate = sample_rate
        self.ends: list[int] = []
        self.times: list[float] = []
        self.lock = threading.Lock()

    def add(self, end_index: int, captured_at: float) -> None:
        with self.lock:
            self.ends.append(end_index)
            self.times.append(captured_at)

    def time_of(self, index: int) -> float | None:
        with self.lock:
            if not self.ends:
                return None
            k = min(bisect.bisect_right(self.ends, index), len(self.ends) - 1)
            return self.times[k] - (self.ends[k] - index) / self.rate

    def seconds_at(self, captured_at: float) -> float | None:
        """The timeline time (s) of the audio captured at monotonic time `captured_at`; None before any
        audio. Interpolated within the first block that ends at or after it; past the newest block
        (captured but not pushed yet) extrapolated at the audio's real-time rate."""
        with self.lock:
            if not self.times:
                return None
            k = min(bisect.bisect_left(self.times, captured_at), len(self.times) - 1)
            return (self.ends[k] - (self.times[k] - captured_at) * self.rate) / self.rate

    def forget_before(self, index: int) -> None:
        with self.lock:
            k = bisect.bisect_left(self.ends, index) - 1
            if k > 0:
                del self.ends[:k], self.times[:k]


# ----------------------------------------------------------------------------------------- sources


class FileSource:
    """Plays a decoded file as a microphone: block k is delivered when its last sample would have been
    captured (t0 + (k+1)·20 ms), from its own thread, stamped with that time (so a busy machine that wakes
    the thread late delays the block but does not move the timeline)."""

    def __init__(self, pcm: np.ndarray, rate: int, out: BlockQueue, seconds: float | None):
        if seconds is not None:
            pcm = pcm[: int(seconds * rate)]
        self.pcm, self.rate, self.out = pcm, rate, out
        self.block = int(BLOCK_SECONDS * rate)
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, name="livehead-file-mic", daemon=True)
        self.duration: float | None = len(pcm) / rate
        self.t0: float | None = None  # monotonic time the first sample was due

    def start(self) -> None:
        self.thread.start()

    def _blocks(self):
        """float32 mono blocks [≤ block] at self.rate, in order."""
        for start in range(0, len(self.pcm), self.block):
            yield self.pcm[start:start + self.block]

    def _run(self) -> None:
        self.t0 = time.monotonic()
        sent = 0
        for chunk in self._blocks():
            sent += len(chunk)
            due = self.t0 + sent / self.rate
            delay = due - time.monotonic()
            if delay > 0 and self.stop_event.wait(delay):
                break
            if self.stop_event.is_set():
                break
            self.out.put(chunk, self.rate, due)
        self.out.end()

    def stop(self) -> None:
        """Stop delivering (the stream then ends); callable from any thread, more than once."""
        self.stop_event.set()
        if self.thread.ident is not None and self.thread is not threading.current_thread():  # started
            self.thread.join(timeout=2)


class SilenceSource(FileSource):
    """Silence paced like a microphone, for `--camera` alone: `seconds` of it, or until `end_at` or `stop`
    (None), so the same session pipeline runs and the camera drives every frame."""

    def __init__(self, rate: int, out: BlockQueue, seconds: float | None):
        super().__init__(np.zeros(0, np.float32), rate, out, None)
        self.seconds = seconds
        self.duration = seconds
        self.end_time: float | None = None
        self.thread.name = "livehead-silence"

    def end_at(self, end_time: float) -> None:
        """End the silence at monotonic time `end_time` (a camera file's end), however late this thread runs."""
        self.end_time = end_time

    def _limit(self) -> int | None:
        """Samples to deliver in all; None: until stopped."""
        limits = [] if self.seconds is None else [int(self.seconds * self.rate)]
        if self.end_time is not None:
            limits.append(max(0, round((self.end_time - self.t0) * self.rate)))
        return min(limits) if limits else None

    def _blocks(self):
        sent = 0
        while (limit := self._limit()) is None or sent < limit:
            n = self.block if limit is None else min(self.block, limit - sent)
            sent += n
            yield np.zeros(n, np.float32)


class MicSource:
    """The microphone through sounddevice: 20 ms float32 mono blocks at the device's own rate."""

    def __init__(self, out: BlockQueue, device: str | None, seconds: float | None):
        sd = import_sounddevice()
        if device is not None and device.isdigit():
            device = int(device)
        try:
            info = sd.query_devices(device, kind="input")
        except (sd.PortAudioError, ValueError) as err:
            raise InputError(f"no usable microphone ({_first_line(err)}); plug one in, pick one with --input-device "
                             f"(list: python -m sounddevice), or use --audio FILE to simulate one") from None
        self.sd, self.out, self.seconds = sd, out, seconds
        self.rate = int(info["default_samplerate"]) or 48000
        self.name = info["name"]
        self.captured = 0
        self.overflows = 0
        self.stopped = False
        try:
            self.stream = sd.InputStream(device=device, channels=1, samplerate=self.rate, dtype="float32",
                                         blocksize=int(BLOCK_SECONDS * self.rate), callback=self._callback)
        except sd.PortAudioError as err:
            raise InputError(f"cannot open microphone {self.name!r}: {_first_line(err)}") from None

    def _callback(self, indata, frames, time_info, status) -> None:
        if status.input_overflow:
            self.overflows += 1
        take = frames
        if self.seconds is not None:
            take = min(frames, int(round(self.seconds * self.rate)) - self.captured)
            if take <= 0:
                return
        self.captured += take
        self.out.put(indata[:take, 0].copy(), self.rate, time.monotonic())
        if self.seconds is not None and self.captured >= int(round(self.seconds * self.rate)):
            self.out.end()

    def start(self) -> None:
        self.stream.start()

    def stop(self) -> None:
        if self.stopped:  # idempotent: the window's close and the final cleanup both call it
            return
        self.stopped = True
        try:
            self.stream.stop()
            self.stream.close()
        finally:
            self.out.end()


def import_sounddevice():
    """sounddevice, or an InputError naming the extra (and PortAudio, which it loads at import)."""
    try:
        import sounddevice
    except ImportError:
        raise InputError("livehead live --mic needs the optional 'live' extra: pip install 'livehead[live]' "
                         "(or use --audio FILE to simulate a microphone)") from None
    except OSError as err:  # sounddevice is there, the PortAudio shared library is not
        raise InputError(f"livehead live --mic: sounddevice cannot load PortAudio ({_first_line(err)}); install it "
                         f"(Debian/Ubuntu: apt-get install libportaudio2) with the 'live' extra: "
                         f"pip install 'livehead[live]'; or use --audio FILE to simulate a microphone") from None
    return sounddevice


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


class BlockQueue:
    """Audio blocks from the capture side to the generator; bounded by MAX_QUEUED_SECONDS of audio."""

    def __init__(self):
        self.q: queue.SimpleQueue = queue.SimpleQueue()
        self.lock = threading.Lock()
        self.queued_seconds = 0.0
        self.dropped_seconds = 0.0
        self.ended = False

    def put(self, pcm: np.ndarray, rate: int, captured_at: float) -> None:
        seconds = len(pcm) / rate
        with self.lock:
            if self.ended:
                return
            if self.queued_seconds + seconds > MAX_QUEUED_SECONDS:
                self.dropped_seconds += seconds  # the generator is far behind real time
                return
            self.queued_seconds += seconds
        self.q.put((pcm, rate, captured_at))

    def end(self) -> None:
        with self.lock:
            if self.ended:
                return
            self.ended = True
        self.q.put(_END)

    def get(self, timeout: float | None):
        item = self.q.get(timeout=timeout)
        if item is not _END:
            with self.lock:
                self.queued_seconds -= len(item[0]) / item[1]
        return item


# ------------------------------------------------------------------------------------------ stats


@dataclass
class LiveStats:
    """Figures of one live run; times in seconds (monotonic clock)."""

    fps: int
    started: float | None = None  # capture time of the first audio sample
    first_frame_at: float | None = None
    last_frame_at: float | None = None
    frames: int = 0
    audio_seconds: float = 0.0
    latencies: deque = field(default_factory=lambda: deque(maxlen=10_000))
    recent: deque = field(default_factory=lambda: deque(maxlen=50))  # the last 2 s at 25 fps
    playout_delay: float | None = None
    late_frames: int = 0
    busy_seconds: float = 0.0  # generator time spent on clips and encoding (not waiting for audio)

    def frame(self, latency: float, now: float) -> None:
        if self.first_frame_at is None:
            self.first_frame_at = now
        self.last_frame_at = now
        self.frames += 1
        self.latencies.append(latency)
        self.recent.append(latency)

    def summary(self, dropped_seconds: float = 0.0) -> dict:
        lat = np.array(self.latencies) * 1000 if self.latencies else np.zeros(1)
        wall = (self.last_frame_at - self.started) if self.started is not None and self.last_frame_at else 0.0
        return {
            "frames": self.frames,
            "audio_seconds": round(self.audio_seconds, 3),
            "wall_seconds": round(wall, 3),
            "wall_over_audio": round(wall / self.audio_seconds, 3) if self.audio_seconds else None,
            "first_frame_delay_ms": round((self.first_frame_at - self.started) * 1000, 1)
            if self.first_frame_at is not None and self.started is not None else None,
            "latency_ms": {"min": round(float(lat.min()), 1), "median": round(float(np.median(lat)), 1),
                           "p95": round(float(np.percentile(lat, 95)), 1), "max": round(float(lat.max()), 1)},
            "playout_delay_ms": round(self.playout_delay * 1000, 1) if self.playout_delay is not None else None,
            "late_frames": self.late_frames,
            "busy_seconds": round(self.busy_seconds, 3),
            "dropped_audio_seconds": round(dropped_seconds, 3),
        }

    def line(self, now: float, behind: float) -> str:
        t = now - self.started if self.started is not None else 0.0
        ffd = f"{(self.first_frame_at - self.started) * 1000:.0f} ms" if self.first_frame_at else "-"
        recent = list(self.recent)  # one C-level copy: the generator thread appends meanwhile
        lat = f"{np.median(recent) * 1000:.0f} ms (max {max(recent) * 1000:.0f})" if recent else "-"
        return (f"live {t:6.1f} s | {self.frames:5d} frames | latency {lat} | first frame {ffd} | "
                f"audio queued {max(behind, 0.0) * 1000:.0f} ms")


# -------------------------------------------------------------------------------------- generator


class Generator:
    """Builds the session, then feeds it captured blocks and collects frames, all in its own thread.

    Every torch call of the run happens on this one thread: with model preparation on the main thread
    and clips on this one (two OpenMP thread teams), tiny clips took ~0.42 s instead of ~0.28 s on 2 cores.
    """

    def __init__(self, build, blocks: BlockQueue, stats: LiveStats, writer, shown: queue.Queue | None):
        self.build, self.blocks, self.stats, self.writer, self.shown = build, blocks, stats, writer, shown
        self.session = None
        self.rate = 0
        self.clock: CaptureClock | None = None
        self.ready = threading.Event()  # set once the session is built and warm (or building failed)
        self.resamplers: dict = {}  # capture rate → AudioResampleStream to the session's rate
        self.pushed = 0  # samples in the session's timeline
        self.captured: list[np.ndarray] = []  # mic audio kept for the recording (16 kHz)
        self.keep_audio = False
        self.error: BaseException | None = None
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, name="livehead-generator", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _push(self, item) -> None:
        """One captured block → the session's rate (the resampler may hold a few samples back) → pushed,
        its samples' capture time logged."""
        pcm, rate, captured_at = item
        if self.stats.started is None:
            self.stats.started = captured_at - len(pcm) / rate
        self.stats.audio_seconds += len(pcm) / rate
        if rate != self.rate:
            pcm = self.resamplers.setdefault(rate, AudioResampleStream(rate, to_rate=self.rate)).push(pcm)
        if len(pcm) == 0:
            return
        self.session.push_audio(pcm, self.rate)
        self.pushed += len(pcm)
        self.clock.add(self.pushed, captured_at)
        if self.keep_audio:
            self.captured.append(pcm)

    def _emit(self) -> None:
        fps = self.session.cfg.stream.fps
        for frame in self.session.frames():
            now = time.monotonic()
            index = frame.index * self.rate // fps
            at = self.clock.time_of(index)
            latency = now - at if at is not None else 0.0
            self.stats.frame(latency, now)
            if self.writer is not None:
                self.writer.write(frame.image)
            if self.shown is not None:
                self.shown.put((at, frame.image))
            self.clock.forget_before(index)

    def _run(self) -> None:
        try:
            self.session = self.build()
            self.rate = self.session.sample_rate
            self.clock = CaptureClock(self.rate)
            self.ready.set()
            ended = False
            while not ended:
                item = self.blocks.get(timeout=None)
                busy_from = time.monotonic()
                while True:  # take everything already captured before computing a clip
                    if item is _END:
                        ended = True
                        break
                    self._push(item)
                    try:
                        item = self.blocks.get(timeout=0)
                    except queue.Empty:
                        break
                self._emit()
                self.stats.busy_seconds += time.monotonic() - busy_from
            now = time.monotonic()
            for stream in self.resamplers.values():  # the resamplers' last few samples
                self._push((stream.flush(), self.rate, now))
            self.session.flush()
            self._emit()
            self.stats.busy_seconds += time.monotonic() - now
        except BaseException as err:  # reported by the main thread
            self.error = err
        finally:
            self.ready.set()
            self.done.set()


# ---------------------------------------------------------------------------------------- display


def display_available() -> bool:
    if sys.platform in ("win32", "darwin"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def open_window(title: str):
    """A tkinter root, or None when tkinter or the display cannot be used."""
    try:
        import tkinter

        from PIL import ImageTk  # noqa: F401  (Pillow built without Tk support fails here)

        root = tkinter.Tk()
    except Exception:  # no tkinter, no Tk in Pillow, or the display refused the connection
        return None
    root.title(title)
    return root


def run_window(root, gen: Generator, stats: LiveStats, stop, quiet: bool) -> None:
    """Show each frame at its capture time + playout delay; stats in the title; returns when done/closed."""
    import tkinter

    from PIL import Image, ImageTk

    label = tkinter.Label(root, bg="black")
    label.pack()
    status = tkinter.Label(root, font=("TkFixedFont", 9), anchor="w")
    status.pack(fill="x")
    pending: deque = deque()
    state = {"photo": None, "last_print": time.monotonic(), "closing": False}

    def close() -> None:  # window closed: stop capturing, leave at once (the recording gets its tail)
        state["closing"] = True
        stop()

    root.protocol("WM_DELETE_WINDOW", close)

    def show(image: np.ndarray) -> None:
        side = max(image.shape[0], DISPLAY_MIN_SIDE)
        pil = Image.fromarray(image).resize((side, side), Image.Resampling.BILINEAR)
        state["photo"] = ImageTk.PhotoImage(pil)
        label.configure(image=state["photo"])

    show(gen.session.avatar.image)  # the portrait crop until the first frame is due

    def tick() -> None:
        now = time.monotonic()
        while True:
            try:
                pending.append(gen.shown.get_nowait())
            except queue.Empty:
                break
        image = None
        while pending:
            at, frame = pending[0]
            lateness = now - (at or now)
            if stats.playout_delay is None:
                stats.playout_delay = lateness + PLAYOUT_MARGIN_SECONDS
            if lateness < stats.playout_delay:
                break
            if lateness > stats.playout_delay + 1.0 / stats.fps:  # came late: play out later from now on
                stats.late_frames += 1
                stats.playout_delay = lateness
            image = frame
            pending.popleft()
        if image is not None:
            show(image)
        if now - state["last_print"] >= STATS_EVERY_SECONDS:
            state["last_print"] = now
            text = stats.line(now, gen.blocks.queued_seconds)
            if stats.playout_delay is not None:
                text += f" | screen {stats.playout_delay * 1000:.0f} ms"
            status.configure(text=text)
            if not quiet:
                print(text, flush=True)
        if state["closing"] or (gen.done.is_set() and not pending):
            root.destroy()
            return
        root.after(5, tick)

    root.after(5, tick)
    root.mainloop()


# ------------------------------------------------------------------------------------------- main


def _mux_recording(video_only: Path, pcm: np.ndarray, rate: int, out: Path) -> None:
    """Copy the H.264 stream of `video_only` into `out` and add `pcm` (float32 mono) as AAC: the mic's
    audio is known only when the recording ends."""
    from fractions import Fraction

    import av

    aac_frame = 1024
    with av.open(str(video_only)) as src, \
            av.open(str(out), mode="w", format="mp4", options={"movflags": "+faststart"}) as dst:
        vin = src.streams.video[0]
        vout = dst.add_stream_from_template(vin)
        aout = dst.add_stream("aac", rate=rate, layout="mono")
        aout.time_base = Fraction(1, rate)
        for packet in src.demux(vin):
            if packet.dts is None:  # the demuxer's final flush packet
                continue
            packet.stream = vout
            dst.mux(packet)
        pcm = np.clip(np.ascontiguousarray(pcm, dtype=np.float32), -1.0, 1.0)
        for start in range(0, len(pcm), aac_frame):
            frame = av.AudioFrame.from_ndarray(pcm[None, start:start + aac_frame], format="fltp", layout="mono")
            frame.sample_rate, frame.time_base, frame.pts = rate, Fraction(1, rate), start
            dst.mux(aout.encode(frame))
        dst.mux(aout.encode(None))


def _check_outputs(args: argparse.Namespace) -> tuple[Path | None, bool]:
    """--out and the window: (the mp4 path or None, whether a window is wanted); InputError when neither works."""
    out = Path(args.out) if args.out else None
    if out is not None:
        if out.suffix.lower() != ".mp4":
            raise InputError(f"--out must name an .mp4 file, got {args.out!r}")
        if not out.parent.is_dir():
            raise InputError(f"output directory does not exist: {out.parent}; create it or choose another --out")
    want_window = not args.no_window and display_available()
    if not want_window and out is None:
        why = "--no-window was given" if args.no_window else "no display found (DISPLAY / WAYLAND_DISPLAY unset)"
        raise InputError(f"{why}; pass --out FILE.mp4 to record the avatar instead")
    return out, want_window


def _check_camera_options(args: argparse.Namespace, cfg: ModelConfig) -> None:
    if not (args.audio or args.mic or args.camera):
        raise InputError("nothing drives the avatar: give --mic, --audio FILE or --camera SOURCE")
    if args.camera is None:
        return
    if cfg.motion is None:
        raise InputError(f"--camera needs a motion-tier preset (--preset motion); {cfg.name!r} renders pixels "
                         f"directly and cannot follow a face")
    smoothing = args.camera_smoothing
    if not 0.0 <= smoothing <= 1.0:
        raise InputError(f"--camera-smoothing must be between 0 (none) and 1 (strongest), got {smoothing}")


def _open_sources(args: argparse.Namespace, rate: int, blocks: BlockQueue):
    """The audio source (a file, the microphone, or silence for --camera alone) and the camera reader (or
    None); both opened, neither started. InputError for a source that cannot be opened."""
    if args.audio:
        source = FileSource(load_audio(args.audio, sample_rate=rate), rate, blocks, args.seconds)
    elif args.mic:
        source = MicSource(blocks, args.input_device, args.seconds)  # fails early: no extra / no microphone
    else:
        source = SilenceSource(rate, blocks, args.seconds)
    camera = None
    if args.camera:
        try:
            camera = open_camera(args.camera)
        except BaseException:
            source.stop()
            raise
    return source, camera


def _start_tracker(gen: Generator, camera: CameraReader, timeline: CameraTimeline,
                   smoothing: float) -> CameraTracker:
    """MediaPipe on its own thread, stamping onto the session's timeline (its CaptureClock's inverse)."""
    tracker = CameraTracker(gen.session.runners.space, timeline, gen.clock.seconds_at, smoothing, camera.fps)
    tracker.start()
    tracker.ready.wait()
    if tracker.error is not None:
        raise tracker.error
    return tracker


def _open_writer(gen: Generator, source, out: Path, fps: int, rate: int) -> Path | None:
    """The mp4 writer of the run (set on the generator); the temporary video-only path for the mic (whose
    audio is muxed in at the end), else None."""
    height, width = gen.session.avatar.image.shape[:2]
    if isinstance(source, SilenceSource):  # --camera alone: nothing to hear
        gen.writer = Mp4Writer(out, fps=fps, width=width, height=height)
        return None
    if isinstance(source, FileSource):
        gen.writer = Mp4Writer(out, fps=fps, width=width, height=height, audio=source.pcm, sample_rate=rate)
        return None
    tmp = Path(tempfile.mkstemp(suffix=".mp4", dir=out.parent, prefix=".livehead-")[1])
    gen.writer = Mp4Writer(tmp, fps=fps, width=width, height=height)
    gen.keep_audio = True
    return tmp


def _describe(args: argparse.Namespace, source, camera: CameraReader | None) -> str:
    if isinstance(source, SilenceSource):
        what = "silence (camera only" + (f", {source.duration:.2f} s)" if source.duration else ")")
    elif isinstance(source, FileSource):
        what = f"file {args.audio} as a microphone ({source.duration:.2f} s)"
    else:
        what = f"microphone {source.name!r} at {source.rate} Hz"
    if camera is not None:
        what += f" + {camera.description}, " + ("head and eyes" if not isinstance(source, SilenceSource)
                                                 else "head, eyes and mouth")
    return what


def _endless(source, camera: CameraReader | None) -> bool:
    """Whether the run lasts until the user stops it (the microphone, or a webcam alone without --seconds)."""
    if isinstance(source, MicSource):
        return True
    return isinstance(source, SilenceSource) and source.duration is None and not camera.finite


def _source_name(source) -> str:
    return "silence" if isinstance(source, SilenceSource) else "file" if isinstance(source, FileSource) else "mic"


def _wait_headless(gen: Generator, stats: LiveStats, blocks: BlockQueue, quiet: bool) -> None:
    last = time.monotonic()
    while not gen.done.wait(0.1):
        now = time.monotonic()
        if not quiet and now - last >= STATS_EVERY_SECONDS and stats.started is not None:
            last = now
            print(stats.line(now, blocks.queued_seconds), flush=True)


def cmd_live(args: argparse.Namespace) -> int:
    if args.seconds is not None and args.seconds <= 0:
        raise InputError(f"--seconds must be positive, got {args.seconds}")
    out, want_window = _check_outputs(args)
    cfg = ModelConfig.from_name(args.preset)
    if args.steps is not None:
        cfg = cfg.with_steps(args.steps)
    _check_camera_options(args, cfg)
    rate = cfg.audio.sample_rate
    blocks = BlockQueue()
    source, camera = _open_sources(args, rate, blocks)
    timeline = CameraTimeline(voice=not isinstance(source, SilenceSource)) if camera is not None else None

    device = resolve_device(args.device)
    image = load_image(args.image)

    def build() -> Session:  # runs on the generator thread
        crop = portrait_for(cfg, image, crop=not args.no_crop)
        runners = make_runners(cfg, args.backend, args.weights, args.device, args.exported, progress=False,
                               controls=motion_controls(args))
        print_seeded_note(cfg, args.weights)
        avatar = prepare_avatar(runners, crop.image, crop.mask)
        _warm_up(runners, avatar, args.seed)
        session = Session(runners, avatar, seed=args.seed)
        if timeline is not None:
            session.drive_with(timeline)
        return session

    def stop_inputs() -> None:
        source.stop()
        if camera is not None:
            camera.stop()

    root = open_window(f"livehead live ({cfg.name})") if want_window else None
    if root is None and want_window and out is None:
        stop_inputs()
        raise InputError("cannot open a window (tkinter or Pillow's ImageTk missing, or the display refused); "
                         "pass --out FILE.mp4 to record the avatar instead")
    stats = LiveStats(fps=cfg.stream.fps)
    gen = Generator(build, blocks, stats, None, queue.Queue() if root is not None else None)
    gen.start()
    gen.ready.wait()  # model, avatar and warm-up clip, before any file is created or audio captured
    tracker = None
    try:
        if gen.error is not None:
            raise gen.error
        if camera is not None:
            tracker = _start_tracker(gen, camera, timeline, args.camera_smoothing)
    except BaseException:
        stop_inputs()
        if tracker is not None:
            tracker.stop()
        if root is not None:
            root.destroy()
        raise

    tmp = _open_writer(gen, source, out, cfg.stream.fps, rate) if out is not None else None
    print(f"livehead live: {_describe(args, source, camera)}, preset {cfg.name} on {device} ({args.backend})"
          + (", window" if root is not None else "") + (f", recording to {out}" if out else "")
          + ("; Ctrl-C to stop" if _endless(source, camera) else ""), file=sys.stderr, flush=True)
    source.start()
    if camera is not None:  # a file camera alone ends the run when it ends
        camera.start(tracker.offer, on_end=source.end_at if isinstance(source, SilenceSource) else None)
    ok = False
    try:
        if root is not None:
            run_window(root, gen, stats, stop_inputs, args.quiet)
        else:
            _wait_headless(gen, stats, blocks, args.quiet)
        ok = True
    except KeyboardInterrupt:  # stop capturing; the generator finishes the tail
        ok = True
    finally:
        source.stop()
        gen.done.wait()
        if camera is not None:
            camera.stop()
            tracker.stop()
        failure = gen.error or (camera.error if camera is not None else None) or \
            (tracker.error if tracker is not None else None)
        if gen.writer is not None:
            gen.writer.close()
        if not ok or failure is not None:
            for path in (tmp, out):
                if path is not None and path.exists():
                    path.unlink()
    if failure is not None:
        raise failure
    if tmp is not None:
        pcm = np.concatenate(gen.captured) if gen.captured else np.zeros(rate // cfg.stream.fps, np.float32)
        try:
            _mux_recording(tmp, pcm, rate, out)
        finally:
            tmp.unlink(missing_ok=True)

    summary = stats.summary(blocks.dropped_seconds)
    summary.update(preset=cfg.name, device=str(device), backend=args.backend, fps=cfg.stream.fps,
                   source=_source_name(source))
    if isinstance(source, MicSource):
        summary["input_overflows"] = source.overflows  # PortAudio lost input (the machine was too busy)
    if camera is not None:
        summary["camera"] = {"source": camera.description, "smoothing": args.camera_smoothing,
                             **tracker.stats.summary()}
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1) + "\n")
    print(_final_line(summary, out, tracker), flush=True)
    return 0


def _final_line(summary: dict, out: Path | None, tracker: CameraTracker | None) -> str:
    lat = summary["latency_ms"]
    return (f"live: {summary['frames']} frames for {summary['audio_seconds']:.2f} s of audio in "
            f"{summary['wall_seconds']:.2f} s (wall/audio {summary['wall_over_audio']}, generator busy "
            f"{summary['busy_seconds']:.2f} s) | first frame "
            f"{summary['first_frame_delay_ms']} ms | mouth-to-frame latency median {lat['median']} ms, "
            f"p95 {lat['p95']} ms, max {lat['max']} ms"
            + (f" | screen {summary['playout_delay_ms']} ms" if summary["playout_delay_ms"] is not None else "")
            + (f" | dropped {summary['dropped_audio_seconds']} s of audio (slower than real time)"
               if summary["dropped_audio_seconds"] else "")
            + (f" | {tracker.stats.line()}" if tracker is not None else "")
            + (f" | wrote {out}" if out else ""))


def _warm_up(runners, avatar, seed: int) -> None:
    """One throw-away clip so the first live clip does not pay for lazy initialisation (allocator, oneDNN
    kernels, CUDA context): the latency figures are then those of the steady pipeline."""
    session = Session(runners, avatar, seed=seed)
    rate = session.sample_rate
    session.push_audio(np.zeros(rate, np.float32), rate)
    session.run_clip()

"""`livehead live`: a file played as a microphone in real time → mp4; the microphone path through a
stand-in `sounddevice` (the CI machine has no microphone and no PortAudio); clear errors without the
`live` extra or a display. `--camera`: a synthetic driving clip (the bundled portrait moved by a known
motion) played as a webcam moves the avatar alone or beside a voice; bad camera sources end with one
error line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import types

import numpy as np
import pytest

from livehead.engine.media import landmarks as L
from livehead.engine.media.audio_video import Mp4Writer, load_audio, load_image
from livehead.engine.motion.photo import prepare_photo
from livehead.engine.motion.renderer import PhotoRenderer
from livehead.engine.motion.space import N_EYES, default_motion_space
from livehead.engine.runtime.reenact import video_frames
from livehead.server.cli.main import main
from livehead.server.desktop.live import CaptureClock
from tests import ROOT
from tests.helpers import probe_mp4

SPEECH = ROOT / "engine" / "assets" / "speech.wav"
FPS = 25
ERROR = "livehead: error: "


def _headless_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _livehead(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "livehead.server.cli.main", "live", *args], cwd=ROOT,
                          env=_headless_env(),
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_live_file_as_mic_real_time_to_mp4(tmp_path):
    """The bundled 4 s clip fed in 20 ms blocks at the pace of a microphone: one frame per 40 ms of audio,
    the clip's audio muxed in, and the streaming part lasts about as long as the audio."""
    out, figures = tmp_path / "live.mp4", tmp_path / "live.json"
    duration = len(load_audio(SPEECH)) / 16000
    result = _livehead("--audio", str(SPEECH), "--out", str(out), "--json", str(figures), "--quiet")
    assert result.returncode == 0, result.stderr
    assert "live: " in result.stdout and "first frame" in result.stdout, result.stdout

    info = probe_mp4(out)
    assert abs(info["frames"] - duration * FPS) <= 1, info["frames"]
    assert info["fps"] == FPS and info["width"] == info["height"] == 256  # the motion default: the photo's own size
    assert info["audio_codec"] == "aac" and abs(info["audio_seconds"] - duration) < 0.05

    summary = json.loads(figures.read_text())
    assert summary["frames"] == info["frames"] and summary["source"] == "file"
    assert summary["audio_seconds"] == pytest.approx(duration, abs=0.02)
    # Paced like a microphone: never faster than real time.
    wall, busy = summary["wall_seconds"], summary["busy_seconds"]
    assert wall >= 0.95 * duration, f"ran faster than real time ({wall:.2f} s for {duration:.2f} s of audio)"
    # About real time: the generator waits only for audio that has not arrived yet (wall − busy ≤ the
    # audio's duration), and when it computes faster than real time the stream ends within a clip's
    # compute of the audio. Calibrated by the generator's own busy time (clips + encoding) because the
    # 2-core machine is shared: a busy neighbour can slow torch many-fold.
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    assert wall - busy <= duration + 0.5, (f"{wall:.2f} s for {duration:.2f} s of audio with {busy:.2f} s of "
                                           f"compute: idle beyond the audio (load {load:.1f}); {result.stdout}")
    if busy < 0.8 * duration:  # the machine kept up
        assert wall <= duration + 1.5, (f"{wall:.2f} s for {duration:.2f} s of audio, {busy:.2f} s busy "
                                        f"(load {load:.1f}); {result.stdout}")
    assert 0 < summary["first_frame_delay_ms"] < wall * 1000
    lat = summary["latency_ms"]
    assert 0 < lat["min"] <= lat["median"] <= lat["max"]
    assert summary["dropped_audio_seconds"] == 0


class _FakeStream:
    """sounddevice.InputStream stand-in: a 220 Hz tone at 48 kHz, delivered in real time from a thread."""

    def __init__(self, device, channels, samplerate, dtype, blocksize, callback):
        assert channels == 1 and dtype == "float32"
        self.rate, self.block, self.callback = samplerate, blocksize, callback
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        t0, k = time.monotonic(), 0
        status = types.SimpleNamespace(input_overflow=False)
        while not self.stopped.is_set():
            n = np.arange(k * self.block, (k + 1) * self.block)
            block = (0.3 * np.sin(2 * np.pi * 220.0 * n / self.rate)).astype(np.float32)[:, None]
            delay = t0 + (k + 1) * self.block / self.rate - time.monotonic()
            if delay > 0 and self.stopped.wait(delay):
                break
            self.callback(block, self.block, None, status)
            k += 1

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(timeout=2)

    def close(self) -> None:
        pass


def _fake_sounddevice(devices: bool = True) -> types.ModuleType:
    sd = types.ModuleType("sounddevice")

    class PortAudioError(Exception):
        pass

    def query_devices(device=None, kind=None):
        if not devices:
            raise PortAudioError("Error querying device -1")
        return {"name": "fake mic", "default_samplerate": 48000.0}

    sd.PortAudioError, sd.query_devices, sd.InputStream = PortAudioError, query_devices, _FakeStream
    return sd


@pytest.mark.slow
def test_live_mic_records_video_and_captured_audio(tmp_path, monkeypatch, capsys):
    """--mic through a stand-in sounddevice (48 kHz blocks, resampled to 16 kHz): --seconds 2 gives
    50 ± 1 frames and the captured audio muxed in after the recording."""
    monkeypatch.setitem(sys.modules, "sounddevice", _fake_sounddevice())
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    out = tmp_path / "mic.mp4"
    assert main(["live", "--mic", "--seconds", "2", "--out", str(out), "--quiet"]) == 0
    info = probe_mp4(out)
    assert abs(info["frames"] - 2 * FPS) <= 1, info["frames"]
    assert info["audio_codec"] == "aac" and abs(info["audio_seconds"] - 2.0) < 0.1, info["audio_seconds"]
    assert not list(tmp_path.glob(".livehead-*")), "temporary video-only recording left behind"
    assert "fake mic" in capsys.readouterr().err


def test_live_mic_without_extra_or_device_says_what_to_do(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "sounddevice", None)  # import fails: the extra is not installed
    assert main(["live", "--mic", "--out", str(tmp_path / "x.mp4")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(ERROR) and "livehead[live]" in err and "--audio" in err, err

    monkeypatch.setitem(sys.modules, "sounddevice", _fake_sounddevice(devices=False))
    assert main(["live", "--mic", "--out", str(tmp_path / "x.mp4")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(ERROR) and "microphone" in err and "--audio" in err, err
    assert not (tmp_path / "x.mp4").exists()


def test_live_needs_out_without_display(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    if sys.platform in ("win32", "darwin"):
        pytest.skip("these platforms always have a display")
    assert main(["live", "--audio", str(SPEECH)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(ERROR) and "--out" in err, err
    assert main(["live", "--audio", str(SPEECH), "--out", str(tmp_path / "x.avi")]) == 2
    assert ".mp4" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ camera

SHIFT_IOD = 0.3  # the driving clip's sideways head move, in eye-corner distances
DRIVE_FRAMES = 75  # 3 s: at rest [0, 25), moving right over 5 frames, held to 50, back over 5, at rest from 55


def _shift_schedule() -> np.ndarray:
    """The driving clip's head shift per frame [DRIVE_FRAMES], 0 .. 1 of SHIFT_IOD."""
    up = np.clip((np.arange(DRIVE_FRAMES) - 24) / 5, 0, 1)
    down = np.clip((np.arange(DRIVE_FRAMES) - 49) / 5, 0, 1)
    return up - down


@pytest.fixture(scope="module")
def driving_clip(tmp_path_factory):
    """A 3 s, 25 fps silent mp4 of the bundled portrait whose head moves right by SHIFT_IOD and back."""
    space = default_motion_space()
    renderer = PhotoRenderer(prepare_photo(load_image(ROOT / "engine" / "assets" / "portrait.png")))
    schedule = _shift_schedule()
    motion = space.neutral_motion(DRIVE_FRAMES)
    motion[:, space.k + N_EYES + 2] = SHIFT_IOD * schedule  # tau_x: head moved right, in IOD
    rendered: dict = {}
    path = tmp_path_factory.mktemp("camera") / "drive.mp4"
    height, width = renderer.image.shape[:2]
    with Mp4Writer(path, fps=FPS, width=width, height=height) as writer:
        for amount, lm in zip(schedule, space.decode(motion, renderer.neutral), strict=True):
            if amount not in rendered:  # the clip holds a few distinct poses
                rendered[amount] = renderer.render(lm)
            writer.write(rendered[amount])
    return path


def test_capture_clock_maps_capture_times_back_to_the_timeline():
    """seconds_at is time_of's inverse, interpolated inside blocks and extrapolated past the newest one."""
    clock = CaptureClock(16000)
    assert clock.seconds_at(5.0) is None
    for k in range(1, 6):  # 20 ms blocks captured from t = 100 s
        clock.add(320 * k, 100.0 + 0.02 * k)
    for index in (0, 100, 320, 1000, 1600):
        assert clock.seconds_at(clock.time_of(index)) == pytest.approx(index / 16000)
    assert clock.seconds_at(100.5) == pytest.approx(0.5)  # not pushed yet: the audio's real-time rate


@pytest.mark.slow
def test_live_camera_alone_moves_the_head(tmp_path, driving_clip):
    """--camera FILE alone: the run lasts the clip, every camera frame is tracked or dropped, and the avatar's
    nose follows the driving head right and back (the windows leave the latency and smoothing room)."""
    out, figures = tmp_path / "cam.mp4", tmp_path / "cam.json"
    result = _livehead("--camera", str(driving_clip), "--no-window", "--out", str(out), "--json", str(figures),
                       "--quiet")
    assert result.returncode == 0, result.stderr
    assert "camera" in result.stdout and "with a face" in result.stdout, result.stdout

    summary = json.loads(figures.read_text())
    cam = summary["camera"]
    assert summary["source"] == "silence" and abs(summary["frames"] - DRIVE_FRAMES) <= 2, summary
    assert abs(cam["captured"] - DRIVE_FRAMES) <= 1 and cam["tracked"] + cam["dropped"] == cam["captured"], cam
    assert cam["with_face"] == cam["tracked"] > 0 and cam["stamped"] > 0, cam
    info = probe_mp4(out)
    assert info["frames"] == summary["frames"] and info["audio_codec"] is None

    shift = _nose_shift(out)
    # Camera frame j is stamped at about j / 25 s, so the output moves with the driving clip; the windows allow
    # up to 12 frames (0.48 s) of tracking lag on a busy machine, and none ahead.
    assert np.abs(shift[:23]).max() < 0.05, shift.round(2)  # at rest until the driving head moves (frame 25)
    assert shift[42:50].min() > 0.6 * SHIFT_IOD, shift.round(2)  # moved right (driving frames 30..49)
    assert np.abs(shift[68:DRIVE_FRAMES]).max() < 0.08, shift.round(2)  # back (driving frames 55..)


def _nose_shift(path) -> np.ndarray:
    """The nose tip's x in each frame of a video, from its median over frames 5..19, in eye-corner distances
    [F]; every frame must show a face."""
    frames, _ = video_frames(path)
    tracked = L.video_landmarks(list(frames))
    assert all(lm is not None for lm in tracked)
    lm = np.stack(tracked)
    return (lm[:, L.NOSE_TIP, 0] - np.median(lm[5:20, L.NOSE_TIP, 0])) / np.median(L.eye_corner_distance(lm))


@pytest.mark.slow
def test_live_camera_beside_a_voice_follows_the_audio(tmp_path, driving_clip):
    """--camera FILE --audio speech.wav --seconds 2: the voice sets the run's length (2 s where the camera clip
    lasts 3 s) and the audio track, while the camera still moves the head."""
    out, figures = tmp_path / "both.mp4", tmp_path / "both.json"
    result = _livehead("--camera", str(driving_clip), "--audio", str(SPEECH), "--seconds", "2", "--out", str(out),
                       "--json", str(figures), "--quiet")
    assert result.returncode == 0, result.stderr
    info = probe_mp4(out)
    assert abs(info["frames"] - 2 * FPS) <= 1, info["frames"]
    assert info["audio_codec"] == "aac" and abs(info["audio_seconds"] - 2.0) < 0.05
    summary = json.loads(figures.read_text())
    assert summary["source"] == "file" and summary["frames"] == info["frames"]
    cam = summary["camera"]
    assert cam["tracked"] + cam["dropped"] == cam["captured"] and cam["with_face"] > 0, cam
    shift = _nose_shift(out)
    assert np.abs(shift[:23]).max() < 0.05 and shift[42:50].min() > 0.6 * SHIFT_IOD, shift.round(2)


@pytest.mark.slow
def test_live_camera_without_a_face_keeps_the_avatar_at_rest(tmp_path):
    """A 1 s clip of a grey wall as the camera: every frame is tracked without a face, the summary says 0 with
    a face, and the avatar stays at rest for the whole run."""
    wall = tmp_path / "wall.mp4"
    with Mp4Writer(wall, fps=FPS, width=160, height=120) as writer:
        for _ in range(FPS):
            writer.write(np.full((120, 160, 3), 128, np.uint8))
    out, figures = tmp_path / "rest.mp4", tmp_path / "rest.json"
    result = _livehead("--camera", str(wall), "--no-window", "--out", str(out), "--json", str(figures), "--quiet")
    assert result.returncode == 0, result.stderr
    cam = json.loads(figures.read_text())["camera"]
    assert cam["with_face"] == 0 and cam["without_face"] == cam["tracked"] > 0 and cam["stamped"] == 0, cam
    assert "0 with a face" in result.stdout, result.stdout
    frames, _ = video_frames(out)
    lm = np.stack(L.video_landmarks(list(frames)))
    shift = (lm[:, L.NOSE_TIP, 0] - lm[0, L.NOSE_TIP, 0]) / np.median(L.eye_corner_distance(lm))
    assert abs(len(lm) - FPS) <= 2 and np.abs(shift).max() < 0.1, shift.round(2)


@pytest.mark.parametrize("source, words", [
    ("no_such_clip.mp4", ("no such file",)),
    (str(SPEECH), ("no video stream",)),
    ("57", ("cannot open camera 57",)),
])
def test_live_bad_camera_source_is_one_error_line(tmp_path, capsys, source, words):
    out = tmp_path / "x.mp4"
    assert main(["live", "--camera", source, "--no-window", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith(ERROR)]
    assert len(lines) == 1 and "Traceback" not in err and "--camera" in lines[0], err
    for word in words:
        assert word in lines[0], lines[0]
    assert not out.exists()


def test_live_needs_an_input(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["live", "--no-window", "--out", str(tmp_path / "x.mp4")])
    assert exit_.value.code == 2 and "--camera" in capsys.readouterr().err

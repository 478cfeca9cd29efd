"""`livehead live`: a file played as a microphone in real time → mp4; the microphone path through a
stand-in `sounddevice` (the CI machine has no microphone and no PortAudio); clear errors without the
`live` extra or a display.
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

from livehead.engine.media.audio_video import load_audio
from livehead.server.cli.main import main
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

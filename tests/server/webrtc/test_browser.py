"""The browser page against a real `livehead serve`, in a real browser.

Debian's chromium (new headless mode: the headless shell rejects getUserMedia) is driven by
Playwright for Python through `executable_path` (`playwright install` cannot download browsers
here). Chromium's fake capture device plays the bundled speech clip once as the microphone. The test
loads the page from the server (the default `motion` preset at 256 px, the backend `serve` picks), clicks
"start mic" and checks, from `RTCPeerConnection.getStats()`, that the first frame is decoded within
FIRST_FRAME_AFTER_CONNECT_S of the connection (the server's clock starts on the first mic audio, so this is
mic → first frame, plus the browser's own jitter buffer), that frames are decoded at ≥ MIN_DECODED_FPS, and that
a screenshot of the video element is a face-sized, non-blank image (saved under the test's tmp_path).

Local runs: `apt-get install -y chromium` and `pip install playwright`. Without /usr/bin/chromium the
test skips, except under CI (env CI set), where it must run.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests import ROOT

SPEECH = ROOT / "engine" / "assets" / "speech.wav"
CHROMIUM = Path("/usr/bin/chromium")
SERVER_START_TIMEOUT = 90.0  # model load + the server's warm-up clips, on a shared 2-core machine
FIRST_FRAME_TIMEOUT = 60.0
OBSERVE_SECONDS = 3.0
MIN_SIDE = 128  # the smaller side of the 256 px output of the bundled portrait
MIN_DECODED_FPS = 20.0  # decoded frames/s the browser must see (the server sends 25; the page shares 2 cores)
FIRST_FRAME_AFTER_CONNECT_S = 1.5  # connected → first decoded frame (latency ~0.3 s + the browser's buffer)
MIN_STD = 8.0  # pixel standard deviation of a non-blank frame (a flat colour is ~0)


@pytest.fixture
def sync_playwright():
    """Playwright's sync API, or a skip (never under CI: there the browser test must run). Requested
    before `server`, so a skip costs no server start."""
    in_ci = bool(os.environ.get("CI"))
    if not CHROMIUM.exists() and not in_ci:
        pytest.skip(f"{CHROMIUM} not found: install Debian's chromium (apt-get install -y chromium) to run the "
                    "real-browser test (it always runs in CI)")
    if not CHROMIUM.exists():
        pytest.fail(f"CI is set but {CHROMIUM} is missing: .ci/run must apt-get install chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if in_ci:
            pytest.fail("CI is set but Playwright is missing: pip install playwright")
        pytest.skip("Playwright for Python is not installed (pip install playwright)")
    return sync_playwright


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(url: str, proc: subprocess.Popen, log_path: Path) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"livehead serve exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url + "healthz", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.25)
    pytest.fail(f"livehead serve not healthy after {SERVER_START_TIMEOUT:.0f} s:\n{log_path.read_text()[-3000:]}")


@pytest.fixture
def server(tmp_path):
    """`livehead serve` on a free loopback port (the default motion preset at 256 px, CPU); yields its URL."""
    port = _free_port()
    log_path = tmp_path / "serve.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "livehead.server.cli.main", "serve", "--host", "127.0.0.1", "--port", str(port),
             "--size", "256", "--device", "cpu", "--max-sessions", "2"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}/"
    try:
        _wait_healthy(url, proc, log_path)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _chromium_args(wav: Path) -> list[str]:
    return [
        "--headless=new",
        "--no-sandbox",
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={wav.resolve()}%noloop",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-gpu",
    ]


def _open_page(browser, server: str, errors: list[str]):
    """A new page on the server's URL, its script loaded; page errors, console errors and HTTP errors are appended
    to `errors` (the tests assert it stays empty)."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.on("pageerror", lambda err: errors.append(f"page error: {err}"))
    page.on("console", lambda msg: errors.append(f"console {msg.type}: {msg.text}")
            if msg.type == "error" and "Failed to load resource" not in msg.text else None)
    page.on("response", lambda r: errors.append(f"HTTP {r.status} for {r.url}") if r.status >= 400 else None)
    page.goto(server)
    page.wait_for_function("() => window.livehead !== undefined", timeout=10_000)
    return page


def _wait_first_frame(page, errors: list[str]) -> None:
    """Wait until the page has decoded its first avatar frame; fail with the page's error and events if not."""
    try:
        page.wait_for_function("() => window.livehead.state.firstFrameMs !== null", timeout=FIRST_FRAME_TIMEOUT * 1000)
    except Exception:
        log = page.locator("#log").inner_text()
        failure = page.locator("#call-error").inner_text()
        pytest.fail(f"no decoded video frame within {FIRST_FRAME_TIMEOUT:.0f} s; page error: {failure!r}; "
                    f"events:\n{log}\nbrowser errors: {errors}")


VIDEO_STATS = """async () => {
  const pc = window.livehead.state.pc;
  if (!pc) return null;
  const { video } = await window.livehead.collect(pc);
  return video ? { framesDecoded: video.framesDecoded || 0, width: video.frameWidth || 0,
                   height: video.frameHeight || 0 } : null;
}"""


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_page_streams_avatar_from_fake_mic(sync_playwright, server, tmp_path):
    errors: list[str] = []
    with sync_playwright() as pw:
        # headless=False: the new headless mode comes from --headless=new in the args (Playwright's own
        # headless switch would add flags of its own).
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=False, args=_chromium_args(SPEECH))
        try:
            page = _open_page(browser, server, errors)
            page.get_by_role("button", name="start mic").click()

            # First frame: the page records the delay from the click (getStats / presented frame).
            _wait_first_frame(page, errors)
            first_frame_ms = page.evaluate("() => window.livehead.state.firstFrameMs")
            connected_ms = page.evaluate("() => window.livehead.state.connectedMs")
            assert connected_ms is not None and connected_ms <= first_frame_ms, (connected_ms, first_frame_ms)
            after_connect_s = (first_frame_ms - connected_ms) / 1000
            assert after_connect_s <= FIRST_FRAME_AFTER_CONNECT_S, \
                f"first frame {after_connect_s:.2f} s after the connection (limit {FIRST_FRAME_AFTER_CONNECT_S} s)"

            # getStats() may lag the presented frame by its cache period: wait for the inbound video entry.
            deadline = time.monotonic() + 5.0
            before = page.evaluate(VIDEO_STATS)
            while (before is None or before["framesDecoded"] == 0) and time.monotonic() < deadline:
                time.sleep(0.1)
                before = page.evaluate(VIDEO_STATS)
            time.sleep(OBSERVE_SECONDS)
            after = page.evaluate(VIDEO_STATS)
            assert before is not None and after is not None, (
                f"no inbound video stats in getStats() ({before}, {after}); page state "
                f"{page.evaluate('window.livehead.state.phase')!r}, error "
                f"{page.locator('#call-error').inner_text()!r}, events:\n{page.locator('#log').inner_text()}")
            rate = (after["framesDecoded"] - before["framesDecoded"]) / OBSERVE_SECONDS
            assert after["framesDecoded"] > before["framesDecoded"] > 0, (before, after)
            assert rate >= MIN_DECODED_FPS, \
                f"only {rate:.1f} decoded frames/s over {OBSERVE_SECONDS} s ({before} → {after})"
            assert min(after["width"], after["height"]) >= MIN_SIDE, after

            # The live stats panel shows the same figures.
            page.wait_for_function("() => document.getElementById('stat-frames').textContent !== '–'",
                                   timeout=5_000)
            assert page.locator("#stat-first-frame").inner_text().endswith(" ms")

            # The video element shows a face-sized, non-blank picture.
            page.wait_for_function("() => { const v = document.getElementById('video');"
                                   " return v.videoWidth > 0 && v.currentTime > 0 && !v.paused; }", timeout=10_000)
            shot_path = tmp_path / "video.png"
            page.locator("#video").screenshot(path=str(shot_path))
            shot = np.asarray(Image.open(shot_path).convert("RGB"), dtype=np.float32)
            assert min(shot.shape[:2]) >= MIN_SIDE, shot.shape
            std = float(shot.std())
            assert std > MIN_STD, f"video screenshot looks blank (pixel std {std:.1f}); saved at {shot_path}"

            # Round-trip time from the selected candidate pair is shown.
            page.wait_for_function("() => typeof window.livehead.state.stats.rttMs === 'number'", timeout=10_000)

            # Barge-in travels over the data channel; the server confirms it.
            page.get_by_role("button", name="barge-in").click()
            page.wait_for_function("() => document.getElementById('log').textContent.includes('\"cleared\"')",
                                   timeout=5_000)
            page.get_by_role("button", name="stop").click()
            page.wait_for_function("() => window.livehead.state.pc === null", timeout=5_000)
        finally:
            browser.close()
    assert not errors, errors
    (tmp_path / "browser.json").write_text(json.dumps(
        {"first_frame_ms": first_frame_ms, "first_frame_after_connect_s": after_connect_s, "decoded_fps": rate,
         "frames": after, "screenshot_std": std}, indent=1))
    print(f"browser: first frame {first_frame_ms:.0f} ms, {rate:.1f} decoded frames/s, screenshot {shot_path} "
          f"(std {std:.1f})")


CAMERA_SECONDS = 4.8  # four open/close periods of the fake camera
CAMERA_PERIOD_FRAMES = 30  # the fake camera's mouth opens for 0.6 s and closes for 0.6 s (1.2 s at 25 fps)
MIN_RHYTHM_CORRELATION = 0.6  # the avatar's mouth opening against the camera's open/close rhythm (best phase)

GRAB_FRAMES = """async (seconds) => {
  const video = document.getElementById('video');
  const canvas = document.createElement('canvas');
  canvas.width = video.videoWidth;
  canvas.height = video.videoHeight;
  const ctx = canvas.getContext('2d');
  const out = [];
  const end = performance.now() + seconds * 1000;
  await new Promise((resolve) => {
    const grab = (now) => {
      ctx.drawImage(video, 0, 0);
      out.push([now, canvas.toDataURL('image/png')]);
      if (now < end) video.requestVideoFrameCallback(grab); else resolve();
    };
    video.requestVideoFrameCallback(grab);
  });
  return out;
}"""


def _write_y4m(path: Path, frames: np.ndarray, fps: int = 25) -> None:
    """uint8 RGB frames [F, H, W, 3] → a y4m file (4:2:0), what Chromium's fake camera plays in a loop."""
    import av

    h, w = frames.shape[1:3]
    with open(path, "wb") as f:
        f.write(f"YUV4MPEG2 W{w} H{h} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for rgb in frames:
            yuv = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24").reformat(format="yuv420p")
            f.write(b"FRAME\n" + yuv.to_ndarray().tobytes())


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_page_camera_drives_the_avatar(sync_playwright, server, tmp_path):
    """'camera only': Chromium's fake camera plays the bundled portrait opening and closing its mouth every 1.2 s;
    the decoded avatar frames (grabbed in the page) must open and close their mouth with that rhythm."""
    import base64
    import io

    from livehead.engine.eval.evaluate import MOUTH_CLOSED
    from livehead.engine.media import landmarks as L
    from tests.helpers import talking_camera

    frames, _ = talking_camera(size=256, period_frames=CAMERA_PERIOD_FRAMES)
    y4m = tmp_path / "camera.y4m"
    _write_y4m(y4m, frames)
    errors: list[str] = []
    with sync_playwright() as pw:
        args = _chromium_args(SPEECH) + [f"--use-file-for-fake-video-capture={y4m.resolve()}"]
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=False, args=args)
        try:
            page = _open_page(browser, server, errors)
            page.get_by_role("button", name="camera only").click()
            _wait_first_frame(page, errors)
            assert page.evaluate("() => window.livehead.state.cameraTrack !== null")
            page.wait_for_function("() => { const v = document.getElementById('video');"
                                   " return v.videoWidth > 0 && v.currentTime > 0 && !v.paused; }", timeout=10_000)
            time.sleep(1.0)  # the first face sets the camera's neutral
            grabbed = page.evaluate(GRAB_FRAMES, CAMERA_SECONDS)
            with urllib.request.urlopen(server + "metrics", timeout=5) as response:
                metrics = response.read().decode()
            page.get_by_role("button", name="set neutral").click()
            page.wait_for_function("() => document.getElementById('log').textContent.includes('\"neutral\"')",
                                   timeout=5_000)
            page.get_by_role("button", name="stop").click()
        finally:
            browser.close()
    assert not errors, errors
    tracked = [line for line in metrics.splitlines() if line.startswith("livehead_camera_frames_tracked{")]
    assert tracked and float(tracked[0].split()[-1]) > 25, tracked
    times = np.array([t for t, _ in grabbed]) / 1000
    images = [np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB"))
              for _, url in grabbed]
    assert len(images) >= 15 * CAMERA_SECONDS, f"only {len(images)} frames presented in {CAMERA_SECONDS} s"
    found = [(t, float(L.mouth_opening(lm))) for t, lm in zip(times, L.video_landmarks(images)) if lm is not None]
    assert len(found) >= 0.9 * len(images), f"a face in only {len(found)} of {len(images)} avatar frames"
    t, opening = np.array(found).T
    period = CAMERA_PERIOD_FRAMES / 25
    best = max(float(np.corrcoef(opening, ((t - phase) % period) < period / 2)[0, 1])
               for phase in np.arange(0, period, 0.02))
    step = max(1, round(len(images) / CAMERA_SECONDS * period / 8))  # 8 frames across one open/close period
    contact = np.concatenate([images[i] for i in range(0, 8 * step, step)], axis=1)
    Image.fromarray(contact).save(tmp_path / "camera_avatar.png")
    print(f"browser camera: {len(images)} frames presented, rhythm correlation {best:.2f}, opening "
          f"{opening.min():.3f}-{opening.max():.3f}; contact sheet {tmp_path / 'camera_avatar.png'}")
    assert best >= MIN_RHYTHM_CORRELATION and opening.max() - opening.min() > MOUTH_CLOSED, (best, opening)

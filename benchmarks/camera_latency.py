"""Live camera driving over a loopback WebRTC connection: camera-to-screen delay, received fps, tracking time.

    python benchmarks/camera_latency.py [--runs 1@512 1@256] [--seconds 10] [--with-voice]
                                        [--camera-video CLIP --camera-seconds 3] [--camera-size 256] [--sway 0.2]
                                        [--threads N] [--backend auto] [--out benchmarks/results/camera_latency.json]

The aiohttp + aiortc server (`livehead serve`'s defaults, motion preset) and N headless aiortc clients
(server/client/client.py) run in this process on 127.0.0.1; each run `N@SIZE` is N concurrent sessions with the
server's output at SIZE px. Each client sends a camera track (25 fps, looping) and, with --with-voice, the
bundled speech as its mic; it receives the avatar's video and keeps the decoded frames. Without a mic the
camera moves everything (the session skips Whisper and the generator); with one the camera moves head and
eyes and the voice the mouth (server/webrtc/camera.py).

The camera is a known motion: the bundled portrait whose mouth opens and closes, each held 0.4-1.0 s at random
(an 8 s loop, seeded: irregular, so the delay is not ambiguous by a period), and whose head moves right by
`--sway` eye-corner distances (IOD) while the mouth is open (the poses of `engine.motion.synthetic.
talking_camera`, rendered at `--camera-size` px); or, with --camera-video, the first `--camera-seconds` of a
real face video played at 25 fps (e.g. a GRID clip, ../shared/data/grid/*.mpg), tracked once before the call.

Figures per session (all times `time.monotonic()`; a camera frame's time is when the client's track handed it
to the encoder, a received frame's time is the arrival of its last RTP packet, as in webrtc_latency.py):
- camera-to-screen: `signal_lag` between a signal of the sent frames at their send times and the same signal
  tracked (MediaPipe, after the call so tracking does not load the CPU during it) in the received frames at
  their arrival times, with the Pearson correlation at that delay. Signals: the mouth opening (inner-lip gap /
  IOD) and the head's sideways position (nose tip x / IOD); the sent values are the ones the frames were
  rendered with (synthetic camera) or tracked in the driver's frames (--camera-video). The figure quoted
  (`camera_to_screen_s`) is the mouth's without a voice and the head's with one (the voice owns the mouth).
  `camera_to_decoded_s` times the received frames when aiortc hands them out decoded instead (one frame later);
- per transition (synthetic camera): for each open / close move of the camera in the measured window, the send
  time of its first frame → the arrival of the first received frame whose signal crossed the received signal's
  midpoint (mean of its 10th and 90th percentiles) in the move's direction, searched within ±0.35 s of the send
  time + the correlation delay; median and p95 over the moves, and how many moves were found;
- received fps (video frames per second in the measured window), the server's tracking time per camera frame
  (median of the last 50, `CameraFeed.figures`), camera frames received, tracked, without a face and dropped
  (tracking fell behind: the newest queued frame is tracked, the others are dropped), and the session latency.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

import aiohttp
import aiortc
import av
import numpy as np
import torch

from livehead.client import LoopbackClient, received_fps, signal_lag
from livehead.engine.common.constants import FPS
from livehead.engine.eval.bench import machine_info, nan_to_none, parse_run, save_result
from livehead.engine.media import landmarks as L
from livehead.engine.media.audio_video import load_audio
from livehead.engine.media.bundled import DEFAULT_AUDIO
from livehead.engine.model.config import ModelConfig
from livehead.engine.motion.synthetic import talking_camera, talking_schedule
from livehead.engine.runtime.reenact import video_frames
from livehead.server.backends.runners import live_backend, make_runners
from livehead.server.cli.serve import default_threads, with_output_size
from livehead.server.webrtc.app import APP_KEY, ServeConfig, create_app, serve_loopback

ROOT = Path(__file__).resolve().parents[1]

PERIOD_FRAMES = 30  # talking_camera's cycle: frame 0 half open, 1-13 open, 14 half open, 15-29 closed
HOLD_S = (0.4, 1.0)  # the synthetic camera holds each open and closed mouth this long (uniform, seeded)
LOOP_S = 8.0  # ... over a loop this long: irregular, so the delay is not ambiguous by a period
WARMUP_S = 1.0  # after the first received frame, before the measured window (the driver takes its neutral face)
MAX_LAG_S = 1.5  # the longest camera-to-screen delay searched for
MOVE_WINDOW_S = 0.35  # a move's crossing is searched this far around its send time + the session's delay
SIGNALS = ("mouth", "head")


# ------------------------------------------------------------------------------------------------ signals


def signals_of(landmarks: list[np.ndarray | None]) -> dict[str, np.ndarray]:
    """Per frame: mouth opening and head x (nose tip x relative to its median, in the median IOD); NaN without
    a face."""
    n = len(landmarks)
    mouth, nose, iod = np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan)
    for i, lm in enumerate(landmarks):
        if lm is not None:
            mouth[i] = L.mouth_opening(lm)
            nose[i] = lm[L.NOSE_TIP, 0]
            iod[i] = L.eye_corner_distance(lm)
    if np.isfinite(nose).any():
        nose = (nose - np.nanmedian(nose)) / np.nanmedian(iod)
    return {"mouth": mouth, "head": nose}


def span(values: np.ndarray) -> float:
    """max - min of the finite values (0 when none)."""
    finite_values = values[np.isfinite(values)]
    return float(np.ptp(finite_values)) if finite_values.size else 0.0


def talking_sequence(seed: int = 0) -> list[int]:
    """Indices into talking_camera's frames for a LOOP_S loop that starts closed (the server's driver takes the
    first face as its neutral) and holds each closed and open mouth HOLD_S long, eased in and out by one frame."""
    rng = np.random.default_rng(seed)
    hold = lambda: max(1, round(rng.uniform(*HOLD_S) * FPS))
    closed, half_open, half_closed, opened = PERIOD_FRAMES // 2, 0, PERIOD_FRAMES // 2 - 1, 1
    out: list[int] = []
    while len(out) < LOOP_S * FPS:
        out += [closed] * hold() + [half_open] + [opened] * hold() + [half_closed]
    return out


def synthetic_camera(size: int, sway: float) -> tuple[np.ndarray, dict[str, np.ndarray], bool]:
    """The talking portrait: frames [F, H, W, 3] (talking_sequence) and the signals each was rendered with."""
    poses, openings = talking_camera(size=size, period_frames=PERIOD_FRAMES, sway=sway)
    head = sway * talking_schedule(PERIOD_FRAMES)  # the head's x, in IOD, as rendered
    idx = talking_sequence()
    return poses[idx], {"mouth": openings[idx], "head": head[idx]}, True


def video_camera(path: str, seconds: float) -> tuple[np.ndarray, dict[str, np.ndarray], bool]:
    """The first `seconds` of a face video as camera frames (played at 25 fps), and its tracked signals."""
    iterator, _ = video_frames(path)
    frames = []
    for frame in iterator:
        frames.append(frame)
        if len(frames) >= round(seconds * FPS):
            break
    if len(frames) < FPS:
        raise SystemExit(f"camera_latency: {path} holds {len(frames)} frames; at least 1 s is needed")
    frames = np.stack(frames)
    signals = signals_of(L.video_landmarks(frames))
    if np.isnan(signals["mouth"]).mean() > 0.2:
        raise SystemExit(f"camera_latency: no face in {np.isnan(signals['mouth']).mean():.0%} of {path}'s frames")
    return frames, signals, False


def transition_starts(values: np.ndarray) -> list[tuple[int, int]]:
    """(frame, direction ±1) where a move away from a held value starts, in a looping sequence [F]."""
    step = np.diff(values, append=values[:1])  # step[i] = values[i + 1] - values[i], cyclically
    eps = 1e-3 * (np.ptp(values) or 1.0)
    return [((i + 1) % len(values), int(np.sign(step[i]))) for i in range(len(values))
            if abs(step[i]) > eps and abs(step[i - 1]) <= eps]


def transition_delays(sent: list[tuple[float, int]], values: np.ndarray, received: list[tuple[float, float]],
                      window: tuple[float, float], lag: float) -> list[float]:
    """Per sent move: its first frame's send time → the arrival of the first received frame past the midpoint in
    the move's direction, coming from the other side, within ±MOVE_WINDOW_S of the send time + `lag` (the
    correlation delay: the holds of at least HOLD_S[0] leave one such crossing there)."""
    if len(received) < 10 or not np.isfinite(lag):
        return []
    t = np.array([a for a, _ in received])
    v = np.array([x for _, x in received])
    mid = 0.5 * (np.percentile(v, 10) + np.percentile(v, 90))
    starts = dict(transition_starts(values))
    out = []
    for sent_at, j in sent:
        lo, hi = sent_at + lag - MOVE_WINDOW_S, sent_at + lag + MOVE_WINDOW_S
        if j not in starts or not window[0] <= lo <= hi <= window[1]:
            continue
        side = starts[j] * (v - mid) > 0
        crossed = [k for k in np.flatnonzero((t >= lo) & (t <= hi)) if k > 0 and side[k] and not side[k - 1]]
        if crossed:
            out.append(float(t[crossed[0]] - sent_at))
    return out


# ------------------------------------------------------------------------------------------------ one run


async def call(base: str, n: int, frames: np.ndarray, pcm: np.ndarray | None, seconds: float, server):
    """N clients at once for the measured window; returns (clients, per-client server figures, refused)."""
    clients = [LoopbackClient(base, pcm, keep_images=True, stamps=False, camera=frames) for _ in range(n)]
    refused = []
    for c in clients:
        try:
            await c.connect()
        except RuntimeError as err:
            refused.append(str(err))
            await c.close()
    clients = [c for c in clients if c.session_id is not None and c.session_id in server.peers]
    deadline = time.monotonic() + 30.0
    while clients and not all(c.got.video for c in clients) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    await asyncio.sleep(WARMUP_S + seconds + 0.5)
    peers = [server.peers[c.session_id] for c in clients]
    figures = [dict(p.camera.figures() if p.camera is not None else {}, latency_s=round(p.media.latency, 3),
                    voice=p.camera.timeline.voice if p.camera is not None else None) for p in peers]
    await asyncio.gather(*(c.close() for c in clients))
    await asyncio.sleep(0.5)
    return clients, figures, refused


def session_figures(client: LoopbackClient, server_figures: dict, sent_signals: dict[str, np.ndarray],
                    moves: bool, seconds: float, voice: bool) -> dict:
    got = client.got
    video = got.video
    first = video[0][0] if video else float("nan")
    window = (first + WARMUP_S, first + WARMUP_S + seconds)
    tracked = signals_of(L.video_landmarks([image for _, image in got.images]))  # after the call
    packet_arrival = [got.video_packets.get(pts, a) for a, pts in video]
    sent = client.camera.sent
    row: dict = {"received_fps": round(received_fps(video, window[0], seconds), 2),
                 "received_with_face": int(np.isfinite(tracked["mouth"]).sum()), "received_frames": len(video),
                 "camera_frames_sent": len(sent), "server": server_figures}
    for name in SIGNALS:
        values = sent_signals[name]
        s = [(t, float(values[j])) for t, j in sent
             if window[0] - MAX_LAG_S <= t <= window[1] and np.isfinite(values[j])]
        for key, times in (("screen", packet_arrival), ("decoded", [a for a, _ in video])):
            r = [(a, float(x)) for a, x in zip(times, tracked[name]) if window[0] <= a <= window[1] and np.isfinite(x)]
            lag, corr = signal_lag(s, r, max_lag=MAX_LAG_S) if len(s) > 25 and len(r) > 25 and span(values) > 0 \
                else (float("nan"), float("nan"))
            row[f"{name}_to_{key}_s"], row[f"{name}_{key}_correlation"] = round(lag, 3), round(corr, 3)
        if moves and span(values) > 0:
            r = [(a, float(x)) for a, x in zip(packet_arrival, tracked[name]) if np.isfinite(x)]
            delays = transition_delays(sent, values, r, window, row[f"{name}_to_screen_s"])
            row[f"{name}_transitions"] = len(delays)
            row[f"{name}_transition_median_s"] = round(float(np.median(delays)), 3) if delays else None
            row[f"{name}_transition_p95_s"] = round(float(np.percentile(delays, 95)), 3) if delays else None
    quoted = "head" if voice else "mouth"
    row["quoted_signal"] = quoted
    for key in ("to_screen_s", "screen_correlation", "to_decoded_s", "transition_median_s", "transition_p95_s"):
        if f"{quoted}_{key}" in row:
            row[f"camera_{key}"] = row[f"{quoted}_{key}"]
    return row



def shown_path(path: str) -> str:
    """A path as the JSON shows it: relative to the checkout (or its parent's shared folder), never the machine's."""
    p = Path(path).resolve()
    for base, prefix in ((ROOT, ""), (ROOT.parent, "../")):
        if p.is_relative_to(base):
            return prefix + p.relative_to(base).as_posix()
    return p.name


async def main_async(args) -> dict:
    base_cfg = ModelConfig.from_name("motion")
    if args.camera_video:
        frames, sent_signals, moves = video_camera(args.camera_video, args.camera_seconds)
    else:
        frames, sent_signals, moves = synthetic_camera(args.camera_size, args.sway)
    pcm = load_audio(DEFAULT_AUDIO, sample_rate=48_000) if args.with_voice else None
    if pcm is not None:  # the bundled speech, repeated over the whole call
        pcm = np.tile(pcm, int(np.ceil((args.seconds + 10.0) * 48_000 / pcm.size)))
    results = []
    runs = [parse_run(r) for r in args.runs]
    for n, size in runs:
        cfg = with_output_size(base_cfg, size)
        runners = make_runners(cfg, live_backend(cfg, args.backend, args.device), None, args.device, progress=False,
                               controls={"expression": 1.0, "head_motion": 1.0})
        app = create_app(runners, ServeConfig(max_sessions=max(r[0] for r in runs), latency=args.latency,
                                              capacity=n if args.admit_all else None))
        runner, base = await serve_loopback(app)
        server = app[APP_KEY]
        load_before = os.getloadavg()[0]  # other processes on the machine (1-minute load average)
        clients, server_figures, refused = await call(base, n, frames, pcm, args.seconds, server)
        load_after = os.getloadavg()[0]
        await runner.cleanup()  # the server is gone before the received frames are tracked
        per = [session_figures(c, f, sent_signals, moves, args.seconds, args.with_voice)
               for c, f in zip(clients, server_figures)]
        row = {"sessions": n, "admitted": len(per), "refused": refused, "image_size": cfg.stream.image_size,
               "capacity": server.capacity, "load_average": [round(load_before, 2), round(load_after, 2)],
               "per_session": per}
        for key in ("camera_to_screen_s", "camera_screen_correlation", "camera_transition_median_s",
                    "camera_transition_p95_s", "received_fps"):
            vals = [p[key] for p in per if p.get(key) is not None and np.isfinite(p[key])]
            row[key] = round(float(np.median(vals)), 3) if vals else None
        row["track_ms"] = [p["server"].get("track_ms") for p in per]
        row["dropped"] = [p["server"].get("dropped") for p in per]
        print(json.dumps(nan_to_none({k: v for k, v in row.items() if k != "per_session"})), flush=True)
        results.append(row)
        del clients
    device = machine_info() | {"aiortc": aiortc.__version__, "aiohttp": aiohttp.__version__, "av": av.__version__,
                               "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")}
    command = " ".join(["python", "benchmarks/camera_latency.py"]
                       + [shown_path(a) if "/" in a else a for a in sys.argv[1:]])
    return {
        "benchmark": "camera_latency",
        "command": command,
        "preset": base_cfg.name,
        "backend": live_backend(base_cfg, args.backend, args.device),
        "device": device,
        "settings": {"seconds": args.seconds, "warmup_s": WARMUP_S, "fps": FPS, "with_voice": args.with_voice,
                     "camera": (f"video {shown_path(args.camera_video)}, first {args.camera_seconds} s"
                                if args.camera_video else
                                f"talking_camera: {args.camera_size} px, mouth held open / closed "
                                f"{HOLD_S[0]}-{HOLD_S[1]} s each (a {LOOP_S:.0f} s loop), head sway {args.sway} IOD"),
                     "camera_frames": len(frames), "latency": args.latency or "auto",
                     "transport": "loopback, one process"},
        "results": results,
    }


def print_table(report: dict) -> None:
    print(f"\n{'run':>8} {'signal':>6} {'to screen':>10} {'r':>5} {'moves med/p95':>14} {'fps':>5} "
          f"{'track ms':>9} {'dropped':>8}")
    for row in report["results"]:
        for p in row["per_session"]:
            med, p95 = p.get("camera_transition_median_s"), p.get("camera_transition_p95_s")
            moves = f"{med * 1000:.0f} / {p95 * 1000:.0f} ms" if med is not None else "-"
            lag = p.get("camera_to_screen_s")
            lag = f"{lag * 1000:.0f} ms" if lag is not None else "-"
            r, track_ms = p.get("camera_screen_correlation"), p["server"].get("track_ms")
            print(f"{row['sessions']}@{row['image_size']:<5} {p['quoted_signal']:>6} {lag:>10} "
                  f"{'-' if r is None else f'{r:.2f}':>5} {moves:>14} {p['received_fps']:>5.1f} "
                  f"{'-' if track_ms is None else f'{track_ms:.1f}':>9} {p['server'].get('dropped', '-'):>8}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", nargs="+", default=["1@512", "1@256"], help="N@SIZE: N sessions at SIZE px")
    p.add_argument("--seconds", type=float, default=10.0, help="measured window per session")
    p.add_argument("--with-voice", action="store_true", help="also send the bundled speech as the mic")
    p.add_argument("--camera-video", default=None, help="drive with a face video instead of the synthetic camera")
    p.add_argument("--camera-seconds", type=float, default=3.0, help="seconds of --camera-video played (looping)")
    p.add_argument("--camera-size", type=int, default=256, help="the synthetic camera's long side (px)")
    p.add_argument("--sway", type=float, default=0.2, help="the synthetic camera's head move (IOD; 0: none)")
    p.add_argument("--backend", default="auto", help="auto, torch or onnxruntime (as `livehead serve --backend`)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--admit-all", action="store_true", help="admit every session of a run (`serve --capacity N`)")
    p.add_argument("--latency", type=float, default=None, help="server latency (default: measured at start)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: as `livehead serve`, cores - 1)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "camera_latency.json"))
    args = p.parse_args()
    torch.set_num_threads(args.threads or default_threads())
    report = nan_to_none(asyncio.run(main_async(args)))
    text = json.dumps(report)
    leaked = [s for s in (str(ROOT), str(ROOT.parent), str(Path.home())) if len(s) > 1 and s in text]
    if leaked:
        raise SystemExit(f"camera_latency: the result names a machine path ({leaked[0]}); not written")
    print_table(report)
    print(f"wrote {save_result(args.out, report)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

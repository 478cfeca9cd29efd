"""Live server over a loopback WebRTC connection: mouth-to-screen latency, first-frame delay, sustained fps.

    python benchmarks/webrtc_latency.py [--preset motion] [--runs 1@512 4@256] [--seconds 10] [--threads N]
                                        [--backend torch] [--latency S] [--out benchmarks/results/webrtc_latency.json]

The aiohttp + aiortc server (server/app.py, same defaults as `livehead serve`) runs in this process and N
headless aiortc clients (server/client.py) in a second one (their own interpreter lock, as remote callers
have; they still share this machine's cores; `--clients-in-process` puts them beside the server), on
127.0.0.1; each run `N@SIZE` is N concurrent sessions with the server's output at SIZE px (`livehead serve
--size SIZE`; the bundled portrait, upsampled). Each client sends, as its microphone, silence with a 150 ms
tone burst every 0.8-1.4 s, and receives the avatar's video and the delayed audio. All times are
`time.monotonic()`; media are timed when their RTP packets arrive (see server/client.py for why and for the
A/V-offset method).

Figures per session count:
- mouth-to-screen: a burst's onset captured by the client (its sample's capture time) → arrival of the
  first video frame generated for the audio at that onset (the frame whose 40 ms interval holds it);
  the onset's position in the server's timeline is found in the audio the server took in;
- mouth-to-ear: the same onset → arrival of the audio packet that plays it back;
- first-frame delay: the client's first mic sample → the first video frame at the client;
- sustained fps: video frames received per second (the pacer's fixed 25; frames are timed by their RTP
  packets and not decoded, to leave the CPU to the server), generated frames shown per
  second (`fresh_fps`: the model's sustained rate per session, ≤ 25) and the share of repeated ticks;
- A/V offset: video delay − audio delay of the frames generated for the audio (positive: picture late).
Each run's `pass` holds the live-latency targets: mouth-to-screen median ≤ 300 ms and p95 ≤ 400 ms (one
session), first frame ≤ 400 ms, every session ≥ 24 fresh frames/s and within 10 % of the others, |A/V| ≤ 40 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
from pathlib import Path

import aiohttp
import aiortc
import av
import numpy as np
import torch

from livehead.client import RATE, LoopbackClient, av_offset, match_stamps, received_fps
from livehead.engine.eval.bench import cpu_name, nan_to_none, parse_run
from livehead.engine.model.config import ModelConfig
from livehead.server.backends.runners import live_backend, make_runners
from livehead.server.cli.serve import default_threads, with_output_size
from livehead.server.webrtc import pacing
from livehead.server.webrtc.app import APP_KEY, ServeConfig, create_app, serve_loopback
from livehead.server.webrtc.pacing import source_wall_time

ROOT = Path(__file__).resolve().parents[1]

BURST_S = 0.15
ONSET_LEVEL = 0.05  # |sample| above this after quiet marks a burst onset


def burst_signal(seconds: float, seed: int = 0) -> tuple[np.ndarray, list[int]]:
    """Silence with 150 ms tone bursts (0.3 peak, random 150-300 Hz fundamental + harmonics) every 0.8-1.4 s.

    Irregular spacing and pitch keep the audio cross-correlation unambiguous. Returns float32 [N] at
    48 kHz and the onsets (sample indices).
    """
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    pcm = np.zeros(n, np.float32)
    t = np.arange(int(BURST_S * RATE)) / RATE
    onsets, s = [], int(1.0 * RATE)
    while s + t.size < n:
        f0 = rng.uniform(150, 300)
        pcm[s:s + t.size] = 0.3 * sum(w * np.sin(2 * np.pi * f0 * h * t) for h, w in ((1, 0.6), (2, 0.3), (4, 0.1)))
        onsets.append(s)
        s += int(rng.uniform(0.8, 1.4) * RATE)
    return pcm, onsets


def onsets_in(recording: list[tuple[int, float, np.ndarray]]) -> list[int]:
    """Timeline samples where a burst starts, in the audio the server took in."""
    if not recording:
        return []
    first = recording[0][0]
    end = max(f + p.size for f, _, p in recording)
    signal = np.zeros(end - first, np.float32)
    for f, _, p in recording:
        signal[f - first:f - first + p.size] = p
    loud = np.flatnonzero(np.abs(signal) > ONSET_LEVEL)
    out, last = [], -10 * RATE
    for i in loud:
        if i - last > 0.5 * RATE:
            out.append(int(i) + first)
        last = i
    return out


def session_figures(client: LoopbackClient, media, onsets: list[int], fps: int, seconds: float) -> dict:
    got = client.got
    recording = list(media.recording)
    sync = av_offset(recording, got, fps)
    mic = client.mic
    capture = [mic.sent[s // 960] - 0.02 + (s % 960) / RATE for s in onsets if s // 960 < len(mic.sent)]
    sources = [(f, p.size, a) for f, a, p in recording]
    packets = sorted((a, pts) for pts, a in got.video_packets.items())
    ticks = match_stamps(packets, got.stamps, fps)
    lag = sync["audio_content_lag_samples"]
    audio_packets = sorted((pts, a) for pts, a in got.audio_packets.items())
    to_screen, to_ear = [], []
    for tau in onsets_in(recording):
        arrived = source_wall_time(sources, tau, RATE)
        if arrived is None or not capture:
            continue
        cap = min(capture, key=lambda c: abs(c - arrived))
        if abs(cap - arrived) > 0.3:
            continue
        frame = tau * fps // RATE
        shown = [a for a, _, s in ticks if s["frame"] >= frame]
        if shown:
            to_screen.append(min(shown) - cap)
        heard = [a for pts, a in audio_packets if pts - lag <= tau < pts - lag + 960]
        if heard:
            to_ear.append(heard[0] - cap)
    first_video = packets[0][0] if packets else float("nan")
    window_from = first_video + 0.5
    fresh = {s["frame"] for _, _, s in ticks if s["frame"] >= 0 and window_from <= s["sent"] < window_from + seconds}
    return {
        "received_fps": received_fps(packets, window_from, seconds),
        "fresh_fps": len(fresh) / seconds,
        "repeat_share": sync["repeat_share"],
        "first_frame_delay_s": first_video - (mic.sent[0] - 0.02),
        "server_first_frame_delay_s": media.first_frame_delay,
        "mouth_to_screen_s": to_screen,
        "mouth_to_ear_s": to_ear,
        "latency_s": media.latency,
        "av_offset_s": sync["av_offset_s"],
        "av_offset_of_medians_s": sync["av_offset_of_medians_s"],
        "audio_delay_s": sync["audio_delay_s"],
        "video_delay_s": sync["video_delay_s"],
        "clips_skipped": media.skipped_clips,
        "frames_generated": media.generated,
        "frames_not_shown": media.skipped,
    }


async def _connect_clients(base: str, n: int, pcm: np.ndarray) -> tuple[list[LoopbackClient], list[str]]:
    """n clients connecting one after the other, as callers arrive (those beyond the capacity get 503)."""
    clients = [LoopbackClient(base, pcm, decode_video=False) for _ in range(n)]  # time packets, skip VP8 decode
    refused = []
    for c in clients:
        try:
            await c.connect()
        except RuntimeError as err:
            refused.append(str(err))
            await c.close()
    return [c for c in clients if c.session_id is not None], refused


def _clients_process(base: str, n: int, pcm: np.ndarray, conn) -> None:
    """The clients' own process (as remote callers have their own machines: the server's interpreter lock is not
    theirs). Sends (session ids, refusals), waits for the word to stop, sends each client's received media."""
    async def run():
        clients, refused = await _connect_clients(base, n, pcm)
        conn.send(([c.session_id for c in clients], refused))
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, conn.recv)
        conn.send([(c.session_id, c.got, c.mic.sent) for c in clients])
        await asyncio.gather(*(c.close() for c in clients))

    asyncio.run(run())


async def _in_other_process(base: str, n: int, pcm: np.ndarray, wait_s: float):
    """Start the clients in a child process and wait wait_s after they connected → (their session ids, refusals,
    the pipe to the child, the child)."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    here, there = ctx.Pipe()
    child = ctx.Process(target=_clients_process, args=(base, n, pcm, there), daemon=True)
    child.start()
    loop = asyncio.get_running_loop()
    ids, refused = await loop.run_in_executor(None, here.recv)
    await asyncio.sleep(wait_s)
    return ids, refused, here, child


async def run_sessions(base: str, server, n: int, seconds: float, clients_process: bool = False) -> dict:
    fps = server.cfg.stream.fps
    latency = server.latency_for(n)
    pcm, onsets = burst_signal(latency + seconds + 4.0)
    batches0, clips0 = server.worker.batches, server.worker.clips
    if clients_process:
        from types import SimpleNamespace

        ids, refused, pipe, child = await _in_other_process(base, n, pcm, latency + seconds + 1.5)
        ids = [i for i in ids if i in server.peers]
        medias = [server.peers[i].media for i in ids]
        pipe.send("stop")
        loop = asyncio.get_running_loop()
        got = {sid: (g, sent) for sid, g, sent in await loop.run_in_executor(None, pipe.recv)}
        clients = [SimpleNamespace(got=got[i][0], mic=SimpleNamespace(sent=got[i][1])) for i in ids]
        await loop.run_in_executor(None, child.join, 30)
    else:
        clients, refused = await _connect_clients(base, n, pcm)
        clients = [c for c in clients if c.session_id in server.peers]
        await asyncio.sleep(latency + seconds + 1.5)
        medias = [server.peers[c.session_id].media for c in clients]
    batches, clips = server.worker.batches - batches0, server.worker.clips - clips0
    per = [session_figures(c, m, onsets, fps, seconds) for c, m in zip(clients, medias)]
    if not clients_process:
        await asyncio.gather(*(c.close() for c in clients))
    await asyncio.sleep(0.5)
    flat = lambda key: [x for p in per for x in p[key]]
    med = lambda xs: round(float(np.median(xs)), 4) if len(xs) else None
    p95 = lambda xs: round(float(np.percentile(xs, 95)), 4) if len(xs) else None
    n = len(per)
    fresh = [p["fresh_fps"] for p in per]
    screen = flat("mouth_to_screen_s")
    checks = {
        "all_admitted": not refused,
        "fresh_fps_min_24": min(fresh) >= 24,
        "fresh_fps_within_10pct": (max(fresh) - min(fresh)) <= 0.1 * max(fresh) if max(fresh) > 0 else False,
        "first_frame_400ms": max(p["first_frame_delay_s"] for p in per) <= 0.4,
        "av_offset_40ms": all(abs(p["av_offset_s"]) <= 0.04 for p in per if np.isfinite(p["av_offset_s"])),
    }
    if n == 1:
        checks["mouth_to_screen_median_300ms"] = bool(screen) and float(np.median(screen)) <= 0.3
        checks["mouth_to_screen_p95_400ms"] = bool(screen) and float(np.percentile(screen, 95)) <= 0.4
    return {
        "sessions": n,
        "admitted": len(per),
        "refused": refused,
        "image_size": server.cfg.stream.image_size,
        "pass": checks,
        "latency_changes": [m.latency_changes for m in medias],
        "latency_s": [round(p["latency_s"], 3) for p in per],
        "received_fps_min": round(min(p["received_fps"] for p in per), 2),
        "fresh_fps_per_session": [round(p["fresh_fps"], 2) for p in per],
        "fresh_fps_total": round(sum(p["fresh_fps"] for p in per), 2),
        "repeat_share": [round(p["repeat_share"], 3) for p in per],
        "first_frame_delay_s": [round(p["first_frame_delay_s"], 3) for p in per],
        "mouth_to_screen_median_s": med(screen),
        "mouth_to_screen_p95_s": p95(screen),
        "mouth_to_screen_s": [round(x, 3) for x in screen],
        "mouth_to_ear_median_s": med(flat("mouth_to_ear_s")),
        "av_offset_s": [round(p["av_offset_s"], 4) for p in per],
        "av_offset_of_medians_s": [round(p["av_offset_of_medians_s"], 4) for p in per],
        "audio_delay_s": [round(p["audio_delay_s"], 4) for p in per],
        "clips_skipped": [p["clips_skipped"] for p in per],
        "frames_generated": [p["frames_generated"] for p in per],
        "frames_not_shown": [p["frames_not_shown"] for p in per],
        "mean_batch_size": round(clips / max(batches, 1), 2),
        "batch_seconds_during_run": round(server.worker.batch_ema_s or float("nan"), 3),
        "batches": batches,
    }


async def main_async(args) -> dict:
    base_cfg = ModelConfig.from_name(args.preset)
    if args.steps:
        base_cfg = base_cfg.with_steps(args.steps)
    results = []
    runs = [parse_run(r) for r in args.runs]
    for n, size in runs:
        cfg = with_output_size(base_cfg, size)
        runners = make_runners(cfg, live_backend(cfg, args.backend, args.device), args.weights, args.device,
                               progress=False,
                               controls={} if cfg.motion is None else {"expression": 1.0, "head_motion": 1.0})
        app = create_app(runners, ServeConfig(max_sessions=max(r[0] for r in runs), latency=args.latency,
                                              capacity=n if args.admit_all else None,
                                              record_seconds=args.seconds + 30))
        runner, base = await serve_loopback(app)
        server = app[APP_KEY]
        row = await run_sessions(base, server, n, args.seconds, args.clients_process)
        loads = pacing.session_loads(server.step_costs, server.worker.step_clips, server.config.max_batch,
                                     cfg.stream.clip_frames, cfg.stream.fps, n, server.video_frame_s,
                                     pacing.SESSION_TRANSPORT)
        row.update(clip_compute_s=round(server.compute_s, 4), batch_compute_s=round(server.compute_batch_s, 4),
                   step_clips=server.worker.step_clips(row["admitted"]),
                   load_cpu_s_per_s=round(loads[row["admitted"] - 1][0], 3), share=pacing.SESSION_SHARE,
                   video_frame_ms=round(1000 * server.video_frame_s, 3),
                   capacity=server.capacity, load_average=os.getloadavg()[0])
        print(json.dumps(nan_to_none(row)), flush=True)
        results.append(row)
        await runner.cleanup()
    return {
        "benchmark": "webrtc_latency",
        "preset": cfg.name,
        "backend": live_backend(cfg, args.backend, args.device),
        "seeded_weights": cfg.seeded_weights and args.weights is None and cfg.motion is None,
        "device": {"name": cpu_name() if runners.device.type == "cpu" else torch.cuda.get_device_name(runners.device),
                   "type": runners.device.type, "logical_cores": os.cpu_count(),
                   "torch_threads": torch.get_num_threads(), "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")},
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "aiortc": aiortc.__version__,
                     "aiohttp": aiohttp.__version__, "av": av.__version__, "numpy": np.__version__},
        "settings": {"steps": cfg.sampler.steps, "fps": cfg.stream.fps, "clip_frames": cfg.stream.clip_frames,
                     "lookahead_s": cfg.stream.lookahead_s, "seconds": args.seconds, "latency": args.latency or "auto",
                     "burst_every_s": "0.8-1.4", "burst_s": BURST_S,
                     "transport": "loopback, the clients in a second process" if args.clients_process else
                     "loopback, one process"},
        "results": results,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="motion")
    p.add_argument("--backend", default="auto", help="auto, torch or onnxruntime (as `livehead serve --backend`)")
    p.add_argument("--runs", nargs="+", default=["1@512", "4@256"], help="N@SIZE: N sessions at SIZE px")
    p.add_argument("--admit-all", action="store_true", help="admit every session of a run (`serve --capacity N`) "
                   "instead of refusing those beyond the measured capacity")
    p.add_argument("--clients-in-process", dest="clients_process", action="store_false",
                   help="run the clients in the server's process (by default they run in a second one: their own "
                   "interpreter lock, as remote callers; on the same cores)")
    p.add_argument("--weights", default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: the preset's)")
    p.add_argument("--seconds", type=float, default=10.0, help="measured window per run")
    p.add_argument("--latency", type=float, default=None, help="server latency (default: measured at start)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: as `livehead serve`, cores - 1)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "webrtc_latency.json"))
    args = p.parse_args()
    torch.set_num_threads(args.threads or default_threads())
    report = asyncio.run(main_async(args))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(nan_to_none(report), indent=1, allow_nan=False) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

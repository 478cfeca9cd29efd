"""Long calls: one call of N minutes with A/V offset, latency and memory sampled, then connect/disconnect cycles.

    python benchmarks/soak.py [--minutes 60] [--sample-every 60] [--cycles 100] [--size 256]
                              [--out benchmarks/results/soak.json]

`livehead serve` runs as its own process (so its memory is its own), the client in this one. The call's
mic plays the bundled speech clip with a pause after it, over and over, in real time; every
`--sample-every` seconds the server's /metrics gives the session's A/V offset (video content delay − audio
content delay as sent) and latency, the resident memory (the server process plus its render process) and its
event-loop task count, and the
client counts the video and audio packets it received since the last sample. Then `--cycles` calls are
opened and closed (2 s of speech each); memory and tasks are sampled before and after.

Flat means: after the first two samples (warm-up: allocator, codecs), resident memory grows by less than
--rss-slack MB over the call and over the cycles, tasks return to their idle count, |A/V offset| ≤ 40 ms in
every sample, and the client receives ≥ 24 video frames/s in every window.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import aiohttp
import av
import numpy as np
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from livehead.client import FRAME, RATE, LoopbackClient
from livehead.engine.eval.bench import machine_info, save_result
from livehead.engine.media.audio_video import load_audio
from livehead.engine.media.bundled import DEFAULT_AUDIO

ROOT = Path(__file__).resolve().parents[1]
AV_LIMIT_S = 0.040
MIN_FPS = 24.0


class LoopingMic(MediaStreamTrack):
    """A mic stand-in for long calls: float32 mono 48 kHz `pcm48` played over and over in real time, as 20 ms
    s16 frames (pts = 960 · m), holding no history."""

    kind = "audio"

    def __init__(self, pcm48: np.ndarray):
        super().__init__()
        pcm = (np.clip(pcm48, -1, 1) * 32767).round().astype(np.int16)
        self.pcm = pcm[: len(pcm) // FRAME * FRAME]
        self.start: float | None = None
        self.m = 0

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self.start is None:
            self.start = time.monotonic()
        wait = self.start + (self.m + 1) * FRAME / RATE - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        at = self.m * FRAME % len(self.pcm)
        frame = av.AudioFrame.from_ndarray(self.pcm[None, at:at + FRAME], format="s16", layout="mono")
        frame.sample_rate = RATE
        frame.pts = self.m * FRAME
        frame.time_base = Fraction(1, RATE)
        self.m += 1
        return frame


class SoakClient(LoopbackClient):
    """LoopbackClient with the looping mic, packets only timed (not decoded) and counted, not kept."""

    def __init__(self, base_url: str, pcm48: np.ndarray):
        super().__init__(base_url, None, stamps=False, decode_video=False)
        self.mic = LoopingMic(pcm48)
        self.counts = {"video": 0, "audio": 0}

    def _time_packets(self, receiver, kind: str) -> None:
        name = "video" if kind == "video" else "audio"
        handle = receiver._handle_rtp_packet
        last: list[int] = []

        async def counted(packet, arrival_time_ms):
            if not last or packet.timestamp != last[0]:  # one count per frame (a frame may span packets)
                self.counts[name] += 1
                last[:] = [packet.timestamp]
            if name == "audio":
                await handle(packet, arrival_time_ms)

        receiver._handle_rtp_packet = counted

    async def _audio(self, track) -> None:
        try:
            while True:
                await track.recv()
        except MediaStreamError:
            pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def parse_metrics(text: str) -> dict:
    """Prometheus text → {name: value} for unlabelled samples and {name: [values]} for per-session ones."""
    out: dict = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r"([a-z_]+)(\{[^}]*\})? (\S+)", line)
        if not m:
            continue
        name, labels, value = m.group(1), m.group(2), float(m.group(3))
        if labels and "session=" in labels:
            out.setdefault(name, []).append(value)
        elif not labels:
            out[name] = value
    return out


async def metrics(http: aiohttp.ClientSession, base: str) -> dict:
    async with http.get(f"{base}/metrics") as resp:
        return parse_metrics(await resp.text())


async def until_idle(http: aiohttp.ClientSession, base: str, timeout: float = 15.0) -> None:
    """Wait until the server holds no session (the previous call's teardown has finished)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end and (await metrics(http, base)).get("livehead_sessions", 0) > 0:
        await asyncio.sleep(0.2)


def speech_with_pause() -> np.ndarray:
    """The bundled speech then 1.5 s of silence, at 48 kHz: speech and idle in every loop."""
    pcm = load_audio(DEFAULT_AUDIO, sample_rate=RATE)
    return np.concatenate([pcm, np.zeros(int(1.5 * RATE), np.float32)])


async def soak(base: str, minutes: float, every: float, cycles: int) -> dict:
    pcm = speech_with_pause()
    async with aiohttp.ClientSession() as http:
        idle = await metrics(http, base)
        client = SoakClient(base, pcm)
        await client.connect()
        samples = []
        t_start = time.monotonic()
        last = dict(client.counts)
        t_last = t_start
        while time.monotonic() - t_start < minutes * 60:
            await asyncio.sleep(every)
            m = await metrics(http, base)
            now = time.monotonic()
            got = {k: (client.counts[k] - last[k]) / (now - t_last) for k in last}
            last, t_last = dict(client.counts), now
            offsets = m.get("livehead_av_offset_seconds", [])
            samples.append({
                "t_s": round(now - t_start, 1),
                "rss_mb": rss_mb(m),
                "render_rss_mb": round(m.get("livehead_render_process_resident_bytes", 0) / 2**20, 1),
                "tasks": int(m.get("livehead_event_loop_tasks", 0)),
                "av_offset_s": round(offsets[0], 4) if offsets else None,
                "latency_s": round(m.get("livehead_session_latency_seconds", [None])[0] or 0, 3),
                "video_fps": round(got["video"], 2), "audio_packets_per_s": round(got["audio"], 2),
            })
            print(json.dumps(samples[-1]), flush=True)
        await client.close()
        await until_idle(http, base)
        await asyncio.sleep(2.0)
        before = await metrics(http, base)
        for i in range(cycles):
            await until_idle(http, base)  # a closed call frees its slot asynchronously (capacity 1: 503 before)
            c = SoakClient(base, pcm)
            await c.connect()
            await asyncio.sleep(2.0)
            await c.close()
            if (i + 1) % 10 == 0:
                print(f"cycle {i + 1}/{cycles}", flush=True)
        await asyncio.sleep(3.0)
        after = await metrics(http, base)
    return {"idle": idle, "samples": samples, "cycles": cycles,
            "cycles_before": {"rss_mb": rss_mb(before),
                              "tasks": int(before["livehead_event_loop_tasks"]),
                              "sessions": int(before["livehead_sessions"])},
            "cycles_after": {"rss_mb": rss_mb(after),
                             "tasks": int(after["livehead_event_loop_tasks"]),
                             "sessions": int(after["livehead_sessions"])}}


def rss_mb(m: dict) -> float:
    """The server's resident memory in MB from /metrics: its own process plus its render process (motion tier)."""
    return round((m.get("livehead_process_resident_bytes", 0)
                  + m.get("livehead_render_process_resident_bytes", 0)) / 2**20, 1)


def verdict(result: dict, rss_slack_mb: float) -> dict:
    samples = result["samples"]
    steady = samples[2:] if len(samples) > 3 else samples[1:]
    rss = [s["rss_mb"] for s in steady]
    offsets = [s["av_offset_s"] for s in samples if s["av_offset_s"] is not None]
    return {
        "call_rss_growth_mb": round(max(rss) - rss[0], 1) if rss else None,
        "call_rss_flat": bool(rss) and max(rss) - rss[0] < rss_slack_mb,
        "av_offset_max_abs_s": round(max(abs(o) for o in offsets), 4) if offsets else None,
        "av_offset_within_40ms": bool(offsets) and max(abs(o) for o in offsets) <= AV_LIMIT_S,
        "video_fps_min": min(s["video_fps"] for s in samples) if samples else None,
        "video_fps_ok": bool(samples) and min(s["video_fps"] for s in samples) >= MIN_FPS,
        "cycles_rss_growth_mb": round(result["cycles_after"]["rss_mb"] - result["cycles_before"]["rss_mb"], 1),
        "cycles_rss_flat": result["cycles_after"]["rss_mb"] - result["cycles_before"]["rss_mb"] < rss_slack_mb,
        "cycles_tasks_flat": result["cycles_after"]["tasks"] <= result["cycles_before"]["tasks"],
        "cycles_sessions_closed": result["cycles_after"]["sessions"] == 0,
    }


def start_server(port: int, size: int | None, extra: list[str]) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "livehead.server.cli.main", "serve", "--port", str(port), "--quiet", *extra]
    if size:
        cmd += ["--size", str(size)]
    return subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


async def wait_healthy(base: str, proc: subprocess.Popen, timeout: float = 180.0) -> None:
    end = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < end:
            if proc.poll() is not None:
                raise RuntimeError(f"livehead serve exited: {proc.stderr.read().decode()[-2000:]}")
            try:
                async with http.get(f"{base}/healthz") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.5)
    raise RuntimeError("livehead serve did not become healthy")


def run(minutes: float, every: float, cycles: int, size: int | None, rss_slack_mb: float,
        serve_args: list[str] | None = None) -> dict:
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    proc = start_server(port, size, serve_args or [])
    try:
        asyncio.run(wait_healthy(base, proc))
        t = time.perf_counter()
        result = asyncio.run(soak(base, minutes, every, cycles))
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
    result.update(benchmark="soak", minutes=minutes, sample_every_s=every, size=size, machine=machine_info(),
                  seconds=round(time.perf_counter() - t, 1))
    result["pass"] = verdict(result, rss_slack_mb)
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=60.0)
    p.add_argument("--sample-every", type=float, default=60.0, help="seconds between samples")
    p.add_argument("--cycles", type=int, default=100)
    p.add_argument("--size", type=int, default=None, help="the server's --size (default: the preset's)")
    p.add_argument("--rss-slack", type=float, default=30.0, help="MB of growth still called flat")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "soak.json"))
    args = p.parse_args()
    result = run(args.minutes, args.sample_every, args.cycles, args.size, args.rss_slack)
    save_result(args.out, result)
    print(json.dumps(result["pass"], indent=1))
    print(f"wrote {args.out}")
    return 0 if all(v for k, v in result["pass"].items() if isinstance(v, bool)) else 1


if __name__ == "__main__":
    sys.exit(main())

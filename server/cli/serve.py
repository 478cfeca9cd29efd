"""`livehead serve`: the WebRTC live server (server/webrtc) from the command line.

    livehead serve                                         # http://127.0.0.1:8080, motion preset, CPU or CUDA
    livehead serve --size 256 --max-sessions 8             # smaller frames: more sessions (capacity measured)
    livehead serve --host 0.0.0.0 --token SECRET           # reachable from other machines: a token is required
    livehead serve --preset echomimic-v1-acc --weights DIR --device cuda --max-sessions 8 --ice-server stun:HOST

Needs the `server` extra (`pip install 'livehead[server]'`: aiohttp, aiortc).
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import sys
from dataclasses import replace

from livehead.engine.common.errors import InputError
from livehead.engine.model.config import ModelConfig
from livehead.engine.runtime.runners import resolve_device
from livehead.server.backends.runners import live_backend, make_runners, motion_controls, print_seeded_note
from livehead.server.cli.common import DEFAULT_PRESET, add_motion_controls


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("serve", help="WebRTC live server: browser page, POST /offer, /avatars, /metrics")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default loopback; others need --token)")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--preset", default=DEFAULT_PRESET,
                     help="motion (embedded default), tiny, echomimic-v1, echomimic-v1-acc")
    p.add_argument("--weights", default=None,
                   help="weights directory (required for the echomimic presets; tiny: its shipped weights, "
                        "or 'seeded' for the seed-fixed random model)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
    p.add_argument("--backend", default="auto", help="auto (ONNX Runtime for the motion preset on a CPU when the "
                   "export extra is installed, else torch), torch, onnxruntime or tensorrt (see `livehead export`)")
    p.add_argument("--exported", default=None, help="ONNX export directory for onnxruntime/tensorrt "
                   "(default: exported/PRESET, exported on first use)")
    p.add_argument("--size", type=int, default=None, help="output long side in pixels (default: the preset's, 512 "
                   "for motion); smaller frames cost less, so more sessions fit (motion preset only)")
    p.add_argument("--max-sessions", type=int, default=4, help="most concurrent sessions; the next offer gets HTTP "
                   "503, as does one beyond the capacity measured at start")
    p.add_argument("--capacity", type=int, default=None, help="sessions admitted (default: measured at start: "
                   "the most the machine keeps at real time); the next offer gets HTTP 503 with a JSON reason")
    p.add_argument("--max-batch", type=int, default=4, help="clips of different sessions denoised in one batch")
    p.add_argument("--token", default=None, help="require 'Authorization: Bearer TOKEN' on /offer and /avatars")
    p.add_argument("--ice-server", action="append", default=[], metavar="URL",
                   help="STUN/TURN server (repeatable); default none: no traffic leaves the machine unless asked")
    add_motion_controls(p)
    p.add_argument("--latency", type=float, default=None, help="input-to-output delay in seconds (default: "
                   "measured at start = first clip's audio + 1.25 x one clip's compute + margin)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: CPU cores - 1, at least 1: "
                   "one core stays with the event loop and the codecs)")
    p.add_argument("--quiet", action="store_true", help="only warnings and errors in the log")
    return p


def with_output_size(cfg: ModelConfig, size: int | None) -> ModelConfig:
    """cfg with its output long side set to `size` (None: unchanged). Only the motion tier draws at any size."""
    if size is None:
        return cfg
    if cfg.motion is None:
        raise InputError(f"--size applies to the motion preset; {cfg.name} draws at its own "
                         f"{cfg.stream.image_size} px")
    if not 64 <= size <= 2048 or size % 2:
        raise InputError(f"--size must be an even number of pixels between 64 and 2048, got {size}")
    return replace(cfg, stream=replace(cfg.stream, image_size=size))


def default_threads() -> int:
    """torch threads for the server: all cores but one, which the event loop, RTP and the codecs need.

    Measured on 2 cores (benchmarks/webrtc_latency.py): 1 torch thread gave 12-15 generated frames/s
    against 8-11 with 2, whose OpenMP threads spin against the loop and other processes.
    """
    return max(1, (os.cpu_count() or 2) - 1)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run(args: argparse.Namespace) -> int:
    if not is_loopback(args.host) and not args.token:
        raise InputError(f"--host {args.host} exposes the server beyond this machine: also pass --token SECRET "
                         "(clients then send 'Authorization: Bearer SECRET'), or keep the default 127.0.0.1")
    if not 0 <= args.port <= 65535:
        raise InputError(f"--port must be between 0 and 65535, got {args.port}")
    if args.max_batch < 1:
        raise InputError(f"--max-batch must be at least 1, got {args.max_batch}")
    try:
        from aiohttp import web

        from livehead.server.webrtc.app import APP_KEY, ServeConfig, create_app
    except ImportError as err:
        raise InputError(f"the server needs the 'server' extra ({err.name} is missing): "
                         "pip install 'livehead[server]'") from None
    import torch

    if args.threads is not None and args.threads < 1:
        raise InputError(f"--threads must be at least 1, got {args.threads}")
    torch.set_num_threads(args.threads or default_threads())
    cfg = with_output_size(ModelConfig.from_name(args.preset), args.size)
    device = resolve_device(args.device)
    args.backend = live_backend(cfg, args.backend, args.device)
    runners = make_runners(cfg, args.backend, args.weights, args.device, args.exported,
                           controls=motion_controls(args))
    config = ServeConfig(max_sessions=args.max_sessions, capacity=args.capacity, token=args.token,
                         ice_servers=tuple(args.ice_server),
                         latency=args.latency, max_batch=args.max_batch)
    app = create_app(runners, config)

    async def report(app) -> None:
        server = app[APP_KEY]
        print(f"livehead serve: ready; latency {server.latency:.2f} s (first clip waits for "
              f"{server.first_clip_audio_s:.2f} s of audio, one clip computes in {server.compute_s:.2f} s); "
              f"capacity {server.capacity} sessions at {cfg.stream.image_size} px", file=sys.stderr, flush=True)

    app.on_startup.append(report)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    print_seeded_note(cfg, args.weights)
    print(f"livehead serve: http://{args.host}:{args.port}/ (preset {cfg.name} on {device} with {args.backend}, "
          f"up to {args.max_sessions} sessions; warming up...)", file=sys.stderr, flush=True)
    web.run_app(app, host=args.host, port=args.port, print=None, shutdown_timeout=5.0)
    return 0

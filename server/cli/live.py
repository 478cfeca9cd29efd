"""`livehead live`: the avatar driven by the microphone, a camera, or files played as them, locally (server/desktop).

Inputs: `--mic` or `--audio FILE` (exclusive) and/or `--camera SOURCE` (a webcam index or a video file); at
least one of the three. The camera alone drives head, eyes and mouth; beside a voice, head and eyes.
"""

from __future__ import annotations

import argparse

from livehead.engine.media.bundled import DEFAULT_IMAGE
from livehead.engine.motion.driver import DEFAULT_SMOOTHING
from livehead.server.cli.common import add_model_arguments
from livehead.server.desktop.live import cmd_live


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("live", help="drive the avatar from the microphone and/or a camera (or files played as "
                       "them) in real time, shown in a window or written to an mp4")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--mic", action="store_true", help="capture the default microphone (needs the 'live' extra)")
    src.add_argument("--audio", default=None, help="simulate a microphone with this audio file, in real time")
    p.add_argument("--camera", default=None, metavar="SOURCE",
                   help="drive the face from a webcam (its index: 0 is the first) or a video file played as one "
                   "in real time; alone it moves head, eyes and mouth, with --mic/--audio head and eyes "
                   "(motion preset)")
    p.add_argument("--camera-smoothing", type=float, default=DEFAULT_SMOOTHING,
                   help=f"camera motion smoothing, 0 (none) .. 1 (strongest), causal (default {DEFAULT_SMOOTHING})")
    p.add_argument("--image", default=str(DEFAULT_IMAGE), help="portrait photo (default: bundled portrait)")
    p.add_argument("--out", default=None, help="also write the avatar (with the captured audio) to this .mp4; "
                   "required when there is no display")
    p.add_argument("--no-window", action="store_true", help="never open a window (needs --out)")
    p.add_argument("--seconds", type=float, default=None, help="stop after this many seconds of audio "
                   "(default: end of the --audio file, or of a --camera file given alone; Ctrl-C or closing "
                   "the window otherwise)")
    p.add_argument("--input-device", default=None, help="sounddevice input device (index or name substring)")
    add_model_arguments(p)
    p.add_argument("--json", default=None, help="write the final latency (and camera) figures here as JSON")
    p.add_argument("--quiet", action="store_true", help="only the final summary line, no per-second stats")
    p.set_defaults(live_usage_error=p.error)  # run() reports a missing input the way argparse does
    return p


def run(args: argparse.Namespace) -> int:
    if not (args.mic or args.audio or args.camera):
        args.live_usage_error("one of the arguments --mic --audio --camera is required")
    return cmd_live(args)

"""`livehead live`: the avatar driven by the microphone (or a file played as one), locally (server/desktop)."""

from __future__ import annotations

import argparse

from livehead.engine.media.bundled import DEFAULT_IMAGE
from livehead.server.cli.common import add_model_arguments
from livehead.server.desktop.live import cmd_live


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("live", help="drive the avatar from the microphone (or a file played as one) in real time, "
                       "shown in a window or written to an mp4")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--mic", action="store_true", help="capture the default microphone (needs the 'live' extra)")
    src.add_argument("--audio", default=None, help="simulate a microphone with this audio file, in real time")
    p.add_argument("--image", default=str(DEFAULT_IMAGE), help="portrait photo (default: bundled portrait)")
    p.add_argument("--out", default=None, help="also write the avatar (with the captured audio) to this .mp4; "
                   "required when there is no display")
    p.add_argument("--no-window", action="store_true", help="never open a window (needs --out)")
    p.add_argument("--seconds", type=float, default=None, help="stop after this many seconds of audio "
                   "(default: end of --audio file; Ctrl-C or closing the window for --mic)")
    p.add_argument("--input-device", default=None, help="sounddevice input device (index or name substring)")
    add_model_arguments(p)
    p.add_argument("--json", default=None, help="write the final latency figures here as JSON")
    p.add_argument("--quiet", action="store_true", help="only the final summary line, no per-second stats")
    return p


def run(args: argparse.Namespace) -> int:
    return cmd_live(args)

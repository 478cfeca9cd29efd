"""`livehead reenact`: a photo (or several of one person) moved by the face in a driving video, to an mp4."""

from __future__ import annotations

import argparse
from pathlib import Path

from livehead.engine.motion.driver import DEFAULT_SMOOTHING
from livehead.engine.motion.photo import DEFAULT_MAX_SIDE
from livehead.engine.runtime.reenact import ReenactOptions, reenact_file
from livehead.server.cli.common import raise_input


def add_parser(sub) -> argparse.ArgumentParser:
    a = sub.add_parser("reenact", help="move a photo with the face in a driving video (any person) to an mp4")
    a.add_argument("--image", action="append", required=True, metavar="PHOTO",
                   help="photo of the person to move; repeat for more photos of the same person (the first sets "
                        "the framing; the others lend their mouth and pose where a frame is close to them)")
    a.add_argument("--video", required=True, help="driving video: any person's face; its audio goes into the output")
    a.add_argument("--out", default="livehead-reenact.mp4", help="output mp4 (H.264 + AAC, 25 fps)")
    a.add_argument("--neutral-frame", type=int, default=None, metavar="N",
                   help="the driving video's frame (from 0) with a relaxed face that motion is measured from "
                        "(default: the first frame with a face)")
    mode = a.add_mutually_exclusive_group()
    mode.add_argument("--relative", dest="mode", action="store_const", const="relative",
                      help="transfer the driver's changes from its neutral frame; the photo keeps its own face "
                           "shape (default)")
    mode.add_argument("--absolute", dest="mode", action="store_const", const="absolute",
                      help="the photo takes the driver's face shape too (for a driver who is the photo's person)")
    a.set_defaults(mode="relative")
    a.add_argument("--smoothing", type=float, default=DEFAULT_SMOOTHING,
                   help=f"causal smoothing of the tracked motion, 0 (none) to 1 (strongest), "
                        f"default {DEFAULT_SMOOTHING}")
    a.add_argument("--size", type=int, default=DEFAULT_MAX_SIDE, help="the output's long side at most (pixels)")
    a.add_argument("--quiet", action="store_true", help="no progress bar")
    return a


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.suffix.lower() != ".mp4":
        raise_input(f"--out must name an .mp4 file, got {args.out!r}")
    if not out.parent.is_dir():
        raise_input(f"output directory does not exist: {out.parent}; create it or choose another --out")
    if not 0.0 <= args.smoothing <= 1.0:
        raise_input(f"--smoothing must be between 0 and 1, got {args.smoothing}")
    if args.size < 64:
        raise_input(f"--size must be at least 64 pixels, got {args.size}")
    options = ReenactOptions(neutral_frame=args.neutral_frame, mode=args.mode, smoothing=args.smoothing,
                             max_side=args.size)
    report = reenact_file(args.image, args.video, out, options, progress=not args.quiet)
    for note in report.notes:
        print(f"note: {note}")
    use = ", ".join(f"{u:.2f}" for u in report.reference_use)
    print(f"wrote {out}: {report.frames} frames at 25 fps from {report.source_frames} driving frames at "
          f"{report.source_fps:g} fps (neutral frame {report.neutral_frame}, {args.mode}), "
          f"{'with' if report.audio else 'without'} audio, {report.references} photo"
          f"{'s' if report.references != 1 else ''} (mean use {use}), {report.frames / report.wall_seconds:.1f} "
          f"frames/s")
    return 0

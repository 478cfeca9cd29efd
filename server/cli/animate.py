"""`livehead animate`: a portrait speaking an audio file, rendered to an mp4 through the streaming session."""

from __future__ import annotations

import argparse
from pathlib import Path

from livehead.engine.media.bundled import DEFAULT_AUDIO, DEFAULT_IMAGE
from livehead.engine.model.config import ModelConfig
from livehead.engine.runtime.render import render_file
from livehead.engine.runtime.runners import resolve_device
from livehead.server.backends.runners import make_runners, motion_controls, print_seeded_note
from livehead.server.cli.common import add_model_arguments, raise_input


def add_parser(sub) -> argparse.ArgumentParser:
    a = sub.add_parser("animate", help="render a portrait speaking an audio file to an mp4")
    a.add_argument("--image", default=str(DEFAULT_IMAGE), help="portrait photo (default: bundled portrait)")
    a.add_argument("--audio", default=str(DEFAULT_AUDIO), help="speech or song, any container (default: bundled clip)")
    a.add_argument("--out", default="livehead-demo.mp4", help="output mp4 (H.264 + AAC, 25 fps)")
    add_model_arguments(a)
    a.add_argument("--schedule", default="stream", help="stream (causal, the live path) or offline (EchoMimic's "
                   "reference: whole-file audio features, all windows jointly)")
    a.add_argument("--quiet", action="store_true", help="no progress bar")
    return a


def run(args: argparse.Namespace) -> int:
    cfg = ModelConfig.from_name(args.preset)
    if args.steps is not None:
        cfg = cfg.with_steps(args.steps)
    device = resolve_device(args.device)
    out = Path(args.out)
    if out.suffix.lower() != ".mp4":
        raise_input(f"--out must name an .mp4 file, got {args.out!r}")
    if not out.parent.is_dir():
        raise_input(f"output directory does not exist: {out.parent}; create it or choose another --out")
    runners = make_runners(cfg, args.backend, args.weights, args.device, args.exported, progress=not args.quiet,
                           controls=motion_controls(args))
    print_seeded_note(cfg, args.weights)
    report = render_file(runners, args.image, args.audio, out, seed=args.seed,
                         crop=not args.no_crop, progress=not args.quiet, schedule=args.schedule)
    print(f"wrote {out}: {report.frames} frames at {cfg.stream.fps} fps for {report.audio_seconds:.2f} s of audio "
          f"({report.fps:.1f} frames/s on {device} with {args.backend}, preset {cfg.name}, "
          f"{cfg.sampler.steps} step{'s' if cfg.sampler.steps != 1 else ''})")
    return 0

"""The `livehead` command.

    livehead animate [--image PHOTO] [--audio AUDIO] [--out OUT.mp4] [--preset tiny] [--weights DIR]
                     [--steps N] [--seed S] [--device auto|cpu|cuda] [--no-crop] [--quiet]
    livehead weights manifest --preset NAME

Bad input ends with a one-line `livehead: error: ...` on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ASSETS = Path(__file__).resolve().parent.parent / "engine" / "assets"
DEFAULT_IMAGE = ASSETS / "portrait.png"
DEFAULT_AUDIO = ASSETS / "speech.wav"
EXIT_BAD_INPUT = 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="livehead", description="Real-time talking-head engine (EMO family).")
    sub = p.add_subparsers(dest="command", required=True)

    a = sub.add_parser("animate", help="render a portrait speaking an audio file to an mp4")
    a.add_argument("--image", default=str(DEFAULT_IMAGE), help="portrait photo (default: bundled portrait)")
    a.add_argument("--audio", default=str(DEFAULT_AUDIO), help="speech or song, any container (default: bundled clip)")
    a.add_argument("--out", default="livehead-demo.mp4", help="output mp4 (H.264 + AAC, 25 fps)")
    a.add_argument("--preset", default="tiny", help="tiny (embedded default), echomimic-v1, echomimic-v1-acc")
    a.add_argument("--weights", default=None, help="weights directory (required for the echomimic presets)")
    a.add_argument("--steps", type=int, default=None, help="sampling steps (default: the preset's)")
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
    a.add_argument("--no-crop", action="store_true", help="use the whole image when no face is detected")
    a.add_argument("--quiet", action="store_true", help="no progress bar")

    w = sub.add_parser("weights", help="checkpoint tools")
    wsub = w.add_subparsers(dest="weights_command", required=True)
    m = wsub.add_parser("manifest", help="print the preset's checkpoint keys and shapes as JSON")
    m.add_argument("--preset", default="tiny")
    return p


def cmd_animate(args: argparse.Namespace) -> int:
    from engine.config import ModelConfig
    from engine.model import TorchRunners, load_model, resolve_device
    from engine.render import render_file

    cfg = ModelConfig.from_name(args.preset)
    if args.steps is not None:
        cfg = cfg.with_steps(args.steps)
    device = resolve_device(args.device)
    out = Path(args.out)
    if out.suffix.lower() != ".mp4":
        raise_input(f"--out must name an .mp4 file, got {args.out!r}")
    if not out.parent.is_dir():
        raise_input(f"output directory does not exist: {out.parent}; create it or choose another --out")
    model = load_model(cfg, args.weights, device=device)
    if cfg.seeded_weights and args.weights is None:
        print(f"livehead: note: preset {cfg.name} has no trained weights yet; running deterministic seeded "
              f"weights (seed-fixed random model): the video shows the pipeline, not a talking face",
              file=sys.stderr)
    report = render_file(TorchRunners(model), args.image, args.audio, out, seed=args.seed,
                         crop=not args.no_crop, progress=not args.quiet)
    print(f"wrote {out}: {report.frames} frames at {cfg.stream.fps} fps for {report.audio_seconds:.2f} s of audio "
          f"({report.fps:.1f} frames/s on {device}, preset {cfg.name}, {cfg.sampler.steps} steps)")
    return 0


def cmd_weights(args: argparse.Namespace) -> int:
    from engine.config import ModelConfig
    from engine.model import build_manifest

    cfg = ModelConfig.from_name(args.preset)
    json.dump(build_manifest(cfg), sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 0


def raise_input(message: str):
    from engine.errors import InputError

    raise InputError(message)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    args = _parser().parse_args(argv)
    from engine.errors import InputError

    try:
        if args.command == "animate":
            return cmd_animate(args)
        return cmd_weights(args)
    except InputError as err:
        print(f"livehead: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("livehead: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

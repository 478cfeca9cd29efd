"""`livehead weights manifest|download|convert`: checkpoint tools."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from livehead.engine.model.config import ModelConfig
from livehead.engine.weights.files import convert_to_safetensors
from livehead.engine.weights.hub import download_weights
from livehead.engine.weights.loading import build_manifest
from livehead.server.cli.common import DEFAULT_PRESET, raise_input


def add_parser(sub) -> argparse.ArgumentParser:
    w = sub.add_parser("weights", help="checkpoint tools")
    wsub = w.add_subparsers(dest="weights_command", required=True)
    m = wsub.add_parser("manifest", help="print the preset's checkpoint keys and shapes as JSON")
    m.add_argument("--preset", default=DEFAULT_PRESET,
                     help="motion (embedded default), tiny, echomimic-v1, echomimic-v1-acc")
    d = wsub.add_parser("download", help="fetch a preset's public checkpoints from the Hugging Face hub "
                        "(resumable; files already complete are skipped)")
    d.add_argument("preset", help="echomimic-v1-acc or echomimic-v1")
    d.add_argument("--dir", default=None, help="weights directory (default: weights/PRESET)")
    d.add_argument("--quiet", action="store_true", help="no progress bars")
    c = wsub.add_parser("convert", help="rewrite a weights directory's files as checked .safetensors "
                        "(loaded in preference to the .pth files)")
    c.add_argument("dir", help="weights directory in the release layout")
    c.add_argument("--preset", default="echomimic-v1-acc")
    c.add_argument("--out", default=None, help="write the .safetensors files here (default: beside the originals)")
    c.add_argument("--dtype", default="fp16", help="fp16 (default), bf16 or fp32")
    c.add_argument("--quiet", action="store_true", help="no progress bar")
    return w


def _size(path: Path) -> str:
    n = path.stat().st_size if path.is_file() else 0
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def cmd_weights_download(args: argparse.Namespace) -> int:
    dest = Path(args.dir) if args.dir else Path("weights") / args.preset
    counts = {"present": 0, "fetched": 0}

    def report(status: str, path: Path) -> None:
        counts[status] += 1
        print(f"{status:8s} {path} ({_size(path)})", flush=True)

    download_weights(args.preset, dest, progress=not args.quiet, report=report)
    print(f"weights for {args.preset} in {dest}: {counts['fetched']} fetched, {counts['present']} already present; "
          f"use: livehead animate --preset {args.preset} --weights {dest}")
    return 0


DTYPES = {"fp16": "float16", "bf16": "bfloat16", "fp32": "float32"}


def cmd_weights_convert(args: argparse.Namespace) -> int:
    import torch

    if args.dtype not in DTYPES:
        raise_input(f"--dtype must be fp16, bf16 or fp32, got {args.dtype!r}")
    cfg = ModelConfig.from_name(args.preset)
    out = Path(args.out) if args.out else None
    written = convert_to_safetensors(cfg, Path(args.dir), out, dtype=getattr(torch, DTYPES[args.dtype]),
                                     progress=not args.quiet)
    for path in written:
        print(f"wrote    {path} ({_size(path)})")
    print(f"{len(written)} files as {args.dtype} safetensors; they are loaded in preference to the .pth files "
          f"(use: livehead animate --preset {cfg.name} --weights {out or args.dir})")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.weights_command == "download":
        return cmd_weights_download(args)
    if args.weights_command == "convert":
        return cmd_weights_convert(args)

    cfg = ModelConfig.from_name(args.preset)
    json.dump(build_manifest(cfg), sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 0

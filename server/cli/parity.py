"""`livehead parity`: livehead against EchoMimic's recorded outputs on a fixture set, stage by stage."""

from __future__ import annotations

import argparse
from pathlib import Path

from livehead.engine.eval.bench import save_result
from livehead.engine.eval.parity import format_report, results_json, run_parity


def add_parser(sub) -> argparse.ArgumentParser:
    q = sub.add_parser("parity", help="check livehead against EchoMimic's recorded outputs on a fixture set")
    q.add_argument("--fixtures", required=True, help="fixture folder (config.json, *.safetensors, *.npz, *.npy)")
    q.add_argument("--json", default=None, help="also write the per-stage errors as JSON here")
    q.add_argument("--quiet", action="store_true", help="no progress bar")
    return q


def run(args: argparse.Namespace) -> int:
    results = run_parity(Path(args.fixtures), progress=not args.quiet)
    print(format_report(results))
    if args.json:
        save_result(args.json, results_json(Path(args.fixtures), results))
    return 0 if all(r.ok for r in results) else 1

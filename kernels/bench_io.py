"""What the kernels' `--bench` entries share: the CUDA check, the CPU's name and the JSON they save."""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import torch


def require_cuda(prog: str) -> None:
    """Exit with status 2 and a message when no CUDA GPU is present (timing needs one)."""
    if not torch.cuda.is_available():
        print(f"{prog} --bench needs a CUDA GPU (none found); the kernels run on CPU only under "
              "TRITON_INTERPRET=1 for tests", file=sys.stderr)
        sys.exit(2)


def cpu_name() -> str:
    """The CPU's model name (Linux /proc/cpuinfo), else what the platform says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def save_json(path: str | None, name: str, dtype: str, rows: list[dict]) -> None:
    """`--json PATH`: the table's rows with the device and versions (for benchmarks/results/)."""
    if not path:
        return
    import triton

    info = dict(kernel=name, device=torch.cuda.get_device_name(), dtype=dtype, triton=triton.__version__,
                torch=torch.__version__, timing="triton.testing.do_bench median, ms", rows=rows)
    with open(path, "w") as f:
        json.dump(info, f, indent=2)
    print(f"saved {path}")


def bench_parser(prog: str, doc: str, bench_help: str) -> argparse.ArgumentParser:
    """The options every `--bench` entry takes: --bench, --dtype, --batch, --json."""
    parser = argparse.ArgumentParser(prog=prog, description=doc.split("\n")[0])
    parser.add_argument("--bench", action="store_true", help=bench_help)
    parser.add_argument("--dtype", choices=["fp16", "bf16"], default="fp16")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--json", metavar="PATH", help="also save the rows, device and versions as JSON")
    return parser


def parse_bench_args(parser: argparse.ArgumentParser, argv: list[str] | None):
    """(args, torch dtype) to benchmark with, or None after printing help (no --bench); exits without CUDA."""
    args = parser.parse_args(argv)
    if not args.bench:
        parser.print_help()
        return None
    require_cuda(parser.prog)
    return args, {"fp16": torch.float16, "bf16": torch.bfloat16}[args.dtype]

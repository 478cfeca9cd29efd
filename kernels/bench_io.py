"""What the kernels' `--bench` entries share: the CUDA check and the JSON they save."""

from __future__ import annotations

import json
import sys

import torch


def require_cuda(prog: str) -> None:
    """Exit with status 2 and a message when no CUDA GPU is present (timing needs one)."""
    if not torch.cuda.is_available():
        print(f"{prog} --bench needs a CUDA GPU (none found); the kernels run on CPU only under "
              "TRITON_INTERPRET=1 for tests", file=sys.stderr)
        sys.exit(2)


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

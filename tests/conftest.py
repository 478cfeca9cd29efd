"""Shared test helpers: where the EchoMimic reference fixtures live; Triton's interpreter on CPU.

They sit in the shared reference folder beside the checkout (`../shared/reference/echomimic/fixtures`);
LIVEHEAD_FIXTURES overrides. Tests that need them skip with a reason when they are absent.

Without CUDA the Triton kernels (`kernels/`) run under the interpreter, which must be chosen before
triton is first imported: hence TRITON_INTERPRET=1 is set here, at import time.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from tests import SHARED

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

DEFAULT_FIXTURES = SHARED / "reference" / "echomimic" / "fixtures"


def fixtures_dir() -> Path:
    return Path(os.environ.get("LIVEHEAD_FIXTURES", str(DEFAULT_FIXTURES)))


def fixture_path(name: str) -> Path:
    """Path of one fixture file; skips the calling test when it is missing."""
    path = fixtures_dir() / name
    if not path.exists():
        pytest.skip(f"EchoMimic fixture {path} not found (set LIVEHEAD_FIXTURES to the fixtures directory)")
    return path

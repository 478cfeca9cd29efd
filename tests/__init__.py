"""livehead's tests, mirroring the rooms (tests/engine/model/ tests engine/model/, ...); shared paths here,
shared fixtures in conftest.py, shared helpers in helpers.py."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the repository
ASSETS = ROOT / "engine" / "assets"  # the bundled portrait, speech and tiny weights
SHARED = ROOT.parent / "shared"  # the shared reference folder beside the checkout
GRID = SHARED / "data" / "grid"  # GRID sample clips (CC BY 4.0)

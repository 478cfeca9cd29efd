"""Fitting the motion space: clip discovery with held-out names left out, clear errors, and (slow, with the
GRID sample clips) the shipped engine/assets/motion/motion_space.npz reproduced by the command."""

from __future__ import annotations

import numpy as np
import pytest

from livehead.engine.common.errors import InputError
from livehead.engine.motion.space import GRID_HELD_OUT, GRID_TRAIN, MotionSpace, default_motion_space
from livehead.engine.training.motion_space import find_clips, main
from tests import GRID


def test_find_clips_leaves_out_the_excluded(tmp_path):
    for name in ("a.mpg", "b.mp4", "held.mpg", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in find_clips(tmp_path, ("held",))] == ["a.mpg", "b.mp4"]
    with pytest.raises(InputError, match="no clips"):
        find_clips(tmp_path, ("a", "b", "held"))
    with pytest.raises(InputError, match="data folder not found"):
        find_clips(tmp_path / "missing")


def test_main_reports_an_error_in_one_line(tmp_path, capsys):
    assert main(["--data", str(tmp_path / "missing"), "--out", str(tmp_path / "s.npz")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("motion_space: error: data folder not found") and "\n" not in err


@pytest.mark.slow
def test_the_shipped_space_is_reproduced(tmp_path, capsys):
    if not all((GRID / f"{n}.mpg").exists() for n in GRID_TRAIN):
        pytest.skip(f"GRID sample clips not found at {GRID}")
    out = tmp_path / "space.npz"
    args = ["--data", str(GRID), "--out", str(out), "--quiet"] + [a for n in GRID_HELD_OUT for a in ("--exclude", n)]
    assert main(args) == 0
    assert "14 components keep 99.1 %" in capsys.readouterr().out
    fitted, shipped = MotionSpace.load(out), default_motion_space()
    assert fitted.k == shipped.k
    np.testing.assert_allclose(fitted.canon, shipped.canon, atol=1e-9)
    np.testing.assert_allclose(fitted.energy, shipped.energy, atol=1e-9)
    cos = np.abs((fitted.components[: fitted.k] * shipped.components[: shipped.k]).sum(1))  # up to sign
    np.testing.assert_allclose(cos, 1.0, atol=1e-6)

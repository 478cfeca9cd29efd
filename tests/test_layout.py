"""The house: one import package in the wheel, rooms with a docstring each, layers and no import cycles
(import-linter on the built package), ruff clean."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests import ROOT

BIN = Path(sys.executable).parent
ROOMS = ("engine", "export", "kernels", "server")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel `pip wheel .` makes from the checkout's files (tracked and new, not ignored), built in a copy so
    no stale build/ folder leaks into it."""
    src, out = tmp_path_factory.mktemp("checkout"), tmp_path_factory.mktemp("wheel")
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout.splitlines()
    for name in listed:
        if (ROOT / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out),
                    str(src)], check=True, capture_output=True)
    (path,) = out.glob("livehead-*.whl")
    return path


@pytest.fixture(scope="module")
def unpacked(wheel, tmp_path_factory) -> Path:
    site = tmp_path_factory.mktemp("site")
    with zipfile.ZipFile(wheel) as z:
        z.extractall(site)
    return site


def lint_imports(site: Path) -> subprocess.CompletedProcess:
    """import-linter's contracts (pyproject.toml) over the package installed at `site`."""
    return subprocess.run([str(BIN / "lint-imports"), str(ROOT / "pyproject.toml"), "--no-cache"],
                          cwd=site, env={"PYTHONPATH": str(site), "PATH": str(BIN)}, capture_output=True, text=True)


def test_wheel_installs_exactly_one_top_level_package(wheel):
    names = {n.split("/")[0] for n in zipfile.ZipFile(wheel).namelist()}
    assert {n for n in names if not n.endswith(".dist-info")} == {"livehead"}


def test_wheel_holds_every_module_of_the_rooms(wheel):
    files = set(zipfile.ZipFile(wheel).namelist())
    for room in ROOMS:
        for py in (ROOT / room).rglob("*.py"):
            assert f"livehead/{py.relative_to(ROOT).as_posix()}" in files, f"{py} is missing from the wheel"
    assert "livehead/server/webrtc/static/index.html" in files
    assert "livehead/engine/assets/tiny/livehead.json" in files


def test_engine_and_server_code_lives_in_rooms_that_say_what_they_hold():
    for top in ("engine", "server"):
        loose = [p.name for p in (ROOT / top).glob("*.py") if p.name != "__init__.py"]
        assert not loose, f"{top}/ holds modules outside a room: {loose}"
        rooms = [d for d in (ROOT / top).iterdir() if d.is_dir() and (d / "__init__.py").exists()]
        assert len(rooms) >= 4
        for room in rooms:
            doc = ast.get_docstring(ast.parse((room / "__init__.py").read_text()))
            assert doc and "import" in doc, f"{room}/__init__.py must say what lives there and what it may import"


def test_layers_and_acyclic_contracts_hold(unpacked):
    result = lint_imports(unpacked)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize("module, added, contract", [
    ("engine/model/config.py", "import livehead.server.cli.main", "server -> export -> engine -> kernels"),
    ("engine/model/unet.py", "import livehead.engine.training.train", "engine rooms"),
    ("engine/runtime/runners.py", "import livehead.engine.runtime.session", "no import cycles"),
])
def test_an_upward_import_or_a_cycle_breaks_the_check(unpacked, tmp_path, module, added, contract):
    site = tmp_path / "site"
    shutil.copytree(unpacked, site)
    target = site / "livehead" / module
    target.write_text(target.read_text() + f"\n{added}  # deliberately wrong\n")
    result = lint_imports(site)
    assert result.returncode != 0
    assert f"{contract}" in result.stdout and "BROKEN" in result.stdout, result.stdout


def test_ruff_is_clean():
    result = subprocess.run([str(BIN / "ruff"), "check", "--no-cache", "."], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr

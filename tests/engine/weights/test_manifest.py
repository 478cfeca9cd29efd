"""`livehead weights manifest` equals the key/shape catalogue of the real EchoMimic files."""

from __future__ import annotations

import json

import pytest

from livehead.server.cli.main import main
from tests.conftest import fixture_path


def _manifest(capsys, preset: str) -> dict:
    assert main(["weights", "manifest", "--preset", preset]) == 0
    return json.loads(capsys.readouterr().out)


def test_acc_manifest_equals_echomimic_catalogue(capsys):
    expected = json.loads(fixture_path("keys_full.json").read_text())
    got = _manifest(capsys, "echomimic-v1-acc")
    for group, keys in expected.items():
        if group == "_about":
            continue
        if group.startswith("whisper_tiny.pt"):
            keys = {k: v for k, v in keys.items() if k.startswith("encoder.")}
        assert got[group] == keys, group
        assert len(got[group]) == len(keys)


def test_normal_and_acc_presets_share_the_layout(capsys):
    acc = _manifest(capsys, "echomimic-v1-acc")
    normal = _manifest(capsys, "echomimic-v1")
    assert {k: v for k, v in acc.items() if k != "_about"} == {k: v for k, v in normal.items() if k != "_about"}


def test_tiny_manifest_has_every_group_and_is_small(capsys):
    tiny = _manifest(capsys, "tiny")
    full = _manifest(capsys, "echomimic-v1-acc")
    assert set(tiny) == set(full)
    # same module tree at a smaller size; only shortcuts of blocks whose width does not change vanish
    for group in ("reference_unet.pth", "denoising_unet.pth"):
        missing = set(full[group]) - set(tiny[group])
        assert set(tiny[group]) <= set(full[group])
        assert missing and all(".conv_shortcut." in k for k in missing)
    assert set(tiny["motion_module.pth"]) == set(full["motion_module.pth"])
    values = sum(_numel(s) for g, keys in tiny.items() if g != "_about" for s in keys.values())
    assert values < 50_000_000


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


@pytest.mark.parametrize("group,count", [("reference_unet.pth", 570), ("denoising_unet.pth", 686),
                                         ("motion_module.pth", 588), ("face_locator.pth", 16)])
def test_key_counts(capsys, group, count):
    assert len(_manifest(capsys, "echomimic-v1")[group]) == count

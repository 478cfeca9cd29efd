"""Where a preset's weights come from: --weights, the weights shipped in the package, or the seeded model."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from livehead.engine.common.errors import InputError
from livehead.engine.model.config import ModelConfig
from livehead.engine.training.train import export_weights
from livehead.engine.weights.loading import (
    SEEDED,
    bundled_weights_dir,
    load_model,
    resolve_weights,
    seeded_note,
    weights_identity,
    weights_label,
)

TINY = ModelConfig.from_name("tiny")


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    """A tiny preset whose shipped folder holds a perturbed copy of the seeded model."""
    root = tmp_path_factory.mktemp("shipped")
    state = load_model(TINY, SEEDED).state_dict()
    state["denoiser.conv_in.weight"] = state["denoiser.conv_in.weight"] + 0.25
    export_weights(TINY, state, root, dtype=torch.float32)
    # an absolute folder stands in for one inside the package
    return replace(TINY, bundled_weights=str(root)), root


def test_shipped_weights_are_the_default_and_seeded_stays_reachable(shipped):
    cfg, root = shipped
    assert bundled_weights_dir(cfg) == root and resolve_weights(cfg, None) == root
    default, seeded = load_model(cfg), load_model(cfg, SEEDED)
    torch.testing.assert_close(default.denoiser.conv_in.weight, seeded.denoiser.conv_in.weight + 0.25)
    assert weights_label(cfg, None) == "bundled" and weights_label(cfg, SEEDED) == SEEDED
    assert seeded_note(cfg, None) is None and "seeded weights" in seeded_note(cfg, SEEDED)
    assert weights_identity(cfg, None) != weights_identity(cfg, SEEDED) == "seeded:tiny"
    assert weights_label(cfg, str(root)) == str(root)


def test_a_folder_without_its_marker_is_not_shipped_weights(shipped, tmp_path):
    cfg, root = shipped
    half = tmp_path / "half"
    half.mkdir()
    (half / "denoising_unet.safetensors").write_bytes((root / "denoising_unet.safetensors").read_bytes())
    cfg = replace(cfg, bundled_weights=str(half))  # e.g. an interrupted copy: no livehead.json
    assert bundled_weights_dir(cfg) is None and resolve_weights(cfg, None) is None
    assert "seeded weights" in seeded_note(cfg, None)


def test_presets_without_seeded_weights_need_a_folder():
    acc = ModelConfig.from_name("echomimic-v1-acc")
    with pytest.raises(InputError, match="needs its weights"):
        resolve_weights(acc, None)
    with pytest.raises(InputError, match="no seeded weights"):
        load_model(acc, SEEDED)


def test_identity_follows_the_files(shipped, tmp_path):
    cfg, _root = shipped
    copy = tmp_path / "copy"
    export_weights(TINY, load_model(cfg).state_dict(), copy)
    before = weights_identity(cfg, copy)
    assert before == weights_identity(cfg, copy)
    (copy / "livehead.json").write_text(json.dumps({"preset": "tiny", "note": "edited"}))
    assert weights_identity(cfg, copy) != before

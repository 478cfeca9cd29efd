"""The motion tier's learned parts (Whisper-tiny, the motion generator) exported to ONNX and run by ONNX Runtime
behind the same Session: the same motion, the same frames as torch."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("onnxruntime", reason="needs the 'export' extra: pip install 'livehead[export]'")

from livehead.engine.model.config import ModelConfig
from livehead.engine.runtime.portrait import bundled_demo
from livehead.engine.runtime.runners import torch_runners
from livehead.engine.runtime.session import Session, prepare_avatar
from livehead.engine.weights.loading import load_model, weights_identity
from livehead.export.onnx_export import export_preset
from livehead.export.ort_runners import OrtMotionRunners, OrtRunners
from livehead.server.cli.main import main

CFG = ModelConfig.from_name("motion")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("motion_export")
    manifest = export_preset(CFG, load_model(CFG), out, progress=False, weights_id=weights_identity(CFG, None))
    return out, manifest


def _stream(runners, seconds: float = 1.2):
    picture, pcm = bundled_demo(CFG, seconds=seconds)
    session = Session(runners, prepare_avatar(runners, picture.image, picture.mask))
    session.push_audio(pcm, CFG.audio.sample_rate)
    session.flush()
    return list(session.frames())


def test_export_writes_the_learned_parts_and_the_motion_scale(exported):
    out, manifest = exported
    assert set(manifest["components"]) == {"audio_encoder", "motion_generator"}
    assert len(manifest["motion_mean"]) == CFG.motion.motion_dim == len(manifest["motion_std"])
    assert json.loads((out / "manifest.json").read_text())["preset"] == "motion"


def test_onnxruntime_gives_the_motion_and_frames_of_torch(exported):
    out, _ = exported
    ort = OrtRunners.from_dir(CFG, out)
    assert isinstance(ort, OrtMotionRunners)
    torch_frames, ort_frames = _stream(torch_runners(load_model(CFG))), _stream(ort)
    assert len(torch_frames) == len(ort_frames) == 30
    motion_error = max(float((a.latent - b.latent).abs().max()) for a, b in zip(torch_frames, ort_frames))
    assert motion_error < 1e-3
    diff = np.stack([a.image for a in torch_frames]).astype(float) - np.stack([b.image for b in ort_frames])
    psnr = 10 * np.log10(255.0**2 / max(np.mean(diff**2), 1e-12))
    assert psnr > 40, psnr


def test_motion_controls_reach_the_onnxruntime_runners(exported):
    out, _ = exported
    ort = OrtRunners.from_dir(CFG, out, expression=0.5, head_motion=0.0)
    assert (ort.expression, ort.head_motion) == (0.5, 0.0)


def test_bench_measures_the_motion_tier_with_the_pixel_model_beside_it(exported, tmp_path, capsys):
    out, _ = exported
    target = tmp_path / "bench.json"
    assert main(["bench", "--backend", "onnxruntime", "--exported", str(out), "--runs", "1", "--audio-seconds",
                 "1", "--json", str(target)]) == 0
    result = json.loads(target.read_text())
    assert result["preset"] == "motion"
    for figures in (result["figures"]["onnxruntime"], result["figures"]["torch"], result["beside"]["tiny"]):
        assert figures["fps"] > 0
        parts = figures["component_ms_per_frame"]
        assert parts["total"] == pytest.approx(sum(v for k, v in parts.items() if k != "total"), rel=0.01)
        for stage in ("audio_features", "generator", "render_or_decode"):  # each stage timed where it runs
            assert parts[stage] > 0, (stage, parts)
    assert result["figures"]["torch"]["output"] == "512x512"
    assert "ms per frame" in capsys.readouterr().out

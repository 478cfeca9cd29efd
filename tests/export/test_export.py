"""ONNX export of the tiny preset, the ONNX Runtime backend against torch fp32, and the TensorRT
logic that needs no TensorRT runtime (profiles, cache keys, ONNX preparation)."""

from __future__ import annotations

import json

import pytest
import torch

from livehead.engine.common.errors import InputError
from livehead.engine.media.audio_video import load_audio, load_image
from livehead.engine.media.bundled import DEFAULT_AUDIO, DEFAULT_IMAGE
from livehead.engine.media.face import prepare_portrait
from livehead.engine.model.config import ModelConfig
from livehead.engine.runtime.runners import TorchRunners
from livehead.engine.training.train import export_weights
from livehead.engine.weights.loading import load_model, trained_sampling, weights_identity
from livehead.export.check import component_errors, pipeline_psnr
from livehead.export.onnx_export import export_preset, read_manifest, sha256_of
from livehead.export.ort_runners import OrtRunners
from livehead.export.tensorrt import (
    Profile,
    TrtRunners,
    check_profile_covers,
    dynamic_inputs,
    engine_key,
    optimisation_profiles,
    prepare_onnx,
    tensorrt_available,
)
from livehead.server.backends.runners import default_export_dir, ensure_exported
from livehead.server.cli.main import main
from tests.helpers import probe_mp4

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    cfg = ModelConfig.from_name("tiny")
    model = load_model(cfg)
    out = tmp_path_factory.mktemp("exported")
    manifest = export_preset(cfg, model, out, progress=False, weights_id=weights_identity(cfg, None))
    return cfg, model, out, manifest


def test_every_graph_passes_the_checker_and_the_manifest_matches(exported):
    cfg, model, out, manifest = exported
    assert set(manifest["components"]) == {"audio_encoder", "vae_encoder", "face_locator", "reference", "denoiser",
                                           "denoiser_uncond", "vae_decoder"}
    assert read_manifest(out) == json.loads((out / "manifest.json").read_text())
    runners = OrtRunners.from_dir(cfg, out)
    # the folder knows the noise its weights were trained for: runners from the bare preset sample like torch
    assert manifest["reference_mix"] == runners.cfg.sampler.reference_mix == model.cfg.sampler.reference_mix
    for name, entry in manifest["components"].items():
        path = out / entry["file"]
        onnx.checker.check_model(str(path))
        assert entry["sha256"] == sha256_of(path)
        session = runners.sessions[name]
        assert [i["name"] for i in entry["inputs"]] == [i.name for i in session.get_inputs()]
        assert [o["name"] for o in entry["outputs"]] == [o.name for o in session.get_outputs()]
    den = {i["name"]: i for i in manifest["components"]["denoiser"]["inputs"]}
    assert den["sample"]["shape"] == ["batch", 4, "frames", "height", "width"]
    assert den["timestep"]["dtype"] == "int64" and len(den) == 4 + 32


def test_components_match_torch_on_two_shapes(exported):
    cfg, model, out, _ = exported
    rows = component_errors(model, OrtRunners.from_dir(cfg, out),
                            [(cfg.stream.window_frames, 1), (5, 2)])
    assert len(rows) == 14
    for r in rows:
        assert r.max_abs <= 1e-4 * max(1.0, r.scale), (r.component, r.output, r.max_abs)


def test_pipeline_psnr_at_least_40_db(exported):
    cfg, model, out, _ = exported
    crop = prepare_portrait(load_image(DEFAULT_IMAGE), cfg.stream.image_size)
    pcm = load_audio(DEFAULT_AUDIO, sample_rate=cfg.audio.sample_rate)[: cfg.audio.sample_rate]
    psnr, frames = pipeline_psnr(TorchRunners(model), OrtRunners.from_dir(cfg, out), crop.image, crop.mask, pcm,
                                 cfg.audio.sample_rate)
    assert frames == 25
    assert psnr >= 40.0


def test_wrong_or_missing_export_is_a_clean_error(exported, tmp_path):
    cfg, _, out, _ = exported
    with pytest.raises(InputError, match="run `livehead export` first"):
        OrtRunners.from_dir(cfg, tmp_path)
    with pytest.raises(InputError, match="exported for preset tiny"):
        OrtRunners.from_dir(ModelConfig.from_name("echomimic-v1-acc"), out)


def test_an_export_of_other_weights_is_redone_or_refused(exported, tmp_path, monkeypatch, capsys):
    """A manifest records its weights: a named folder of other weights is refused, the default one redone."""
    cfg, _, out, manifest = exported
    assert manifest["weights"] == weights_identity(cfg, None)
    assert ensure_exported(cfg, None, out, progress=False) == out  # same weights: reused as it is
    other = tmp_path / "other-weights"
    export_weights(cfg, load_model(cfg).state_dict(), other)
    with pytest.raises(InputError, match="other weights"):
        ensure_exported(cfg, str(other), out, progress=False)
    monkeypatch.chdir(tmp_path)
    default = default_export_dir(cfg)
    default.mkdir(parents=True)
    stale = dict(manifest, weights="seeded:tiny-before")
    (default / "manifest.json").write_text(json.dumps(stale))
    assert ensure_exported(cfg, None, default, progress=False) == default
    assert "exporting again" in capsys.readouterr().err
    assert read_manifest(default)["weights"] == weights_identity(cfg, None)
    OrtRunners.from_dir(cfg, default)  # a complete export again


def test_animate_with_onnxruntime_backend(exported, tmp_path, capsys):
    _, _, out, _ = exported
    video = tmp_path / "ort.mp4"
    assert main(["animate", "--preset", "tiny", "--backend", "onnxruntime", "--exported", str(out),
                 "--out", str(video), "--quiet"]) == 0
    assert "with onnxruntime" in capsys.readouterr().out

    assert probe_mp4(video)["frames"] == 100


def test_bench_command_saves_json(exported, tmp_path, capsys):
    _, _, out, _ = exported
    target = tmp_path / "bench.json"
    assert main(["bench", "--preset", "tiny", "--backend", "onnxruntime", "--exported", str(out), "--runs", "1",
                 "--audio-seconds", "1", "--json", str(target)]) == 0
    result = json.loads(target.read_text())
    assert result["figures"]["onnxruntime"]["fps"] > 0 and result["figures"]["torch"]["fps"] > 0
    assert result["speedup_vs_torch"] == pytest.approx(
        result["figures"]["onnxruntime"]["fps"] / result["figures"]["torch"]["fps"], rel=1e-2)
    assert "onnxruntime" in result["device"]
    assert result["weights"] == "bundled" and result["sampling_steps"] == 1 and result["audio_seconds"] == 1.0

    shipped = trained_sampling(ModelConfig.from_name("tiny"), None)  # the bundled weights' noise
    assert result["reference_mix"] == shipped.sampler.reference_mix


# ---- TensorRT logic without the TensorRT runtime ---------------------------------------------------

@pytest.mark.parametrize("preset", ["tiny", "echomimic-v1-acc"])
def test_profiles_cover_every_dynamic_input(exported, preset):
    _, _, _, manifest = exported
    cfg = ModelConfig.from_name(preset)
    profiles = optimisation_profiles(cfg, max_batch=4)
    assert set(profiles) == set(manifest["components"])
    den = profiles["denoiser"].shapes
    assert den["sample"][0] == (1, 4, cfg.stream.window_frames, cfg.latent_size, cfg.latent_size)
    assert den["sample"][2][0] == 4  # up to 4 sessions batched
    assert den["ref_k_0"][0][1] == cfg.latent_size**2 and den["ref_k_6"][0][1] == (cfg.latent_size // 8) ** 2
    if preset == "tiny":
        for name, entry in manifest["components"].items():
            assert set(dynamic_inputs(entry)) <= set(profiles[name].shapes)
            check_profile_covers(entry, profiles[name])


def test_profile_validation_and_static_dims(exported):
    _, _, _, manifest = exported
    with pytest.raises(ValueError):
        Profile({"x": ((2,), (1,), (3,))}).validate()
    wrong = Profile({"latents": ((1, 5, 16, 16),) * 3})  # 5 latent channels contradict the graph's 4
    with pytest.raises(InputError, match="contradicts"):
        check_profile_covers(manifest["components"]["vae_decoder"], wrong)
    with pytest.raises(InputError, match="no shapes"):
        check_profile_covers(manifest["components"]["vae_decoder"], Profile({}))


def test_engine_cache_key_changes_with_every_field(exported, tmp_path):
    _, _, out, _ = exported
    path = out / "vae_decoder.onnx"
    profile = optimisation_profiles(ModelConfig.from_name("tiny"))["vae_decoder"]
    base = engine_key(path, "10.9.0", "9.0", "fp16", profile).digest()
    assert base == engine_key(path, "10.9.0", "9.0", "fp16", profile).digest()
    other_profile = optimisation_profiles(ModelConfig.from_name("tiny"), max_batch=8)["vae_decoder"]
    variants = [engine_key(path, "10.10.0", "9.0", "fp16", profile),
                engine_key(path, "10.9.0", "8.9", "fp16", profile),
                engine_key(path, "10.9.0", "9.0", "bf16", profile),
                engine_key(path, "10.9.0", "9.0", "fp16", other_profile),
                engine_key(out / "face_locator.onnx", "10.9.0", "9.0", "fp16", profile)]
    assert len({base, *(v.digest() for v in variants)}) == 6


def test_the_exported_decoder_takes_the_avatars_photo(exported):
    """The tiny decoder's graph has the reference input and matches torch with it; without the photo
    it refuses rather than draw a different picture."""
    cfg, model, out, _ = exported
    runners = OrtRunners.from_dir(cfg, out)
    gen = torch.Generator().manual_seed(3)
    z = torch.randn(4, 4, cfg.latent_size, cfg.latent_size, generator=gen)
    ref = torch.rand(1, 3, cfg.stream.image_size, cfg.stream.image_size, generator=gen) * 2 - 1
    expected = TorchRunners(model).decode(z, ref)
    assert (runners.decode(z, ref) - expected).abs().max() < 1e-3
    assert (TorchRunners(model).decode(z) - expected).abs().max() > 1e-3  # the photo counts
    with pytest.raises(InputError, match="reference image"):
        runners.decode(z)


def test_prepare_onnx_keeps_the_graph_valid(exported):
    _, _, out, _ = exported
    prepared = prepare_onnx(out / "face_locator.onnx")
    onnx.checker.check_model(str(prepared))
    assert prepared.name == "face_locator.prepared.onnx"


@pytest.mark.gpu
@pytest.mark.skipif(not tensorrt_available(), reason="TensorRT is not installed (it cannot be on CI or the "
                    "project's GPU machines): the engine build/runtime is unverified there")
def test_tensorrt_engines_match_torch(exported):
    cfg, model, out, _ = exported
    runners = TrtRunners(cfg, out, precision="fp16")
    x = torch.randn(1, 4, cfg.stream.window_frames, cfg.latent_size, cfg.latent_size)
    ref = torch.rand(1, 3, cfg.stream.image_size, cfg.stream.image_size) * 2 - 1
    frames = runners.decode(x[0, :, :4].permute(1, 0, 2, 3), ref)
    expected = TorchRunners(model).decode(x[0, :, :4].permute(1, 0, 2, 3), ref)
    assert (frames.cpu() - expected).abs().max() < 1e-2

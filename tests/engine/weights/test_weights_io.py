"""Weights on disk: full-size EchoMimic layout, damaged files, safetensors conversion, hub download.

The full-size directory has the real file names, keys and shapes (from `keys_full.json`) but every
tensor is a stride-0 view of one element (`torch.full((), v).expand(shape)`): torch.save stores the
one-element storage, so a 3 GB checkpoint is a few KB on disk and in memory. No test touches the network:
the hub is made unreachable (HF_ENDPOINT on a closed local port, or HF_HUB_OFFLINE).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import typing
from pathlib import Path

import huggingface_hub
import huggingface_hub.constants
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from livehead.engine.common.errors import InputError
from livehead.engine.model.config import ModelConfig, VAEConfig
from livehead.engine.model.vae import AutoencoderKL
from livehead.engine.runtime.runners import TorchRunners
from livehead.engine.weights.files import VAE_GROUP, WHISPER_GROUP, convert_to_safetensors, shapes_of, weight_groups
from livehead.engine.weights.hub import download_weights, required_files
from livehead.engine.weights.loading import load_model
from livehead.server.cli.main import main
from tests import ROOT
from tests.conftest import fixture_path

CLOSED_PORT = "http://127.0.0.1:9"  # discard port: nothing listens, connections are refused at once
WHISPER_DIMS = {"n_mels": 80, "n_vocab": 51865, "n_audio_ctx": 1500, "n_audio_state": 384, "n_audio_head": 6,
                "n_audio_layer": 4, "n_text_ctx": 448, "n_text_state": 384, "n_text_head": 6, "n_text_layer": 4}
LEGACY_VAE = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}


# ------------------------------------------------------------------------------------ helpers


def _value(i: int) -> float:
    return ((i % 251) + 1) / 256.0  # exact in fp16 and bf16, distinct for neighbouring keys


def _rss_bytes() -> int | None:
    try:
        import psutil  # type: ignore[import-not-found]

        return int(psutil.Process().memory_info().rss)
    except ImportError:
        pass
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _legacy_vae_name(key: str) -> str:
    for new, old in LEGACY_VAE.items():
        if f".attentions.0.{new}." in key:
            return key.replace(f".{new}.", f".{old}.")
    return key


def _file_for(g) -> str:
    suffix = {WHISPER_GROUP: ".pt", VAE_GROUP: ".bin"}.get(g.name, ".pth")
    return f"{g.file_stem}{suffix}"


@pytest.fixture(scope="module")
def full_dir(tmp_path_factory) -> tuple[Path, dict[str, dict[str, float]]]:
    """Full-size `echomimic-v1-acc` release directory, stride-0 tensors; returns (dir, {file: {key: value}})."""
    catalogue = json.loads(fixture_path("keys_full.json").read_text())
    with torch.device("meta"):
        vae_shapes = shapes_of(AutoencoderKL(VAEConfig()))
    catalogue[VAE_GROUP] = {_legacy_vae_name(k): s for k, s in vae_shapes.items()}  # pre-0.14 diffusers names
    cfg = ModelConfig.from_name("echomimic-v1-acc")
    root = tmp_path_factory.mktemp("echomimic_full")
    values: dict[str, dict[str, float]] = {}
    i = 0
    for g in weight_groups(cfg):
        dtype = torch.float16 if g.name == WHISPER_GROUP else torch.float32  # the real whisper_tiny.pt is fp16
        sd = {}
        for key, shape in catalogue[g.name].items():
            i += 1
            sd[key] = torch.full((), _value(i), dtype=dtype).expand(shape)
        name = _file_for(g)
        values[name] = {k: float(v.reshape(-1)[0]) for k, v in sd.items()}
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if g.name == WHISPER_GROUP:
            torch.save({"dims": WHISPER_DIMS, "model_state_dict": sd}, path)
        elif g.name == "face_locator.pth":
            torch.save(sd, path, _use_new_zipfile_serialization=False)  # legacy format: cannot be mmap-ed
        else:
            torch.save(sd, path)
    return root, values


@pytest.fixture(scope="module")
def tiny_release(tmp_path_factory) -> tuple[Path, object]:
    """The tiny preset's seeded model saved as `.pth` files in the release layout; returns (dir, model)."""
    cfg = ModelConfig.from_name("tiny")
    model = load_model(cfg)
    components = model.components()
    root = tmp_path_factory.mktemp("tiny_release")
    for g in weight_groups(cfg):
        sd = {k: v.detach().clone() for k, v in components[g.component].state_dict().items() if g.selects(k)}
        path = root / _file_for(g)
        path.parent.mkdir(parents=True, exist_ok=True)
        if g.name == WHISPER_GROUP:
            sd = {"encoder." + k: v.half() for k, v in sd.items()}
            sd["decoder.x"] = torch.zeros(3)
            torch.save({"dims": WHISPER_DIMS, "model_state_dict": sd}, path)
        else:
            torch.save(sd, path)
    return root, model


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


# ------------------------------------------------------------------------------------ full-size load


def test_full_size_release_directory_loads(full_dir):
    root, values = full_dir
    catalogue = json.loads(fixture_path("keys_full.json").read_text())
    cfg = ModelConfig.from_name("echomimic-v1-acc")
    rss0 = _rss_bytes()
    peak0 = _peak_rss()
    model = load_model(cfg, root)
    rss1 = _rss_bytes()
    peak1 = _peak_rss()
    comps = model.components()
    states = {name: m.state_dict() for name, m in comps.items()}

    # every key of the catalogue landed with its shape (whisper: the encoder part only)
    for g in weight_groups(cfg):
        if g.name == VAE_GROUP:
            continue
        for key, shape in catalogue[g.name].items():
            if not key.startswith(g.key_prefix):
                assert key.startswith("decoder."), key
                continue
            assert list(states[g.component][key[len(g.key_prefix):]].shape) == shape, key

    # values: a few keys per component, from the file they were written to
    picks = {
        "reference_unet.pth": ("reference_net", ["conv_in.weight", "up_blocks.3.attentions.2.transformer_blocks.0"
                                                ".attn1.to_q.weight", "mid_block.resnets.1.conv2.bias"]),
        "denoising_unet_acc.pth": ("denoiser", ["conv_in.weight", "mid_block.attentions.0.transformer_blocks.0"
                                                ".attn2.to_k.weight", "conv_norm_out.weight"]),
        "motion_module_acc.pth": ("denoiser", ["down_blocks.0.motion_modules.0.temporal_transformer.norm.weight",
                                               "up_blocks.3.motion_modules.2.temporal_transformer.proj_out.bias",
                                               "mid_block.motion_modules.0.temporal_transformer.transformer_blocks"
                                               ".0.attention_blocks.1.pos_encoder.pe"]),
        "face_locator.pth": ("face_locator", ["conv_in.weight", "conv_out.weight"]),
        "audio_processor/whisper_tiny.pt": ("audio_encoder", ["encoder.positional_embedding",
                                                              "encoder.blocks.3.mlp.2.weight"]),
        "sd-vae-ft-mse/diffusion_pytorch_model.bin": ("vae", ["encoder.conv_in.weight",
                                                              "decoder.mid_block.attentions.0.query.weight",
                                                              "encoder.mid_block.attentions.0.proj_attn.bias"]),
    }
    for file, (component, keys) in picks.items():
        for key in keys:
            stored = values[file][key]
            module_key = key.removeprefix("encoder.") if component == "audio_encoder" else key
            for old, new in ((".query.", ".to_q."), (".proj_attn.", ".to_out.0.")):
                module_key = module_key.replace(old, new) if component == "vae" else module_key
            t = states[component][module_key]
            assert t.dtype == torch.float32, (file, key)
            assert t.min().item() == t.max().item() == stored, (file, key)

    assert all(p.device.type == "cpu" for p in model.parameters())
    assert not any(p.requires_grad for p in model.parameters())
    if rss0 is None or rss1 is None:
        pytest.skip("cannot measure the process memory here")
    assert rss1 - rss0 < 500e6, f"loading grew the process by {(rss1 - rss0) / 1e6:.0f} MB"
    if peak0 is not None and peak1 is not None:
        assert peak1 - peak0 < 500e6, f"loading raised the peak memory by {(peak1 - peak0) / 1e6:.0f} MB"


def _peak_rss() -> int | None:
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    except (ImportError, OSError):
        return None


# ------------------------------------------------------------------------------------ damaged files


def _load_error(cfg_name: str, root: Path) -> str:
    with pytest.raises(InputError) as info:
        load_model(ModelConfig.from_name(cfg_name), root)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_truncated_pth_is_named(full_dir, tmp_path):
    root = _copy(full_dir[0], tmp_path / "w")
    path = root / "denoising_unet_acc.pth"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    message = _load_error("echomimic-v1-acc", root)
    assert str(path) in message
    assert "corrupt" in message and "incomplete" in message
    assert "livehead weights download echomimic-v1-acc" in message


def test_truncated_legacy_pth_is_named(full_dir, tmp_path):
    root = _copy(full_dir[0], tmp_path / "w")
    path = root / "face_locator.pth"  # saved in the legacy (non-zip) format
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    message = _load_error("echomimic-v1-acc", root)
    assert str(path) in message and "corrupt" in message


def test_empty_pth_is_named(full_dir, tmp_path):
    root = _copy(full_dir[0], tmp_path / "w")
    path = root / "reference_unet.pth"
    path.write_bytes(b"")
    message = _load_error("echomimic-v1-acc", root)
    assert str(path) in message and "incomplete" in message


def test_garbage_safetensors_is_named(tiny_release, tmp_path):
    root = _copy(tiny_release[0], tmp_path / "w")
    path = root / "face_locator.safetensors"  # preferred over face_locator.pth
    path.write_bytes(os.urandom(300))
    message = _load_error("tiny", root)
    assert str(path) in message and "corrupt" in message


def test_truncated_safetensors_is_named(tiny_release, tmp_path):
    root = _copy(tiny_release[0], tmp_path / "w")
    path = root / "reference_unet.safetensors"
    sd = torch.load(root / "reference_unet.pth", weights_only=True)
    save_file(sd, str(path))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    message = _load_error("tiny", root)
    assert str(path) in message and "incomplete" in message


def test_wrong_shape_names_the_key(full_dir, tmp_path):
    root = _copy(full_dir[0], tmp_path / "w")
    path = root / "audio_processor" / "whisper_tiny.pt"
    obj = torch.load(path, weights_only=True)
    obj["model_state_dict"]["encoder.blocks.2.attn.key.weight"] = torch.zeros(()).expand(384, 383)
    torch.save(obj, path)
    message = _load_error("echomimic-v1-acc", root)
    assert str(path) in message
    assert "'encoder.blocks.2.attn.key.weight'" in message and "[384, 383]" in message and "[384, 384]" in message


# ------------------------------------------------------------------------------------ convert


def test_convert_tiny_release_to_fp16_safetensors(tiny_release, tmp_path):
    src, original = tiny_release
    cfg = ModelConfig.from_name("tiny")
    dst = tmp_path / "converted"
    written = convert_to_safetensors(cfg, src, dst, progress=False)
    expected = [dst / f"{g.file_stem}.safetensors" for g in weight_groups(cfg)]
    assert written == expected and all(p.is_file() for p in expected)
    assert not list(dst.rglob("*.partial"))
    for path in written:
        with safe_open(str(path), framework="pt") as f:
            assert {f.get_slice(k).get_dtype() for k in f.keys()}  # noqa: SIM118 - safe_open is no mapping == {"F16"}, path
    whisper = load_file(str(dst / "audio_processor" / "whisper_tiny.safetensors"))
    encoder_keys = {"encoder." + k for k in original.audio_encoder.state_dict()}
    assert set(whisper) == encoder_keys  # decoder.* dropped, prefix kept

    converted = load_model(cfg, dst)
    assert next(converted.parameters()).dtype == torch.float32  # fp16 files cast up on load
    _assert_same_outputs(original, converted, cfg)


def test_convert_in_place_is_picked_up(tiny_release, tmp_path):
    src = _copy(tiny_release[0], tmp_path / "w")
    cfg = ModelConfig.from_name("tiny")
    written = convert_to_safetensors(cfg, src, dtype=torch.bfloat16, progress=False)
    assert all(p.parent.is_relative_to(src) and p.suffix == ".safetensors" for p in written)
    assert (src / "reference_unet.pth").is_file()  # originals stay
    loaded = load_model(cfg, src)
    ref = torch.load(src / "reference_unet.pth", weights_only=True)["conv_in.weight"]
    got = loaded.reference_net.state_dict()["conv_in.weight"]
    assert torch.equal(got, ref.to(torch.bfloat16).float())  # came from the bf16 file
    # converting again reads the .safetensors files and rewrites them in place
    again = convert_to_safetensors(cfg, src, dtype=torch.float16, progress=False)
    assert again == written
    assert load_file(str(src / "face_locator.safetensors"))["conv_in.weight"].dtype == torch.float16


def test_convert_stops_at_a_bad_file(tiny_release, tmp_path):
    """Files are converted one by one: those before the bad one are complete, the bad one is not written."""
    src = _copy(tiny_release[0], tmp_path / "w")
    path = src / "face_locator.pth"
    sd = torch.load(path, weights_only=True)
    sd["extra.weight"] = torch.zeros(2)
    torch.save(sd, path)
    dst = tmp_path / "out"
    with pytest.raises(InputError, match="unexpected key 'extra.weight'"):
        convert_to_safetensors(ModelConfig.from_name("tiny"), src, dst, progress=False)
    assert not (dst / "face_locator.safetensors").exists()
    assert not list(dst.rglob("*.partial")) and not list(dst.rglob(".*"))
    assert set(load_file(str(dst / "reference_unet.safetensors"))) == set(
        torch.load(src / "reference_unet.pth", weights_only=True))


def _assert_same_outputs(a, b, cfg: ModelConfig) -> None:
    g = torch.Generator().manual_seed(0)
    s, frames = 8, 2
    ra, rb = TorchRunners(a), TorchRunners(b)
    ref = torch.randn(1, 4, s, s, generator=g)
    sample = torch.randn(1, 4, frames, s, s, generator=g)
    audio = torch.randn(1, frames, cfg.audio.tokens_per_frame, cfg.audio.n_state, generator=g)
    mask = (torch.rand(1, 1, s * 8, s * 8, generator=g) > 0.5).float()
    t = torch.tensor([500])
    outs = []
    for r in (ra, rb):
        face = r.face_features(mask)
        kv = r.reference_kv(ref)
        outs.append(r.denoise(sample, t, audio, face, kv))
    rel = ((outs[0] - outs[1]).norm() / outs[0].norm()).item()
    assert rel < 1e-2, rel
    mel = torch.randn(1, cfg.audio.n_mels, 40, generator=g)
    xa, xb = ra.audio_stack(mel), rb.audio_stack(mel)
    assert ((xa - xb).norm() / xa.norm()).item() < 1e-2
    za, zb = ra.decode(ref), rb.decode(ref)
    assert (za - zb).abs().max().item() < 2e-2


# ------------------------------------------------------------------------------------ download


@pytest.fixture
def no_hub(monkeypatch):
    """The hub on a closed port, fast timeouts, offline mode off."""
    monkeypatch.setenv("HF_ENDPOINT", CLOSED_PORT)
    monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "2")
    monkeypatch.setenv("HF_HUB_DOWNLOAD_TIMEOUT", "2")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")


def test_required_files_layout():
    acc = required_files("echomimic-v1-acc")
    rels = [rel for _, _, rel in acc]
    assert rels == ["reference_unet.pth", "denoising_unet_acc.pth", "motion_module_acc.pth", "face_locator.pth",
                    "audio_processor/whisper_tiny.pt", "sd-vae-ft-mse/diffusion_pytorch_model.safetensors",
                    "sd-vae-ft-mse/config.json"]
    assert {repo for repo, _, _ in acc} == {"BadToBest/EchoMimic", "stabilityai/sd-vae-ft-mse"}
    assert ("BadToBest/EchoMimic", "denoising_unet.pth", "denoising_unet.pth") in required_files("echomimic-v1")
    assert required_files("tiny") == []
    # every weight file the loader looks for is among them
    for preset in ("echomimic-v1-acc", "echomimic-v1"):
        cfg = ModelConfig.from_name(preset)
        rel = {r for _, _, r in required_files(preset)}
        for g in weight_groups(cfg):
            assert any(f"{g.file_stem}{s}" in rel for s in g.suffixes), g.name


def test_download_offline_mode(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(InputError) as info:
        download_weights("echomimic-v1-acc", tmp_path / "w", progress=False)
    message = str(info.value)
    assert "\n" not in message and "hub" in message and "reference_unet.pth" in message
    assert "HF_ENDPOINT" in message and str(tmp_path / "w") in message


def test_download_unreachable_hub_fails_fast(no_hub, tmp_path):
    start = time.monotonic()
    with pytest.raises(InputError) as info:
        download_weights("echomimic-v1-acc", tmp_path / "w", progress=False)
    assert time.monotonic() - start < 5
    message = str(info.value)
    assert "\n" not in message and "unreachable" in message and CLOSED_PORT in message
    assert "reference_unet.pth" in message


def _fill(dest: Path, preset: str) -> list[Path]:
    paths = []
    for _, _, rel in required_files(preset):
        path = dest / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * 16)
        paths.append(path)
    return paths


def _forbid_network(monkeypatch):
    import socket

    def refuse(*args, **kwargs):
        raise AssertionError("network access")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", refuse)
    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


def test_download_skips_complete_files_without_network(monkeypatch, tmp_path):
    dest = tmp_path / "w"
    paths = _fill(dest, "echomimic-v1-acc")
    _forbid_network(monkeypatch)
    seen: list[tuple[str, Path]] = []
    got = download_weights("echomimic-v1-acc", dest, progress=False, report=lambda s, p: seen.append((s, p)))
    assert got == paths
    assert seen == [("present", p) for p in paths]


def test_download_refetches_empty_and_partial_files(no_hub, tmp_path):
    from huggingface_hub._local_folder import get_local_download_paths

    dest = tmp_path / "w"
    _fill(dest, "echomimic-v1-acc")
    (dest / "face_locator.pth").write_bytes(b"")  # empty: not complete
    with pytest.raises(InputError, match="face_locator.pth"):
        download_weights("echomimic-v1-acc", dest, progress=False)
    (dest / "face_locator.pth").write_bytes(b"x")
    marker = get_local_download_paths(dest / "sd-vae-ft-mse", "diffusion_pytorch_model.safetensors")
    marker = marker.incomplete_path("0123abcd")  # an interrupted hf_hub_download leaves this behind
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_bytes(b"partial")
    with pytest.raises(InputError, match="diffusion_pytorch_model.safetensors"):
        download_weights("echomimic-v1-acc", dest, progress=False)


def test_download_tiny_has_nothing(tmp_path):
    with pytest.raises(InputError, match="no weights to download"):
        download_weights("tiny", tmp_path / "w")


def test_download_errors_map_to_one_line(monkeypatch, tmp_path):
    """401/404 from the hub name the repository and the file."""
    from huggingface_hub import utils as hfu

    dest = tmp_path / "w"

    def raise_(err):
        def f(*args, **kwargs):
            raise err
        return f

    class Response:  # what HfHubHTTPError needs to render, for any HTTP client huggingface_hub uses
        status_code = 404
        headers: typing.ClassVar[dict] = {}
        url = "http://hub/x"
        request = None
        text = ""
        reason = reason_phrase = "Not Found"

        def json(self):
            return {}

    def make(cls, status):
        Response.status_code = status
        try:
            return cls("boom", response=Response())
        except TypeError:
            return cls("boom")

    cases = [(make(hfu.RepositoryNotFoundError, 401), ["BadToBest/EchoMimic", "reference_unet.pth", "not found"]),
             (make(hfu.GatedRepoError, 403), ["gated", "BadToBest/EchoMimic"]),
             (make(hfu.EntryNotFoundError, 404), ["reference_unet.pth", "not found", "BadToBest/EchoMimic"]),
             (ConnectionResetError("reset"), ["unreachable", "reference_unet.pth"])]
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    for err, words in cases:
        monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", raise_(err))
        with pytest.raises(InputError) as info:
            download_weights("echomimic-v1-acc", dest, progress=False)
        message = str(info.value)
        assert "\n" not in message
        for word in words:
            assert word in message, (word, message)


# ------------------------------------------------------------------------------------ CLI


def test_cli_download_unreachable_one_line(tmp_path):
    env = dict(os.environ, HF_ENDPOINT=CLOSED_PORT, HF_HUB_ETAG_TIMEOUT="2", HF_HUB_DOWNLOAD_TIMEOUT="2",
               PYTHONPATH=str(ROOT))
    env.pop("HF_HUB_OFFLINE", None)
    empty = tmp_path / "empty"
    empty.mkdir()
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "livehead.server.cli.main", "weights", "download", "echomimic-v1-acc",
                           "--dir", str(empty)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    elapsed = time.monotonic() - start
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("livehead: error: "), proc.stderr
    assert "unreachable" in lines[0]
    assert elapsed < 15, elapsed  # includes the interpreter start; no retry loop


def test_cli_download_tiny_and_present(capsys, monkeypatch, tmp_path):
    assert main(["weights", "download", "tiny", "--dir", str(tmp_path / "t")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("livehead: error: ") and "no weights to download" in err
    dest = tmp_path / "w"
    _fill(dest, "echomimic-v1")
    _forbid_network(monkeypatch)
    assert main(["weights", "download", "echomimic-v1", "--dir", str(dest), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert out.count("present") >= 7 and "0 fetched" in out


def test_cli_convert(capsys, tiny_release, tmp_path):
    src = tiny_release[0]
    out_dir = tmp_path / "bf16"
    code = main(["weights", "convert", str(src), "--preset", "tiny", "--out", str(out_dir), "--dtype", "bf16",
                 "--quiet"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert load_file(str(out_dir / "reference_unet.safetensors"))["conv_in.weight"].dtype == torch.bfloat16
    assert "6 files" in out
    code = main(["weights", "convert", str(src), "--preset", "tiny", "--dtype", "int8"])
    out, err = capsys.readouterr()
    assert code == 2 and err.startswith("livehead: error: ") and "--dtype" in err
    code = main(["weights", "convert", str(tmp_path / "nope"), "--preset", "tiny"])
    out, err = capsys.readouterr()
    assert code == 2 and "does not exist" in err

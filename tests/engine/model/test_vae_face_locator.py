"""VAE, face locator and seeded init against the EchoMimic tiny fixtures (fixtures/README.md).

Fixtures: <repo>/../shared/reference/echomimic/fixtures, or $LIVEHEAD_FIXTURES. Tests that need them are
skipped with a reason when they are missing; the shape / key / init tests run without them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from livehead.engine.model.config import PRESETS, FaceLocatorConfig, VAEConfig
from livehead.engine.model.face_locator import FaceLocator
from livehead.engine.model.init_weights import count_parameters, seeded_init_
from livehead.engine.model.vae import AutoencoderKL
from tests.conftest import fixture_path

ATOL = 1e-4


def _fixture(name: str) -> Path:
    return fixture_path(name)


def _load_weights(name: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return {k: v.to(torch.float32) for k, v in load_file(str(_fixture(name))).items()}


def _fixture_config() -> dict:
    return json.loads(_fixture("config.json").read_text())


def _fixture_vae_config() -> VAEConfig:
    vc = _fixture_config()["vae_config"]
    assert vc["in_channels"] == vc["out_channels"]
    return VAEConfig(
        in_channels=vc["in_channels"],
        latent_channels=vc["latent_channels"],
        block_out_channels=tuple(vc["block_out_channels"]),
        layers_per_block=vc["layers_per_block"],
        norm_num_groups=vc["norm_num_groups"],
        scaling_factor=vc["scaling_factor"],
    )


def _fixture_face_locator_config() -> tuple[FaceLocatorConfig, int]:
    fc = _fixture_config()["face_locator"]
    cfg = FaceLocatorConfig(
        conditioning_channels=fc["conditioning_channels"], block_out_channels=tuple(fc["block_out_channels"])
    )
    return cfg, fc["conditioning_embedding_channels"]


@pytest.fixture(scope="module")
def fixture_vae() -> AutoencoderKL:
    vae = AutoencoderKL(_fixture_vae_config())
    vae.load_state_dict(_load_weights("vae.safetensors"), strict=True)
    return vae.eval()


@pytest.fixture(scope="module")
def fixture_face_locator() -> FaceLocator:
    cfg, emb = _fixture_face_locator_config()
    loc = FaceLocator(cfg, emb)
    loc.load_state_dict(_load_weights("face_locator.safetensors"), strict=True)
    return loc.eval()


def _max_err(a: torch.Tensor, b: np.ndarray) -> float:
    ref = torch.from_numpy(np.asarray(b, dtype=np.float32))
    assert a.shape == ref.shape, (tuple(a.shape), tuple(ref.shape))
    return (a - ref).abs().max().item()


# ---------------------------------------------------------------------------------------------- VAE


def test_vae_keys_match_fixture(fixture_vae: AutoencoderKL) -> None:
    sd = _load_weights("vae.safetensors")
    ours = fixture_vae.state_dict()
    assert len(ours) == len(sd) == 180
    assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in sd.items()}


def test_vae_encode_mean(fixture_vae: AutoencoderKL) -> None:
    step = np.load(_fixture("step.npz"))
    with torch.no_grad():
        latents = fixture_vae.encode_mean(torch.from_numpy(step["ref_pixels"]))
    err = _max_err(latents, step["ref_latents"])
    print(f"vae encode_mean max abs err {err:.3e}")
    assert err <= ATOL, f"encode_mean max abs err {err:.3e}"


def test_vae_decode_per_frame(fixture_vae: AutoencoderKL) -> None:
    sampler = np.load(_fixture("sampler.npz"))
    final = torch.from_numpy(sampler["final_latents"])  # [1, 4, F, 8, 8]
    decoded_raw = sampler["decoded_raw"]  # [F, 3, 64, 64]
    video = sampler["video"]  # [1, 3, F, 64, 64]
    errs, unit_errs = [], []
    with torch.no_grad():
        for f in range(final.shape[2]):
            z = final[:, :, f]
            errs.append(_max_err(fixture_vae.decode(z)[0], decoded_raw[f]))
            unit_errs.append(_max_err(fixture_vae.decode_to_unit(z)[0], video[0, :, f]))
        assert torch.equal(fixture_vae(final[:, :, 0]), fixture_vae.decode(final[:, :, 0]))
    print("vae decode max abs err per frame " + ", ".join(f"{e:.3e}" for e in errs))
    print("vae decode_to_unit max abs err per frame " + ", ".join(f"{e:.3e}" for e in unit_errs))
    assert max(errs) <= ATOL, f"decode max abs errs {errs}"
    assert max(unit_errs) <= ATOL, f"decode_to_unit max abs errs {unit_errs}"


def test_vae_full_size_layout_on_meta() -> None:
    with torch.device("meta"):
        vae = AutoencoderKL(VAEConfig())
        latents = vae.encode_mean(torch.empty(2, 3, 512, 512))
        pixels = vae.decode(torch.empty(2, 4, 64, 64))
    sd = vae.state_dict()
    # sd-vae-ft-mse / SD1.5 vae: 248 tensors, 83,653,863 parameters.
    assert len(sd) == 248
    assert count_parameters(vae) == 83_653_863
    assert tuple(sd["encoder.conv_out.weight"].shape) == (8, 512, 3, 3)
    assert tuple(sd["encoder.down_blocks.1.resnets.0.conv_shortcut.weight"].shape) == (256, 128, 1, 1)
    assert tuple(sd["decoder.up_blocks.3.resnets.0.conv_shortcut.weight"].shape) == (128, 256, 1, 1)
    assert tuple(sd["decoder.mid_block.attentions.0.to_q.bias"].shape) == (512,)
    assert "encoder.down_blocks.3.downsamplers.0.conv.weight" not in sd
    assert "decoder.up_blocks.3.upsamplers.0.conv.weight" not in sd
    assert "decoder.up_blocks.0.resnets.2.conv2.weight" in sd
    assert tuple(latents.shape) == (2, 4, 64, 64)
    assert tuple(pixels.shape) == (2, 3, 512, 512)


def test_vae_tiny_preset_on_meta() -> None:
    cfg = PRESETS["tiny"]
    size = cfg.stream.image_size
    with torch.device("meta"):
        vae = AutoencoderKL(cfg.vae)
        latents = vae.encode_mean(torch.empty(1, 3, size, size))
        pixels = vae.decode_to_unit(torch.empty(3, 4, cfg.latent_size, cfg.latent_size))
    assert tuple(latents.shape) == (1, 4, cfg.latent_size, cfg.latent_size)
    assert tuple(pixels.shape) == (3, 3, size, size)
    # 4 levels, layers_per_block 1: encoder 1 resnet per block, decoder 2 per block.
    sd = vae.state_dict()
    assert "encoder.down_blocks.0.resnets.1.conv1.weight" not in sd
    assert "decoder.up_blocks.0.resnets.1.conv1.weight" in sd
    assert "decoder.up_blocks.0.resnets.2.conv1.weight" not in sd
    assert tuple(sd["decoder.conv_out.weight"].shape) == (3, cfg.vae.block_out_channels[0], 3, 3)


# ----------------------------------------------------------------------------------- face locator


def test_face_locator_output(fixture_face_locator: FaceLocator) -> None:
    step = np.load(_fixture("step.npz"))
    mask = torch.from_numpy(step["face_mask"])  # [1, 1, 1, 64, 64]
    with torch.no_grad():
        out = fixture_face_locator(mask[:, :, 0])  # [1, 32, 8, 8]
    err = _max_err(out, step["face_locator_out"][:, :, 0])
    print(f"face locator max abs err {err:.3e}")
    assert err <= ATOL, f"face locator max abs err {err:.3e}"


def test_face_locator_full_size_keys_match_checkpoint() -> None:
    keys_full = json.loads(_fixture("keys_full.json").read_text())["face_locator.pth"]
    full_unet_c0 = PRESETS["echomimic-v1"].unet.block_out_channels[0]
    with torch.device("meta"):
        loc = FaceLocator(PRESETS["echomimic-v1"].face_locator, full_unet_c0)
        out = loc(torch.empty(1, 1, 512, 512))
    ours = {k: list(v.shape) for k, v in loc.state_dict().items()}
    assert len(ours) == len(keys_full) == 16
    assert ours == keys_full
    assert count_parameters(loc) == 1_086_192  # keys_full.json README: face_locator.pth value count
    assert tuple(out.shape) == (1, 320, 64, 64)


def test_face_locator_tiny_preset_on_meta() -> None:
    cfg = PRESETS["tiny"]
    c0 = cfg.unet.block_out_channels[0]
    with torch.device("meta"):
        loc = FaceLocator(cfg.face_locator, c0)
        out = loc(torch.empty(2, 1, cfg.stream.image_size, cfg.stream.image_size))
    assert len(loc.state_dict()) == 16
    assert tuple(out.shape) == (2, c0, cfg.latent_size, cfg.latent_size)


# ------------------------------------------------------------------------------------- seeded init


def _tiny_modules() -> torch.nn.ModuleDict:
    cfg = PRESETS["tiny"]
    return torch.nn.ModuleDict(
        {"vae": AutoencoderKL(cfg.vae), "face_locator": FaceLocator(cfg.face_locator, cfg.unet.block_out_channels[0])}
    )


def test_seeded_init_deterministic() -> None:
    a = seeded_init_(_tiny_modules(), 123)
    b = seeded_init_(_tiny_modules(), 123)
    c = seeded_init_(_tiny_modules(), 124)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert sa.keys() == sb.keys() == sc.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    assert all(not torch.equal(sa[k], sc[k]) for k in sa)
    # Norm weights centred on 1, norm biases / other biases small, kernels scaled by 1/sqrt(fan_in).
    vae = a["vae"]
    assert abs(vae.encoder.conv_norm_out.weight.mean().item() - 1.0) < 0.2
    assert vae.encoder.conv_norm_out.bias.abs().max().item() < 1.0
    w = vae.encoder.down_blocks[0].resnets[0].conv1.weight
    assert 0.5 < (w.std() * (w[0].numel() ** 0.5)).item() < 1.5
    assert count_parameters(a) == sum(v.numel() for v in sa.values())


def test_seeded_init_independent_of_registration_order() -> None:
    class AB(torch.nn.Module):
        def __init__(self, first: str) -> None:
            super().__init__()
            mods = {"a": torch.nn.Linear(3, 4), "b": torch.nn.GroupNorm(2, 4)}
            for name in (first, "b" if first == "a" else "a"):
                setattr(self, name, mods[name])

    x, y = seeded_init_(AB("a"), 7), seeded_init_(AB("b"), 7)
    sx, sy = x.state_dict(), y.state_dict()
    assert list(sx) != list(sy)
    for k in sx:
        assert torch.equal(sx[k], sy[k]), k


def test_seeded_init_module_order_reproduces_fixture_weights() -> None:
    seeds = _fixture_config()["seeds"]
    cfg, emb = _fixture_face_locator_config()
    cases = [
        (FaceLocator(cfg, emb), seeds["face_locator"], "face_locator.safetensors"),
        (AutoencoderKL(_fixture_vae_config()), seeds["vae"], "vae.safetensors"),
    ]
    for module, seed, name in cases:
        seeded_init_(module, seed, order="module")
        ref = _load_weights(name)
        ours = module.state_dict()
        for k, v in ref.items():
            assert torch.equal(ours[k].to(torch.float16).to(torch.float32), v), (name, k)

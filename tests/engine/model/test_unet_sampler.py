"""ReferenceNet / Denoiser against EchoMimic's own outputs (tiny fixture set), shapes at every
preset, and the DDIM sampler against the ᾱ table of the spec."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from livehead.engine.model.config import ModelConfig, SamplerConfig, UNetConfig
from livehead.engine.model.sampler import DDIMSampler, anchored_noise, trailing_timesteps
from livehead.engine.model.unet import Denoiser, ReferenceNet
from tests.conftest import fixture_path

BANK_ORDER = [
    *(f"down_blocks.{i}.attentions.{j}" for i in range(3) for j in range(2)),
    "mid_block.attentions.0",
    *(f"up_blocks.{i}.attentions.{j}" for i in range(1, 4) for j in range(3)),
]


def _load(name: str) -> dict[str, torch.Tensor]:
    return {k: v.float() for k, v in load_file(str(fixture_path(name))).items()}


@pytest.fixture(scope="module")
def fixture_nets():
    config = json.loads(fixture_path("config.json").read_text())
    base = config["unet_base_config"]
    ucfg = UNetConfig(block_out_channels=tuple(base["block_out_channels"]),
                      norm_num_groups=base["norm_num_groups"], layers_per_block=base["layers_per_block"])
    ref = ReferenceNet(ucfg).eval()
    ref.load_state_dict(_load("reference_unet.safetensors"), strict=True)
    den = Denoiser(ucfg).eval()
    den.load_state_dict({**_load("denoising_unet.safetensors"), **_load("motion_module.safetensors")}, strict=True)
    return ref, den, dict(np.load(fixture_path("step.npz")))


def test_reference_bank_matches_echomimic(fixture_nets):
    ref, _, step = fixture_nets
    with torch.no_grad():
        bank = ref(torch.from_numpy(step["ref_latents"]))
    assert len(bank) == 16
    for b, path in zip(bank, BANK_ORDER):
        expected = torch.from_numpy(step[f"bank/{path}.transformer_blocks.0"])
        assert b.shape == expected.shape
        torch.testing.assert_close(b, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("t", [999, 499])
@pytest.mark.parametrize("fp16_bank", [True, False])
def test_denoiser_step_matches_echomimic(fixture_nets, t, fp16_bank):
    ref, den, step = fixture_nets
    x = torch.from_numpy(step["noisy_latents"])
    with torch.no_grad():
        bank = ref(torch.from_numpy(step["ref_latents"]))
        if fp16_bank:  # EchoMimic casts the bank to fp16 on update()
            bank = tuple(b.half().float() for b in bank)
        kv = den.reference_kv(*bank)
        out = den(x, torch.tensor(t), torch.from_numpy(step["audio_cond"]),
                  torch.from_numpy(step["face_locator_out"])[:, :, 0], *kv)
    key = f"model_output_t{t}" if fp16_bank else f"model_output_fp32bank_t{t}"
    torch.testing.assert_close(out, torch.from_numpy(step[key]), atol=1e-3, rtol=1e-3)


def test_denoiser_without_reference_differs(fixture_nets):
    """CFG's unconditional branch (no bank) is a different function, not silently the same."""
    ref, den, step = fixture_nets
    x = torch.from_numpy(step["noisy_latents"])
    args = (x, torch.tensor(999), torch.from_numpy(step["audio_cond"]),
            torch.from_numpy(step["face_locator_out"])[:, :, 0])
    with torch.no_grad():
        kv = den.reference_kv(*ref(torch.from_numpy(step["ref_latents"])))
        assert (den(*args, *kv) - den(*args)).abs().max() > 1e-3


@pytest.mark.parametrize("preset", ["tiny", "echomimic-v1-acc"])
def test_shapes_per_preset(preset):
    cfg = ModelConfig.from_name(preset)
    s = cfg.latent_size
    frames = cfg.stream.window_frames
    with torch.device("meta"):
        ref, den = ReferenceNet(cfg.unet), Denoiser(cfg.unet)
        bank = ref(torch.zeros(2, 4, s, s))
        kv = den.reference_kv(*bank)
        out = den(torch.zeros(2, 4, frames, s, s), torch.tensor([999, 500]),
                  torch.zeros(2, frames, cfg.audio.tokens_per_frame, cfg.audio.n_state),
                  torch.zeros(2, cfg.unet.block_out_channels[0], s, s), *kv)
    assert out.shape == (2, 4, frames, s, s)
    assert len(bank) == 16 and len(kv) == 32
    widths = [b.shape[-1] for b in bank]
    tokens = [b.shape[1] for b in bank]
    c = cfg.unet.block_out_channels
    assert widths == [c[0]] * 2 + [c[1]] * 2 + [c[2]] * 2 + [c[3]] + [c[2]] * 3 + [c[1]] * 3 + [c[0]] * 3
    assert tokens[0] == s * s and tokens[6] == (s // 8) ** 2
    assert all(k.shape == b.shape for k, b in zip(kv[::2], bank))


def test_denoiser_is_per_frame_except_motion_modules():
    """Frames mix only through the motion modules: with them zeroed, frame f's output ignores frame g."""
    cfg = ModelConfig.from_name("tiny")
    torch.manual_seed(0)
    den = Denoiser(cfg.unet).eval()
    for name, p in den.named_parameters():
        if ".motion_modules." in name and "proj_out" in name:
            torch.nn.init.zeros_(p)
    s, f = cfg.latent_size, 4
    x = torch.randn(1, 4, f, s, s)
    args = (torch.tensor(500), torch.randn(1, f, 50, 384), torch.randn(1, cfg.unet.block_out_channels[0], s, s))
    with torch.no_grad():
        a = den(x, *args)
        x2 = x.clone()
        x2[:, :, 3] += 1.0
        b = den(x2, *args)
    assert torch.allclose(a[:, :, :3], b[:, :, :3], atol=1e-5)
    assert not torch.allclose(a[:, :, 3], b[:, :, 3], atol=1e-3)


# ---- sampler ----------------------------------------------------------------------------------

SPEC_TABLE = [  # t, ᾱ_t, √ᾱ_t, √(1−ᾱ_t), prev_t, ᾱ_prev  (SPEC.md §1.3)
    (999, 0.0, 0.0, 1.0, 833, 0.003962),
    (832, 0.004030, 0.063481, 0.997983, 666, 0.034129),
    (666, 0.034129, 0.184740, 0.982787, 500, 0.141513),
    (499, 0.142529, 0.377531, 0.925997, 333, 0.385210),
    (332, 0.387096, 0.622170, 0.782882, 166, 0.733301),
    (166, 0.733301, 0.856330, 0.516429, 0, 0.999150),
]


def test_trailing_timesteps():
    assert trailing_timesteps(6).tolist() == [999, 832, 666, 499, 332, 166]
    assert trailing_timesteps(30).tolist()[:6] == [999, 966, 932, 899, 866, 832]
    assert trailing_timesteps(30).tolist()[-3:] == [99, 66, 32]


def test_alpha_bar_table_matches_spec():
    s = DDIMSampler(SamplerConfig(steps=6))
    assert s.timesteps.tolist() == [row[0] for row in SPEC_TABLE]
    for t, ab, sab, s1ab, prev, ab_prev in SPEC_TABLE:
        assert s.alpha_bar(t) == pytest.approx(ab, abs=2e-6)
        assert s.alpha_bar(t) ** 0.5 == pytest.approx(sab, abs=2e-6)
        assert (1 - s.alpha_bar(t)) ** 0.5 == pytest.approx(s1ab, abs=2e-6)
        assert s.prev_timestep(t) == prev
        assert s.alpha_bar(prev) == pytest.approx(ab_prev, abs=2e-6)
    assert s.alpha_bar(999) == 0.0  # zero terminal SNR, exactly


def test_sampler_replays_echomimic_steps():
    ref = np.load(fixture_path("sampler.npz"))
    s = DDIMSampler(SamplerConfig(steps=6))
    np.testing.assert_allclose(s.alphas_cumprod, ref["alphas_cumprod"], atol=2e-6)
    x = torch.from_numpy(ref["latents_init"])
    for i, t in enumerate(s.timesteps):
        x = s.step(torch.from_numpy(ref["step_model_output"][i]), int(t), x)
        torch.testing.assert_close(x, torch.from_numpy(ref["step_latents_after"][i]), atol=1e-5, rtol=1e-5)


def test_v_prediction_identities():
    s = DDIMSampler(SamplerConfig(steps=6))
    x0, eps = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    t = 499
    ab = s.alpha_bar(t)
    xt = s.add_noise(x0, eps, t)
    v = ab**0.5 * eps - (1 - ab) ** 0.5 * x0
    torch.testing.assert_close(s.predict_x0(v, t, xt), x0, atol=1e-5, rtol=1e-5)
    # the exact v gives the exact DDIM target: √ᾱ_prev·x0 + √(1−ᾱ_prev)·ε
    ab_prev = s.alpha_bar(s.prev_timestep(t))
    torch.testing.assert_close(s.step(v, t, xt), ab_prev**0.5 * x0 + (1 - ab_prev) ** 0.5 * eps, atol=1e-5, rtol=1e-5)


def test_initial_noise_is_clamped():
    s = DDIMSampler(SamplerConfig())
    n = s.initial_noise((4, 4, 8, 8), torch.Generator().manual_seed(0))
    assert n.abs().max() <= 1.5 and n.abs().max() > 1.0


def test_reference_anchored_noise():
    """noise = √m·ref + √(1−m)·ε per frame; m = 0 leaves the draw alone; the exact v of that noise still
    lands DDIM on the clean frames (the update rules do not care where the noise is centred)."""
    g = torch.Generator().manual_seed(0)
    eps, ref = torch.randn(2, 4, 3, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g)
    assert anchored_noise(eps, None, 0.0) is eps
    mixed = DDIMSampler(SamplerConfig(steps=1, reference_mix=0.25)).anchor(eps, ref)
    for f in range(3):
        torch.testing.assert_close(mixed[:, :, f], 0.5 * ref + 0.75**0.5 * eps[:, :, f])
    with pytest.raises(ValueError, match="reference latents"):
        anchored_noise(eps, None, 0.25)
    s = DDIMSampler(SamplerConfig(steps=2, reference_mix=0.25))
    x0 = torch.randn(2, 4, 3, 8, 8, generator=g)
    x = mixed  # ᾱ(999) = 0: the start is the anchored noise itself
    for t in s.timesteps:  # 999 → 499 → the clean end
        ab = s.alpha_bar(int(t))
        x = s.step(ab**0.5 * mixed - (1 - ab) ** 0.5 * x0, int(t), x)
    torch.testing.assert_close(x, x0, atol=1e-5, rtol=1e-5)

"""Training code at micro size on CPU: latent cache, overfitting, exact resume, VAE, distillation, CLI.

The micro config is the tiny architecture shrunk (32² images, 4² latents, one UNet layer per block,
a one-block 64-wide audio encoder) so a few optimizer steps take well under a second.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import livehead.engine.training.train as train_module
import livehead.engine.training.vae as vae_module
from livehead.engine.common.errors import InputError
from livehead.engine.media.audio_video import Mp4Writer, load_image
from livehead.engine.media.face import blank_mouth, prepare_portrait
from livehead.engine.media.landmarks import EYE_INNER, EYE_OUTER, LIP_OUTER_LOWER, LIP_OUTER_UPPER, face_landmarks
from livehead.engine.model.avatar_model import AvatarModel
from livehead.engine.model.config import (
    AudioConfig,
    FaceLocatorConfig,
    ModelConfig,
    SamplerConfig,
    StreamConfig,
    UNetConfig,
    VAEConfig,
)
from livehead.engine.model.sampler import DDIMSampler
from livehead.engine.runtime.runners import TorchRunners
from livehead.engine.runtime.session import Session, prepare_avatar, to_pixels
from livehead.engine.training.data import (
    Clip,
    FrameSampler,
    LatentDataset,
    WindowSampler,
    build_latent_cache,
    cache_fingerprint,
    clip_from_video,
    load_clip,
    prepare_clips,
    save_clip,
)
from livehead.engine.training.distill import ddim_to, distill, rounds
from livehead.engine.training.options import options_from
from livehead.engine.training.train import (
    TrainOptions,
    alpha_bar,
    alphas_cumprod,
    build_model,
    diffusion_loss,
    export_weights,
    mouth_weights,
    train_stage,
    trainable_parameters,
)
from livehead.engine.training.vae import (
    calibrate_latent_scale,
    diffusion_info,
    perceptual_proxy,
    train_vae,
    vae_loss,
    weighted_l1,
)
from livehead.engine.weights.loading import load_model, trained_sampling, with_reference_mix
from livehead.server.cli.main import _parser, main
from tests import ASSETS, GRID

RATE = 16000
FRAMES = 12


def micro_config(steps: int = 2) -> ModelConfig:
    return ModelConfig(
        name="micro",
        unet=UNetConfig(block_out_channels=(32, 32, 32, 32), layers_per_block=1, norm_num_groups=8,
                        attention_heads=2, motion_heads=2, audio_dim=64),
        vae=VAEConfig(block_out_channels=(8, 8, 8, 8), layers_per_block=1, norm_num_groups=4),
        audio=AudioConfig(n_state=64, n_head=2, n_layer=1, tokens_before=1, tokens_after=1, window_seconds=1.0,
                          pad_to_ctx=False, n_ctx=100),
        face_locator=FaceLocatorConfig(block_out_channels=(4, 4, 8, 8)),
        sampler=SamplerConfig(steps=steps),
        stream=StreamConfig(image_size=32, clip_frames=3, motion_frames=1),
        seeded_weights=True,
    )


def _clip(i: int) -> Clip:
    """A 12-frame 32² clip: a bright square that moves, speech-like noise bursts."""
    rng = np.random.default_rng(i)
    frames = np.full((FRAMES, 32, 32, 3), 60, np.uint8)
    for k in range(FRAMES):
        frames[k, 8 + k % 4:20 + k % 4, 10:22] = 200
    n = RATE * FRAMES // 25
    audio = (0.2 * rng.standard_normal(n) * (np.sin(np.arange(n) / 700.0) > 0)).astype(np.float32)
    mask = np.zeros((32, 32), np.float32)
    mask[6:26, 6:26] = 1
    return Clip(f"clip{i}", frames, audio, frames[0].copy(), mask)


@pytest.fixture(scope="module")
def cfg():
    """The micro config; these tiny ops run fastest on one thread (no pool overhead)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield micro_config()
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("clips")
    for i in range(2):
        save_clip(root / f"clip{i}.safetensors", _clip(i))
    return root


@pytest.fixture(scope="module")
def cache(cfg, tmp_path_factory):
    model = build_model(cfg)
    root = build_latent_cache([_clip(0), _clip(1)], model, cfg, tmp_path_factory.mktemp("latents"), progress=False)
    return model, LatentDataset(root)


def _opts(**kw) -> TrainOptions:
    base = dict(steps=4, batch=2, lr=1e-3, warmup=1, save_every=100, log_every=1, progress=False)
    base.update(kw)
    return TrainOptions(**base)


# ------------------------------------------------------------------------------------------ data


def test_latent_cache_round_trips_and_matches_the_session(cfg, cache, tmp_path):
    model, data = cache
    clip = _clip(0)
    back = load_clip(save_clip(tmp_path / "c.safetensors", clip))
    assert np.array_equal(back.frames, clip.frames) and np.array_equal(back.audio, clip.audio)
    assert np.array_equal(back.mask, clip.mask) and back.name == clip.name

    assert data.frames == [FRAMES, FRAMES]
    pixels = torch.from_numpy(clip.frames).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        expect = model.vae.encode_mean(pixels).permute(1, 0, 2, 3)
    torch.testing.assert_close(data.latents(0, 0, FRAMES), expect, rtol=2e-3, atol=2e-3)
    torch.testing.assert_close(data.mask(0), torch.from_numpy(clip.mask))

    # the cached tokens are the tokens the session gives each frame in the clip where it is new
    runners = TorchRunners(load_model(cfg).eval())
    runners.model.audio_encoder.load_state_dict(model.audio_encoder.state_dict())
    session = Session(runners, prepare_avatar(runners, clip.reference, clip.mask))
    session.push_audio(clip.audio, RATE)
    session.flush()
    f = cfg.stream.clip_frames
    for k in range(FRAMES // f):
        job = session.prepare_clip()
        torch.testing.assert_close(data.tokens(0, k * f, k * f + f), job.tokens[0, -f:], rtol=2e-3, atol=2e-3)
        session.commit_clip(job, torch.zeros(1, 4, f, cfg.latent_size, cfg.latent_size))

    windows = WindowSampler(data, 1, f, first_clip_prob=0.5, reference_frame_prob=0.5)
    batch = windows.sample(6, torch.Generator().manual_seed(0))
    assert batch["latents"].shape == (6, 4, 1 + f, 4, 4)
    assert batch["tokens"].shape == (6, 1 + f, cfg.audio.tokens_per_frame, 64)
    assert batch["mask"].shape == (6, 1, 32, 32) and batch["reference"].shape == (6, 4, 4, 4)


def test_clip_from_video_crops_like_the_portrait(tmp_path):
    portrait = load_image(ASSETS / "portrait.png")
    size = 64
    n = 6
    audio = (0.3 * np.sin(np.arange(RATE * n // 25) * 0.05)).astype(np.float32)
    h, w = portrait.shape[:2]
    with Mp4Writer(tmp_path / "talk.mp4", fps=25, width=w - w % 2, height=h - h % 2, audio=audio) as writer:
        for _ in range(n):
            writer.write(np.ascontiguousarray(portrait[: h - h % 2, : w - w % 2]))
    clip = clip_from_video(tmp_path / "talk.mp4", size)
    t = -(-len(clip.audio) * 25 // RATE)  # frames follow the decoded audio (AAC adds a little padding)
    assert t >= n and clip.frames.shape == (t, size, size, 3) and clip.frames.dtype == np.uint8
    face = prepare_portrait(portrait[: h - h % 2, : w - w % 2], size)
    assert np.abs(clip.reference.astype(int) - face.image.astype(int)).mean() < 8  # H.264 round trip
    assert np.array_equal(clip.reference, clip.frames[0])
    assert clip.mask.shape == (size, size) and clip.mask.max() == 1.0 and clip.mask.min() == 0.0


# ------------------------------------------------------------------------------------- training


@pytest.mark.parametrize("stage", ["stage1", "stage2"])
def test_a_few_steps_overfit_a_fixed_batch(cfg, cache, stage):
    model_, data = cache
    model = build_model(cfg)
    model.load_state_dict(model_.state_dict())
    window = (0, 1) if stage == "stage1" else (cfg.stream.motion_frames, cfg.stream.clip_frames)
    batch = WindowSampler(data, *window, first_clip_prob=0.3).sample(4, torch.Generator().manual_seed(1))
    params = trainable_parameters(model, stage)
    model.requires_grad_(False)
    for p in params.values():
        p.requires_grad_(True)
    opt = torch.optim.AdamW(list(params.values()), lr=2e-3)
    opts = _opts(uncond_dropout=0.25)
    alphas = alphas_cumprod(cfg)
    losses = []
    for _ in range(6):
        gen = torch.Generator().manual_seed(2)  # the same timesteps and noise every step
        loss, _ = diffusion_loss(model, batch, stage, opts, alphas, gen, torch.device("cpu"))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.8 * losses[0], losses
    if stage == "stage1":  # motion modules and audio attention stay frozen (and at their zero init)
        assert not any(".motion_modules." in k or ".attn2." in k for k in params)


def test_timestep_range_draws_only_inside_it(cfg, cache):
    """--t-min/--t-max: t = 999 only is the one-step regression recipe (target = -x0 under zero SNR)."""
    model, data = cache
    batch = WindowSampler(data, cfg.stream.motion_frames, cfg.stream.clip_frames).sample(
        3, torch.Generator().manual_seed(0))
    alphas = alphas_cumprod(cfg)
    for lo, hi in ((999, 999), (400, 600)):
        for seed in range(4):
            _, stats = diffusion_loss(model, batch, "stage2", _opts(t_min=lo, t_max=hi), alphas,
                                      torch.Generator().manual_seed(seed), torch.device("cpu"))
            assert lo <= stats["t_mean"] <= hi
    _, stats = diffusion_loss(model, batch, "stage2", _opts(), alphas, torch.Generator().manual_seed(0),
                              torch.device("cpu"))
    assert stats["t_mean"] < 999  # the default range is the whole schedule
    for bad in (dict(t_min=10, t_max=5), dict(t_max=1000), dict(t_min=-1)):
        with pytest.raises(InputError, match="--t-min and --t-max"):
            _opts(**bad).check()


def test_resume_continues_exactly(cfg, data_dir, tmp_path):
    opts = dict(ema=0.9, uncond_dropout=0.3, audio_dropout=0.3, first_clip_prob=0.5)
    cache = tmp_path / "cache"
    full = train_stage("stage2", cfg, [data_dir], tmp_path / "a", _opts(steps=4, **opts), cache=cache)
    train_stage("stage2", cfg, [data_dir], tmp_path / "b", _opts(steps=2, **opts), cache=cache)
    with pytest.raises(Exception, match="--resume"):
        train_stage("stage2", cfg, [data_dir], tmp_path / "b", _opts(steps=4, **opts), cache=cache)
    train_stage("stage2", cfg, [data_dir], tmp_path / "b", _opts(steps=4, **opts), cache=cache, resume=True)
    a = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)
    assert a["step"] == b["step"] == 4
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for k in a["ema"]:
        assert torch.equal(a["ema"][k], b["ema"][k]), k
    log = [json.loads(line) for line in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4] and all(math.isfinite(r["loss"]) for r in log)
    assert load_model(cfg, weights_dir=full) is not None  # the weights folder loads strictly


def test_ctrl_c_saves_at_a_step_boundary_and_resume_is_exact(cfg, data_dir, tmp_path, monkeypatch):
    """SIGINT during step 3 of 5: the step finishes, checkpoint and OUT/weights hold step 3, and resuming
    gives bit for bit the run that was never stopped. Intermediate saves export OUT/weights too."""
    import os
    import signal

    opts = dict(ema=0.9, uncond_dropout=0.3, audio_dropout=0.3, first_clip_prob=0.5, save_every=2)
    cache = tmp_path / "cache"
    full = train_stage("stage2", cfg, [data_dir], tmp_path / "a", _opts(steps=5, **opts), cache=cache)
    real_loss, calls = train_module.diffusion_loss, []

    def loss_then_ctrl_c(*args, **kwargs):
        calls.append(1)
        out = real_loss(*args, **kwargs)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGINT)  # arrives while step 3 computes
        return out

    monkeypatch.setattr(train_module, "diffusion_loss", loss_then_ctrl_c)
    before = signal.getsignal(signal.SIGINT)  # Python's default, or SIG_IGN when started in the background
    with pytest.raises(KeyboardInterrupt):
        train_stage("stage2", cfg, [data_dir], tmp_path / "b", _opts(steps=5, **opts), cache=cache)
    assert len(calls) == 3
    assert torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["step"] == 3
    assert json.loads((tmp_path / "b" / "weights" / "livehead.json").read_text())["step"] == 3
    assert signal.getsignal(signal.SIGINT) is before  # the handler is put back
    monkeypatch.setattr(train_module, "diffusion_loss", real_loss)
    resumed = train_stage("stage2", cfg, [data_dir], tmp_path / "b", _opts(steps=5, **opts), cache=cache,
                          resume=True)
    a = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert json.loads((resumed / "livehead.json").read_text())["step"] == 5
    assert full == tmp_path / "a" / "weights"


def test_resume_ignores_runtime_only_config_fields_and_names_real_changes(cfg, data_dir, tmp_path):
    from dataclasses import replace

    cache, out = tmp_path / "cache", tmp_path / "run"
    train_stage("stage1", cfg, [data_dir], out, _opts(steps=1), cache=cache)
    shipped = replace(cfg, bundled_weights="assets/elsewhere", seeded_weights=not cfg.seeded_weights,
                      stream=replace(cfg.stream, max_pending_frames=7))
    train_stage("stage1", shipped, [data_dir], out, _opts(steps=2), cache=cache, resume=True)
    assert torch.load(out / "checkpoint.pt", weights_only=True)["step"] == 2
    other = replace(cfg, sampler=replace(cfg.sampler, beta_end=0.02))
    with pytest.raises(InputError, match=r"another model config \(sampler.beta_end: 0.012 vs 0.02\)"):
        train_stage("stage1", other, [data_dir], out, _opts(steps=3), cache=cache, resume=True)


def test_vae_overfits_and_calibration_keeps_decoding(cfg, data_dir, tmp_path):
    model = build_model(cfg)
    vae = model.vae.requires_grad_(True)
    x = torch.from_numpy(np.stack([_clip(0).frames[0], _clip(1).frames[5]])).permute(0, 3, 1, 2).float() / 127.5 - 1
    opt = torch.optim.AdamW(vae.parameters(), lr=3e-3)
    losses = []
    for _ in range(8):
        loss, _stats = vae_loss(vae, x, _opts(), torch.Generator().manual_seed(0))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.8 * losses[0], losses
    with torch.no_grad():
        before = vae.decode(vae.encode_mean(x))
        calibrate_latent_scale(vae, x)
        torch.testing.assert_close(vae.decode(vae.encode_mean(x)), before, rtol=1e-4, atol=1e-4)
        assert abs(float(vae.encode_mean(x).std()) - 1.0) < 1e-4

    weights = train_vae(cfg, [data_dir], tmp_path / "vae", _opts(steps=2), cache=tmp_path / "cache")
    info = json.loads((weights / "livehead.json").read_text())
    assert info["stage"] == "vae" and info["step"] == 2
    assert load_model(cfg, weights_dir=weights) is not None


def test_face_weight_moves_the_vae_loss_onto_the_face(cfg, data_dir, tmp_path):
    """--face-weight weights the reconstruction loss inside the face mask; the frame sampler gives each
    frame its clip's mask (flipped with it) and honours --mix."""
    x = torch.zeros(1, 3, 32, 32)
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., 8:24, 8:24] = 1
    off_face, on_face = x.clone(), x.clone()
    off_face[..., 0:4, :] = 1.0  # the same error outside and inside the face
    on_face[..., 12:16, :] = 1.0
    assert weighted_l1(off_face, x) == pytest.approx(float(weighted_l1(on_face, x)))
    w = 1 + 9 * mask
    assert weighted_l1(on_face, x, w) > 3 * weighted_l1(off_face, x, w)
    assert perceptual_proxy(on_face, x, w) > 2 * perceptual_proxy(off_face, x, w)
    assert weighted_l1(on_face, x, torch.ones_like(w)) == pytest.approx(float(weighted_l1(on_face, x)))
    with pytest.raises(InputError, match="--face-weight"):
        _opts(face_weight=-1).check()

    other = tmp_path / "other"
    other.mkdir()
    shifted = _clip(5)
    shifted.mask[:] = 0
    shifted.mask[0:10, 0:10] = 1  # top-left: a flipped frame must carry a top-right mask
    save_clip(other / "clip5.safetensors", shifted)
    store = prepare_clips([data_dir, other], tmp_path / "store", 32, progress=False)
    frames = FrameSampler(store, mix=(0, 1))
    images, masks = frames.sample(16, torch.Generator().manual_seed(0))
    assert images.shape == (16, 3, 32, 32) and masks.shape == (16, 1, 32, 32)
    left = masks[..., 0:10, 0:10].mean((1, 2, 3)) == 1
    right = masks[..., 0:10, 22:32].mean((1, 2, 3)) == 1
    assert bool((left ^ right).all()) and 0 < int(left.sum()) < 16  # only clip5, flipped about half the time
    assert float(masks.sum((1, 2, 3)).max()) == 100
    with pytest.raises(InputError, match="--mix"):
        FrameSampler(store, mix=(0, 0))


def test_reference_decoder_fine_tune_pairs_each_frame_with_its_photo(cfg, data_dir, tmp_path):
    """A reference decoder trains on (mouth-blanked photo, frame) pairs flipped together; fine-tuned from
    weights saved without reference layers, it starts as their plain decoder and learns the new path
    while the encoder (and so every latent cache) stays as it was."""
    from dataclasses import replace

    side = tmp_path / "side"
    side.mkdir()
    clip = _clip(7)
    clip.frames[:, 4:28, 2:12] = 250  # a bright bar on the left of every frame and of the photo
    clip.reference[:] = clip.frames[0]
    clip.mask[:] = 0
    clip.mask[4:30, 2:22] = 1  # off centre: the mouth box moves when the pair is flipped
    save_clip(side / "clip7.safetensors", clip)
    store = prepare_clips([side], tmp_path / "store", 32, progress=False)
    images, masks, refs = FrameSampler(store).sample(12, torch.Generator().manual_seed(0), reference_frame_prob=0.0)
    blank = to_pixels(blank_mouth(clip.reference, clip.mask)[None])[0]
    flipped = images[:, 0, 10, 3] < images[:, 0, 10, 28]
    assert 0 < int(flipped.sum()) < 12
    for j in range(12):
        expect = blank.flip(-1) if flipped[j] else blank
        torch.testing.assert_close(refs[j], expect)
        assert bool((masks[j, 0, 10, 3] == 0) == flipped[j])

    ref_cfg = replace(cfg, vae=replace(cfg.vae, reference_decoder=True))
    plain = train_vae(cfg, [data_dir], tmp_path / "plain", _opts(steps=2), cache=tmp_path / "cache")
    start = build_model(ref_cfg, init=plain)
    base = build_model(cfg, init=plain)
    z = torch.randn(2, 4, 4, 4)
    with torch.no_grad():
        torch.testing.assert_close(start.vae.decode(z, refs[:1]), base.vae.decode(z), rtol=0, atol=0)
    tuned = train_vae(ref_cfg, [data_dir], tmp_path / "tuned", _opts(steps=3, decoder_only=True, mouth_weight=8),
                      init=plain, cache=tmp_path / "cache")
    after = load_model(ref_cfg, weights_dir=tuned).vae
    assert float(after.decoder.reference_out.conv.weight.abs().max()) > 0  # the zeroed injection learned
    for name, p in base.vae.named_parameters():
        if name.startswith(("encoder.", "quant_conv.")):
            torch.testing.assert_close(dict(after.named_parameters())[name], p)
    with pytest.raises(InputError, match="--latent-softening"):
        _opts(latent_softening=1.5).check()


def test_vae_ctrl_c_exports_calibrated_weights_and_resume_is_exact(cfg, data_dir, tmp_path, monkeypatch):
    """The VAE stage exports OUT/weights (calibrated) at every save and on Ctrl-C, as the diffusion
    stages do; resuming after Ctrl-C ends where the uninterrupted run ends."""
    import os
    import signal

    cache = tmp_path / "cache"
    full = train_vae(cfg, [data_dir], tmp_path / "a", _opts(steps=4, save_every=2), cache=cache)
    real_loss, calls = vae_module.vae_loss, []

    def loss_then_ctrl_c(*args, **kwargs):
        calls.append(1)
        out = real_loss(*args, **kwargs)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return out

    monkeypatch.setattr(vae_module, "vae_loss", loss_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        train_vae(cfg, [data_dir], tmp_path / "b", _opts(steps=4, save_every=2), cache=cache)
    info = json.loads((tmp_path / "b" / "weights" / "livehead.json").read_text())
    assert info["stage"] == "vae" and info["step"] == 3 and "latent_std_before_calibration" in info
    model = load_model(cfg, weights_dir=tmp_path / "b" / "weights")
    x = torch.from_numpy(np.stack([_clip(0).frames[0], _clip(1).frames[5]])).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        assert 0.3 < float(model.vae.encode_mean(x).std()) < 3.0  # calibrated, not the raw latent scale
    monkeypatch.setattr(vae_module, "vae_loss", real_loss)
    resumed = train_vae(cfg, [data_dir], tmp_path / "b", _opts(steps=4, save_every=2), cache=cache, resume=True)
    a = load_model(cfg, weights_dir=full).vae.state_dict()
    b = load_model(cfg, weights_dir=resumed).vae.state_dict()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_vae_decoder_only_keeps_the_latent_space_and_the_cache(cfg, data_dir, tmp_path):
    first = train_vae(cfg, [data_dir], tmp_path / "vae", _opts(steps=2), cache=tmp_path / "cache")
    marker = first / "livehead.json"  # as if a stage 2 with --reference-mix had trained the diffusion model
    marker.write_text(json.dumps({**json.loads(marker.read_text()), "reference_mix": 0.5, "sampler_steps": 2}))
    with pytest.raises(InputError, match="--init"):
        train_vae(cfg, [data_dir], tmp_path / "bad", _opts(steps=2, decoder_only=True), cache=tmp_path / "cache")
    tuned = train_vae(cfg, [data_dir], tmp_path / "ft", _opts(steps=3, decoder_only=True, lr=1e-2),
                      init=first, cache=tmp_path / "cache")
    a, b = load_model(cfg, weights_dir=first), load_model(cfg, weights_dir=tuned)
    sa, sb = a.vae.state_dict(), b.vae.state_dict()
    for k in sa:
        if k.startswith(("encoder.", "quant_conv.")):
            torch.testing.assert_close(sa[k], sb[k], rtol=0, atol=0)  # not re-calibrated either
    assert any(not torch.equal(sa[k], sb[k]) for k in sa if k.startswith("decoder."))
    assert cache_fingerprint(a, cfg) == cache_fingerprint(b, cfg)
    info = json.loads((tuned / "livehead.json").read_text())
    assert info["decoder_only"] and "latent_std_before_calibration" not in info
    # the diffusion model is the init's, so is the way to sample it
    assert info["reference_mix"] == 0.5 and info["sampler_steps"] == 2
    assert trained_sampling(cfg, tuned).sampler.reference_mix == 0.5
    bad = tmp_path / "bad_init"
    bad.mkdir()
    (bad / "livehead.json").write_text("[0.5]")
    with pytest.raises(InputError, match="not a livehead.json object"):
        diffusion_info(bad)
    assert diffusion_info(tmp_path / "nowhere") == {}
    with torch.no_grad():
        b.vae.encoder.conv_in.weight.add_(1e-3)  # the encoder is what the cache depends on
    assert cache_fingerprint(a, cfg) != cache_fingerprint(b, cfg)


# -------------------------------------------------------------------------------------- distill


def test_distillation_target_and_rounds(cfg):
    assert rounds(8, 1) == [4, 2, 1] and rounds(4, 2) == [2]
    for bad in ((6, 4), (3, 1), (1, 1)):
        with pytest.raises(Exception, match="steps"):
            rounds(*bad)
    # ddim_to is the sampler's step; the student's one-step target lands where the teacher's two steps do
    alphas = alphas_cumprod(cfg)
    sampler = DDIMSampler(SamplerConfig(steps=2))
    g = torch.Generator().manual_seed(0)
    x, v = torch.randn(1, 4, 2, 4, 4, generator=g), torch.randn(1, 4, 2, 4, 4, generator=g)
    t = torch.tensor([999])
    torch.testing.assert_close(ddim_to(alphas, v, t, t - 500, x), sampler.step(v, 999, x).float())
    x_end = torch.randn(x.shape, generator=g)
    for t0, t1 in ((999, 499), (749, 499), (499, -1)):
        ta, tb = torch.tensor([t0]), torch.tensor([t1])
        a, s = alpha_bar(alphas, ta).sqrt(), (1 - alpha_bar(alphas, ta)).sqrt()
        ae, se = alpha_bar(alphas, tb).sqrt(), (1 - alpha_bar(alphas, tb)).sqrt()
        x0_hat = (x_end - (se / s) * x) / (ae - (se / s) * a)
        torch.testing.assert_close(ddim_to(alphas, (a * x - x0_hat) / s, ta, tb, x), x_end, rtol=1e-4, atol=1e-4)


def test_distilled_student_runs_in_a_session(cfg, data_dir, tmp_path):
    teacher = tmp_path / "teacher"
    export_weights(cfg, build_model(cfg).state_dict(), teacher)
    out = distill(cfg, [data_dir], tmp_path / "distill", _opts(steps=2, from_steps=2, to_steps=1), teacher,
                  cache=tmp_path / "cache")
    assert json.loads((out / "livehead.json").read_text())["sampler_steps"] == 1
    student = load_model(cfg.with_steps(1), weights_dir=out)
    runners = TorchRunners(student)
    clip = _clip(0)
    session = Session(runners, prepare_avatar(runners, clip.reference, clip.mask))
    session.push_audio(clip.audio[: RATE // 5], RATE)
    session.flush()
    frames = list(session.frames())
    assert len(frames) == 5 and frames[0].image.shape == (32, 32, 3)
    # distilling again into the same folder needs --resume; with it, finished rounds are skipped
    with pytest.raises(Exception, match="--resume"):
        distill(cfg, [data_dir], tmp_path / "distill", _opts(steps=2, from_steps=2, to_steps=1), teacher,
                cache=tmp_path / "cache")


def test_reference_mix_is_trained_recorded_and_sampled(cfg, data_dir, tmp_path):
    """--reference-mix: the loss draws anchored noise, the weights record the mix, loading them samples
    with it (the session's noise is centred on the avatar's latent), a stage continued from them keeps it,
    and a distillation refuses a different one."""
    run = train_stage("stage2", cfg, [data_dir], tmp_path / "anchored", _opts(steps=2, reference_mix=0.5),
                      cache=tmp_path / "cache")
    assert json.loads((run / "livehead.json").read_text())["reference_mix"] == 0.5
    model = load_model(cfg, weights_dir=run)
    assert model.cfg.sampler.reference_mix == 0.5
    clip = _clip(0)
    anchored = TorchRunners(model)
    avatar = prepare_avatar(anchored, clip.reference, clip.mask)
    plain = TorchRunners(model)
    plain.cfg = with_reference_mix(model.cfg, 0.0)
    noise, prefix = Session(anchored, avatar, seed=3)._clip_noise(0)
    raw, raw_prefix = Session(plain, avatar, seed=3)._clip_noise(0)
    ref = avatar.ref_latents[:, :, None]
    torch.testing.assert_close(noise, 0.5**0.5 * ref + 0.5**0.5 * raw)
    torch.testing.assert_close(prefix, 0.5**0.5 * ref + 0.5**0.5 * raw_prefix)

    # the training loss sees the anchored noise: same draws, another mix, another loss
    model, data = build_model(cfg), LatentDataset(build_latent_cache([clip], build_model(cfg), cfg,
                                                                      tmp_path / "lat", progress=False))
    batch = WindowSampler(data, 1, cfg.stream.clip_frames, 0.5, 0.5).sample(2, torch.Generator().manual_seed(0))
    alphas = alphas_cumprod(cfg)
    losses = []
    for mix in (0.0, 0.9):
        m = build_model(with_reference_mix(cfg, mix))
        m.load_state_dict(model.state_dict())
        loss, _ = diffusion_loss(m, batch, "stage2", _opts(t_min=999), alphas, torch.Generator().manual_seed(1),
                                 torch.device("cpu"))
        losses.append(float(loss))
    assert losses[0] != pytest.approx(losses[1], rel=1e-4)

    again = train_stage("stage2", cfg, [data_dir], tmp_path / "again", _opts(steps=1), init=run,
                        cache=tmp_path / "cache")
    assert json.loads((again / "livehead.json").read_text())["reference_mix"] == 0.5
    with pytest.raises(InputError, match="keeps that mix"):
        distill(cfg, [data_dir], tmp_path / "distill", _opts(steps=1, from_steps=2, to_steps=1, reference_mix=0.2),
                run, cache=tmp_path / "cache")
    bad = tmp_path / "bad"
    export_weights(cfg, build_model(cfg).state_dict(), bad, info={"reference_mix": 1.5})
    with pytest.raises(InputError, match="reference mix must be a number in"):
        load_model(cfg, weights_dir=bad)


def test_tiny_weights_fit_the_budget(tmp_path):
    tiny = ModelConfig.from_name("tiny")
    with torch.device("meta"):
        n = sum(v.numel() for v in AvatarModel(tiny).state_dict().values())
    assert 2 * n < 40_000_000


# ------------------------------------------------------------------------------------------ CLI


def test_cli_train_bad_input(tmp_path, capsys):
    code = main(["train", "stage1", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert err.strip().startswith("livehead: error: ") and "data directory not found" in err
    (tmp_path / "empty").mkdir()
    code = main(["train", "distill", "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "run"),
                 "--init", str(tmp_path), "--from-steps", "6", "--to-steps", "4"])
    err = capsys.readouterr().err
    assert code == 2 and "power of two" in err
    code = main(["train", "vae", "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "run")])
    assert code == 2 and "no videos or clip files" in capsys.readouterr().err
    code = main(["train", "stage2", "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "run"), "--mix", "1,2"])
    assert code == 2 and "one weight per --data folder" in capsys.readouterr().err
    code = main(["train", "stage2", "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "run"),
                 "--reference-mix", "1"])
    assert code == 2 and "--reference-mix must be in [0, 1)" in capsys.readouterr().err


def test_cli_train_flags_come_from_train_options(capsys):
    """Every numeric TrainOptions field is a `livehead train` flag whose help shows its default, and a
    flag given on the command line reaches the options the stage runs with."""
    import argparse
    from dataclasses import fields

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    numeric = [f for f in fields(TrainOptions) if f.type in ("int", "float")]
    assert len(numeric) >= 20
    for f in numeric:
        flag = "--" + f.name.replace("_", "-")
        assert flag in text, flag
        assert f"{f.metadata['help']} (default: {f.default})" in text, flag
    args = _parser().parse_args(["train", "stage2", "--data", "d", "--out", "o", "--mouth-weight", "12.5",
                                 "--t-min", "999", "--t-max", "999", "--batch", "3"])
    assert isinstance(args, argparse.Namespace)
    opts = options_from(args, progress=False)
    assert (opts.mouth_weight, opts.t_min, opts.t_max, opts.batch) == (12.5, 999, 999, 3)
    assert opts.lr == TrainOptions().lr  # not given: the default
    with pytest.raises(SystemExit):
        _parser().parse_args(["train", "stage2", "--data", "d", "--out", "o", "--batch", "two"])
    assert "invalid int value" in capsys.readouterr().err


def test_mouth_weights_mark_the_lips_of_real_faces():
    """The mouth box, placed from the clip's face mask alone, holds every lip landmark of a GRID clip
    (each frame's own Face Mesh) and no eye landmark, at the tiny preset's 16² latent grid."""
    grid = GRID / "bbaf2n.mpg"
    if not grid.exists():
        pytest.skip(f"GRID sample clips not found at {grid.parent}")
    clip = clip_from_video(grid, 128)
    wts = mouth_weights(torch.from_numpy(clip.mask)[None, None], 16, 10.0)[0, 0, 0]
    assert wts.shape == (16, 16) and float(wts.max()) == pytest.approx(11.0)
    cell = lambda p: wts[int(p[1]) // 8, int(p[0]) // 8]
    measured = 0
    for frame in clip.frames[::10]:
        lm = face_landmarks(frame)
        if lm is None:
            continue
        measured += 1
        assert all(cell(lm[i]) > 1 for i in LIP_OUTER_UPPER + LIP_OUTER_LOWER)
        assert all(cell(lm[i]) == 1 for i in EYE_OUTER + EYE_INNER)
    assert measured >= 5


def test_mouth_weight_reweights_the_loss(cfg, cache):
    model, data = cache
    batch = WindowSampler(data, cfg.stream.motion_frames, cfg.stream.clip_frames).sample(
        2, torch.Generator().manual_seed(0))
    s = batch["latents"].shape[-1]
    wts = mouth_weights(batch["mask"], s, 4.0)
    assert wts.shape == (2, 1, 1, s, s) and float(wts.min()) == 1.0 and float(wts.max()) > 1.0
    assert torch.equal(mouth_weights(torch.zeros_like(batch["mask"]), s, 4.0), torch.ones(2, 1, 1, s, s))
    alphas = alphas_cumprod(cfg)

    def loss(b, **kw):
        return float(diffusion_loss(model, b, "stage2", _opts(**kw), alphas, torch.Generator().manual_seed(3),
                                    torch.device("cpu"))[0])

    plain = loss(batch)
    assert loss(batch, mouth_weight=4.0) != pytest.approx(plain, rel=1e-4)
    no_face = dict(batch, mask=torch.zeros_like(batch["mask"]))  # uniform weights: the plain MSE
    assert loss(no_face, mouth_weight=4.0) == pytest.approx(loss(no_face), rel=1e-6)
    for bad in (-1.0, float("nan")):
        with pytest.raises(InputError, match="--mouth-weight"):
            _opts(mouth_weight=bad).check()

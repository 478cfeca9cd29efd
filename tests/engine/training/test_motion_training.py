"""The motion tier's generator training (`engine.training.motion`): augmentation, windows, a micro run, streaming."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from livehead.engine.model.config import ModelConfig, MotionGeneratorConfig
from livehead.engine.model.motion_generator import MotionGenerator
from livehead.engine.motion.space import default_motion_space
from livehead.engine.motion.tracker import apply_pose
from livehead.engine.training import motion as mt
from livehead.engine.training.options import TrainOptions
from tests import GRID

RATE = 16_000


@pytest.fixture
def one_thread():
    """Tiny tensors: one thread is faster than two, and far faster when the cores are shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def small_cfg() -> ModelConfig:
    cfg = ModelConfig.from_name("motion")
    return replace(cfg, motion=MotionGeneratorConfig(width=32, layers=1, heads=2))


def synthetic_clips(space, frames: int = 40, n: int = 2) -> list[mt.MotionClip]:
    """Clips whose expression is a linear function of the frame's audio (each frame's 50 tokens alike): a mapping
    the generator learns in a few steps."""
    gen = torch.Generator().manual_seed(0)
    clips = []
    for i in range(n):
        tokens = torch.randn((frames, 1, 384), generator=gen).expand(-1, 50, -1)
        motion = space.neutral_motion(frames).astype(np.float32)
        motion[:, :space.k] = 0.1 * tokens[:, 0, :space.k].numpy()
        clips.append(mt.MotionClip(
            name=f"clip{i}", motion=motion, tokens=tokens.half(), shape=np.full(14, 0.01 * i, np.float32),
            neutral=np.zeros((478, 2), np.float32), first=np.zeros((478, 2), np.float32), mouth=np.abs(motion[:, 0]),
            level_db=np.zeros(frames, np.float32), source=f"clip{i}"))
    return clips


def test_micro_run_loss_falls_and_weights_load_strictly(tmp_path, one_thread):
    space = default_motion_space()
    cfg = small_cfg()
    opts = TrainOptions(steps=60, batch=8, lr=3e-3, warmup=5, log_every=5, save_every=10**6, progress=False,
                        first_clip_prob=0.2, mouth_weight=4.0)
    weights = mt.fit_generator(cfg, synthetic_clips(space), space, tmp_path / "run", opts, info={"data": ["clip0"]})
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert np.mean([r["mse"] for r in log[-3:]]) < 0.7 * np.mean([r["mse"] for r in log[:2]])
    from safetensors.torch import load_file

    state = load_file(str(weights / mt.GENERATOR_FILE))
    assert all(v.dtype == torch.float16 for v in state.values())
    model = MotionGenerator(cfg.motion, cfg.sampler)
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    assert float(model.motion_std.min()) > 0 and float(model.motion_std[0]) != 1.0  # measured, not the default
    info = json.loads((weights / "livehead.json").read_text())
    assert info["preset"] == "motion" and info["stage"] == "motion" and info["step"] == 60
    assert info["selection_rule"] and info["data"] == ["clip0"]
    # a session-style rollout of the loaded weights: every frame, finite, deterministic
    clip = synthetic_clips(space, frames=23)[0]
    loaded = mt.load_generator(cfg, weights)
    a = mt.stream_motion(loaded, cfg, clip.tokens, clip.shape, space.neutral_motion(1)[0])
    b = mt.stream_motion(loaded, cfg, clip.tokens, clip.shape, space.neutral_motion(1)[0])
    assert a.shape == (23, space.dim) and np.isfinite(a).all() and np.array_equal(a, b)


def test_expression_gain_scales_only_the_expression_outputs():
    cfg = small_cfg()
    torch.manual_seed(0)
    model = MotionGenerator(cfg.motion, cfg.sampler)
    torch.nn.init.normal_(model.motion_out.weight, std=0.1)
    torch.nn.init.normal_(model.motion_out.bias, std=0.1)
    window, known = torch.randn(2, 13, 20), torch.arange(13) < 8
    audio, shape = torch.randn(2, 13, 50, 384), torch.randn(2, 14)
    before = model.predict_x0(window, known, audio, shape)
    model.load_state_dict({**model.state_dict(), **mt.scaled_expression(model.state_dict(), 14, 2.5)})
    after = model.predict_x0(window, known, audio, shape)
    assert torch.allclose(after[..., :14], 2.5 * before[..., :14], atol=1e-5)
    assert torch.equal(after[..., 14:], before[..., 14:])


def test_windows_start_neutral_and_hold_session_tokens():
    space = default_motion_space()
    clips = synthetic_clips(space, frames=20, n=1)
    neutral = space.neutral_motion(1)[0]
    windows = mt.MotionWindows(clips, neutral, known=8, new=5, k=space.k, first_clip_prob=0.0)
    assert windows.index[0] == (0, -8) and windows.index[-1] == (0, 20 - 13)
    batch = windows.sample(64, torch.Generator().manual_seed(1))
    assert batch["prefix"].shape == (64, 8, space.dim) and batch["tokens"].shape == (64, 13, 50, 384)
    assert batch["real_prefix"].all()
    first = mt.MotionWindows(clips, neutral, 8, 5, space.k, first_clip_prob=1.0).sample(4, torch.Generator())
    assert torch.allclose(first["prefix"], torch.as_tensor(neutral, dtype=torch.float32).expand(4, 8, -1))
    assert torch.equal(first["tokens"][:, 0], first["tokens"][:, 8])  # the prefix hears the first new frame


def test_time_stretch_keeps_pitch_and_pitch_shift_keeps_tempo():
    t = np.arange(RATE) / RATE
    tone = np.sin(2 * np.pi * 200 * t).astype(np.float32)

    def f0(x):
        return np.argmax(np.abs(np.fft.rfft(x * np.hanning(len(x))))) * RATE / len(x)

    fast = mt.time_stretch(tone, 1.1, RATE)
    assert len(fast) == round(RATE / 1.1) and abs(f0(fast) - 200) < 3
    ratio = 2 ** (3 / 12)
    shifted = mt.time_stretch(mt.resample_fft(tone, round(RATE / ratio)), 1 / ratio, RATE)
    assert abs(len(shifted) - RATE) <= 1 and abs(f0(shifted) - 200 * ratio) < 3


def test_augment_audio_draws_within_ranges():
    pcm = (0.1 * np.random.default_rng(0).standard_normal(RATE * 2)).astype(np.float32)
    for seed in range(6):
        out, done = mt.augment_audio(pcm, np.random.default_rng(seed), RATE)
        assert abs(done["semitones"]) <= mt.PITCH_SEMITONES and mt.TEMPO_RANGE[0] <= done["tempo"] <= mt.TEMPO_RANGE[1]
        assert abs(len(out) * done["tempo"] / len(pcm) - 1) < 1e-3 and np.abs(out).max() <= 0.99 + 1e-6
        assert "snr_db" not in done or mt.SNR_DB[0] <= done["snr_db"] <= mt.SNR_DB[1]
    track = np.arange(10, dtype=np.float32)[:, None]
    assert np.allclose(mt.retime(track, 5, 2.0)[:, 0], [0, 2, 4, 6, 8])


def test_shape_code_ignores_head_pose():
    space = default_motion_space()
    shape = space.canon.copy()
    shape[14, 1] += 0.05  # the lower inner lip lower: an offset from the canonical face (not a pose point)
    a = mt.shape_code(space, apply_pose(shape, np.array([0.0, 80.0, 200.0, 240.0])))
    b = mt.shape_code(space, apply_pose(shape, np.array([0.2, 95.0, 150.0, 260.0])))
    assert a.shape == (14,) and np.abs(a).max() > 1e-3 and np.allclose(a, b, atol=1e-6)


def test_silent_frames_follow_the_noise_floor():
    level = np.full(30, -35.0)
    level[10:20] = -5.0
    silent = mt.silent_frames(level)
    assert not silent[8:22].any() and silent[2:8].all() and silent[22:28].all()
    assert not silent[:2].any() and not silent[-2:].any()  # stretches trimmed at both ends


def test_rest_frame_is_the_first_closed_silent_frame():
    level = np.full(30, -35.0)
    level[10:20] = -5.0  # speech; silent: 2-7 and 22-27
    mouth = np.full(30, 0.12)
    mouth[24] = 0.01
    assert mt.rest_frame(mouth, level) == 24
    mouth[5] = 0.02
    assert mt.rest_frame(mouth, level) == 5
    assert mt.rest_frame(np.full(30, 0.1) - 0.001 * np.arange(30), level) == 27  # none closed: the least open


@pytest.mark.slow
def test_grid_clip_dataset_is_cached_and_augmented(tmp_path):
    video = GRID / "bbaf2n.mpg"
    if not video.exists():
        pytest.skip(f"GRID sample clips not found at {GRID}")
    cfg = ModelConfig.from_name("motion")
    space = default_motion_space()
    stack = mt.load_audio_stack(cfg)
    clips = mt.build_motion_dataset([video], space, stack, cfg, augment=1, seed=0, cache=tmp_path, progress=False)
    clean, copy = clips
    assert clean.name == "bbaf2n" and copy.name == "bbaf2n#1" and copy.source == "bbaf2n"
    assert clean.motion.shape == (75, space.dim) and clean.tokens.shape == (75, 50, 384)
    rest = mt.rest_frame(clean.mouth, clean.level_db)
    assert clean.mouth[rest] < mt.MOUTH_CLOSED
    assert np.allclose(clean.motion[rest], space.neutral_motion(1)[0], atol=1e-6)  # relative to the rest frame
    assert copy.tokens.shape[0] == copy.motion.shape[0] and abs(copy.frames - 75) <= 9  # tempo 0.9-1.1
    assert 0.08 < clean.mouth.max() < 0.4 and np.array_equal(clean.shape, copy.shape)
    again = mt.build_motion_dataset([video], space, stack, cfg, augment=1, seed=0, cache=tmp_path, progress=False)
    assert torch.equal(again[1].tokens, copy.tokens) and np.array_equal(again[1].motion, copy.motion)

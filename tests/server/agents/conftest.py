"""Shared model for the agent-adapter tests: the motion preset at 128 px on the backend `livehead serve` picks."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest


@pytest.fixture(scope="module")
def avatar_model():
    """One torch thread while the module runs (as `livehead serve` gives the model), restored after it: later
    tests compare renders whose float rounding depends on the thread count."""
    import torch

    from livehead import ModelConfig, bundled_demo, prepare_avatar
    from livehead.server.backends.runners import live_backend, make_runners

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    cfg = ModelConfig.from_name("motion")
    cfg = replace(cfg, stream=replace(cfg.stream, image_size=128))
    runners = make_runners(cfg, live_backend(cfg, "auto"), progress=False)  # as `livehead serve` runs it
    picture, pcm16k = bundled_demo(cfg, 4.0)
    avatar = prepare_avatar(runners, picture.image, picture.mask)
    yield runners, avatar, pcm16k.astype(np.float32)
    torch.set_num_threads(threads)


def resample(pcm: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Linear resampling, enough for test speech."""
    n = round(pcm.size * rate_out / rate_in)
    return np.interp(np.arange(n) * rate_in / rate_out, np.arange(pcm.size), pcm).astype(np.float32)


def content_lag(ref: np.ndarray, rec: np.ndarray) -> tuple[int, float]:
    """Samples by which `ref`'s content starts inside `rec` and the normalised correlation peak."""
    size = 1 << int(np.ceil(np.log2(ref.size + rec.size)))
    corr = np.fft.irfft(np.conj(np.fft.rfft(ref, size)) * np.fft.rfft(rec, size), size)
    k = int(np.argmax(corr[: rec.size]))
    seg = rec[k:k + ref.size]
    norm = float(np.sqrt(np.sum(ref[:seg.size] ** 2) * np.sum(seg ** 2))) or 1.0
    return k, float(corr[k] / norm)

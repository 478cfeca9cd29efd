"""`livehead parity` on the EchoMimic fixtures, the offline window schedule, and CFG as the reference builds it."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from livehead.engine.model.config import ModelConfig
from livehead.engine.runtime.offline import context_windows, shifted
from livehead.engine.runtime.runners import TorchRunners, guided_denoise
from livehead.engine.weights.loading import load_model
from livehead.server.cli.main import main
from tests.conftest import fixture_path
from tests.helpers import probe_mp4


def test_parity_passes_on_the_public_fixtures(tmp_path, capsys):
    fixtures = fixture_path("config.json").parent
    out = tmp_path / "parity.json"
    code = main(["parity", "--fixtures", str(fixtures), "--json", str(out), "--quiet"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "parity: PASS" in printed
    report = json.loads(out.read_text())
    assert report["passed"]
    stages = {s["stage"]: s for s in report["stages"]}
    for name in ("whisper log-mel", "whisper encoder stack", "whisper per-frame tokens", "face locator",
                 "denoiser step t=999", "denoiser step t=499", "window schedule (frame indices per call)",
                 "final latents", "video [0, 1]"):
        assert stages[name]["ok"], name
    assert sum(s.startswith("reference bank") for s in stages) == 16
    assert stages["final latents"]["max_abs"] < 1e-3


def test_parity_fails_when_a_weight_is_wrong(tmp_path, capsys):
    """The tool can fail: one perturbed motion-module weight breaks the backbone stages."""
    fixtures = fixture_path("config.json").parent
    broken = tmp_path / "broken"
    shutil.copytree(fixtures, broken)
    state = load_file(str(broken / "motion_module.safetensors"))
    key = "mid_block.motion_modules.0.temporal_transformer.proj_out.weight"
    state[key] = state[key] + 0.05
    save_file(state, str(broken / "motion_module.safetensors"))
    code = main(["parity", "--fixtures", str(broken), "--quiet"])
    printed = capsys.readouterr().out
    assert code == 1
    assert "parity: FAIL" in printed
    assert "whisper encoder stack" in printed  # unaffected stages are still reported


def test_parity_on_a_missing_folder_is_a_clean_error(tmp_path, capsys):
    code = main(["parity", "--fixtures", str(tmp_path / "nope")])
    err = capsys.readouterr().err
    assert code == 2 and "does not exist" in err and "Traceback" not in err


def test_context_windows_match_echomimic():
    assert context_windows(4, 12, 3) == [[0, 1, 2, 3]]
    assert context_windows(12, 12, 3) == [list(range(12))]
    windows = context_windows(30, 12, 3)
    assert [w[0] for w in windows] == [0, 9, 18, 27]
    assert windows[-1] == [27, 28, 29] + list(range(9))  # the last window wraps to the start
    assert all(len(w) == 12 for w in windows)
    # per-step rotation by 2 (mod N), as recorded in the fixture's call contexts
    assert shifted([[0, 1, 2, 3]], 1, 4) == [[2, 3, 0, 1]]
    assert shifted(windows, 2, 30)[0] == list(range(4, 16))


def test_cfg_matches_the_reference_construction():
    """v = u + g·(c − u) with u = zero audio, zero face features and no reference bank."""
    cfg = ModelConfig.from_name("tiny")
    runners = TorchRunners(load_model(cfg))
    s = cfg.latent_size
    torch.manual_seed(0)
    x = torch.randn(1, 4, 3, s, s)
    tokens = torch.randn(1, 3, 50, 384)
    face = torch.randn(1, cfg.unet.block_out_channels[0], s, s)
    kv = runners.reference_kv(torch.randn(1, 4, s, s))
    t = torch.tensor([500])
    cond = runners.denoise(x, t, tokens, face, kv)
    uncond = runners.denoise(x, t, torch.zeros_like(tokens), torch.zeros_like(face), ())
    guided = guided_denoise(runners, x, 500, tokens, face, kv, 2.5)
    torch.testing.assert_close(guided, uncond + 2.5 * (cond - uncond))
    torch.testing.assert_close(guided_denoise(runners, x, 500, tokens, face, kv, 1.0), cond)
    assert (cond - uncond).abs().max() > 1e-3


@pytest.mark.parametrize("schedule", ["offline", "stream"])
def test_animate_schedules_write_full_length_video(tmp_path, capsys, schedule):
    import wave

    import numpy as np

    audio = tmp_path / "a.wav"
    pcm = (0.3 * np.sin(2 * np.pi * 200 * np.arange(16000 * 7 // 10) / 16000) * 32767).astype(np.int16)
    with wave.open(str(audio), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(pcm.tobytes())
    out = tmp_path / "o.mp4"
    assert main(["animate", "--preset", "tiny", "--audio", str(audio), "--out", str(out), "--schedule", schedule,
                 "--quiet",
                 "--device", "cpu"]) == 0

    assert probe_mp4(out)["frames"] == int(np.ceil(0.7 * 25))

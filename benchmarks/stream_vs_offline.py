"""How far the causal streaming schedule is from EchoMimic's offline schedule, on the parity fixtures.

    python benchmarks/stream_vs_offline.py [--fixtures DIR] [--out benchmarks/results/stream_vs_offline.json]

Both runs use the fixture set's EchoMimic-format models (tiny, random weights), its reference image,
face mask and audio, and the *same* initial noise for every frame, so the difference is the schedule
and the audio front-end alone:

- offline: whole-file Whisper features (global log-mel max, 30 s chunks), all 12-frame windows
  denoised jointly every step with the per-step rotation and the wrap-around window;
- stream: `Session` fed in 20 ms pieces: rolling Whisper window with a running log-mel max,
  windows generated in order, each = 3 motion frames of the previous window (re-noised to every
  step's level) + 9 new frames.

Cases: the fixture clip (2 s) and a longer multi-window clip (the clip three times, 6 s), each with
the 30 s padded Whisper window (EchoMimic presets) and a 4 s unpadded rolling window. Reported per
case: audio-token, latent and decoded-frame deviation (mean/max abs, relative L2, PSNR), and the audio
look-ahead the schedule waits for. With random weights these figures bound the deviation the schedule
introduces; they are not a quality score.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from livehead.engine.eval.bench import machine_info, save_result
from livehead.engine.eval.parity import load_fixture_config, load_fixture_model
from livehead.engine.media.audio_video import load_audio
from livehead.engine.runtime.offline import OfflineTrace
from livehead.engine.runtime.render import offline_audio_tokens, offline_latents
from livehead.engine.runtime.runners import TorchRunners
from livehead.engine.runtime.session import Session, prepare_avatar

ROOT = Path(__file__).resolve().parents[1]

DEFAULT_FIXTURES = ROOT.parent / "shared" / "reference" / "echomimic" / "fixtures"


def deviation(a: torch.Tensor, b: torch.Tensor, peak: float | None = None) -> dict:
    d = (a - b).abs()
    out = {"mean_abs": float(d.mean()), "max_abs": float(d.max()),
           "relative_l2": float((a - b).norm() / b.norm().clamp_min(1e-12))}
    if peak is not None:
        mse = float(((a - b) ** 2).mean())
        out["psnr_db"] = float(10 * np.log10(peak**2 / mse)) if mse > 0 else float("inf")
    return out


def run_case(fx, runners, avatar, pcm: np.ndarray, window_seconds: float, pad: bool) -> dict:
    cfg = replace(runners.cfg, audio=replace(runners.cfg.audio, window_seconds=window_seconds, pad_to_ctx=pad))
    runners.cfg = cfg
    sr, fps = cfg.audio.sample_rate, cfg.stream.fps
    n = -(-len(pcm) * fps // sr)
    s = cfg.stream

    offline_tokens = offline_audio_tokens(runners, pcm, n)
    trace = OfflineTrace()
    offline = offline_latents(runners, avatar, pcm, n, fx.seed, trace=trace)
    offline_frames = torch.cat([runners.decode(offline[0, :, i:i + s.clip_frames].permute(1, 0, 2, 3),
                                                avatar.decoder_reference)
                                for i in range(0, n, s.clip_frames)])

    session = Session(runners, avatar, seed=fx.seed, noise=trace.latents_init)
    frames = []
    for start in range(0, len(pcm), sr // 50):
        session.push_audio(pcm[start:start + sr // 50], sr)
        frames.extend(session.frames())
    session.flush()
    frames.extend(session.frames())
    stream_latents = torch.stack([f.latent for f in frames], dim=1)[None]
    stream_frames = torch.from_numpy(np.stack([f.image for f in frames])).permute(0, 3, 1, 2).float() / 255

    # the same token windows the session used, recomputed from the whole stream
    feats = Session(runners, avatar).features
    stream_tokens = []
    for k in range(-(-n // s.clip_frames)):
        first, count = session.clip_audio_frames(k)
        a, b = feats.required_span(first, count, fps)
        window = np.zeros(b - a, np.float32)
        have = pcm[max(a, 0):b]
        window[max(-a, 0):max(-a, 0) + len(have)] = have
        tok = feats.tokens_for_frames(window, a, first, count, fps)
        stream_tokens.append(tok[-min(s.clip_frames, count):])
    stream_tokens = torch.cat(stream_tokens)[:n]

    first, count = session.clip_audio_frames(0)
    _, end = feats.required_span(first, count, fps)
    clip_end = s.clip_frames * sr / fps
    return {
        "frames": n,
        "windows_offline": len(trace.call_contexts) // cfg.sampler.steps,
        "audio_window_s": window_seconds,
        "whisper_padded_to_30s": pad,
        "audio_tokens": deviation(stream_tokens.float(), offline_tokens.float()),
        "latents": deviation(stream_latents, offline),
        "frames_0_1": deviation((stream_frames * 255).round() / 255, (offline_frames * 255).round() / 255, peak=1.0),
        "look_ahead_ms_after_clip": round((end - clip_end) / sr * 1000, 1),
        "audio_wait_first_clip_ms": round(end / sr * 1000, 1),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--fixtures", default=str(DEFAULT_FIXTURES))
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "stream_vs_offline.json"))
    args = p.parse_args()
    fx = load_fixture_config(Path(args.fixtures))
    model = load_fixture_model(fx)
    runners = TorchRunners(model)
    step = np.load(Path(args.fixtures) / "step.npz")
    avatar = prepare_avatar(runners, step["ref_image_u8"], step["face_mask"][0, 0, 0])
    pcm = load_audio(Path(args.fixtures) / "audio.wav", sample_rate=fx.model_config.audio.sample_rate)
    long_pcm = np.concatenate([pcm, pcm, pcm])
    cases = {}
    for name, audio in (("fixture_2s", pcm), ("multi_window_6s", long_pcm)):
        for window, pad in ((30.0, True), (4.0, False)):
            key = f"{name}/whisper_{'30s_padded' if pad else f'{window:g}s_rolling'}"
            cases[key] = run_case(fx, runners, avatar, audio, window, pad)
            print(key, json.dumps(cases[key]))
    result = {
        "benchmark": "stream_vs_offline",
        "fixtures": Path(args.fixtures).name,
        "device": machine_info(),
        "settings": {"fps": fx.fps, "window_frames": fx.context_frames, "motion_frames": fx.context_overlap,
                     "steps": fx.model_config.sampler.steps, "weights": "fixture (random, EchoMimic key format)"},
        "cases": cases,
    }
    save_result(args.out, result)
    print(f"saved {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

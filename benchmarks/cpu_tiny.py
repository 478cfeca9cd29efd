"""CPU benchmark of the embedded `tiny` preset: frames per second of `animate` and per-component ms.

    python benchmarks/cpu_tiny.py [--runs 5] [--threads N] [--out benchmarks/results/cpu_tiny.json]

Measured, not estimated: every figure is a median of timed repeats after a warm-up, on this machine.
Figures:
- `animate_fps`: frames generated per wall second by the streaming session on the bundled speech
  clip (audio pushed in 20 ms pieces, exactly as `livehead animate`; mp4 encoding excluded, reported
  separately as `mp4_encode_ms_per_frame`); `realtime_factor` = animate_fps / 25.
- per component: audio encoder per clip window, avatar preparation (VAE encode + face locator +
  ReferenceNet + reference K/V, once per portrait), one denoiser pass over a clip window, VAE decode
  per frame.
- `first_clip_compute_ms`: compute part of the first-frame delay (audio features + all denoiser
  steps + decode of the first clip); `first_frame_delay_ms` adds the audio the first clip must wait
  for (its frames plus the token look-ahead).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import av
import numpy as np
import torch

from livehead.engine.eval.bench import machine_info, save_result, session_fps
from livehead.engine.media.audio_video import Mp4Writer
from livehead.engine.model.config import ModelConfig
from livehead.engine.runtime.portrait import bundled_demo
from livehead.engine.runtime.runners import TorchRunners
from livehead.engine.runtime.session import Session, prepare_avatar
from livehead.engine.weights.loading import load_model

ROOT = Path(__file__).resolve().parents[1]


def timed(fn, runs: int) -> tuple[float, list[float]]:
    """Median milliseconds of `runs` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times), times


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "cpu_tiny.json"))
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    cfg = ModelConfig.from_name("tiny")
    s = cfg.stream
    sr = cfg.audio.sample_rate
    runners = TorchRunners(load_model(cfg))
    crop, pcm = bundled_demo(cfg)

    avatar_ms, _ = timed(lambda: prepare_avatar(runners, crop.image, crop.mask), args.runs)
    avatar = prepare_avatar(runners, crop.image, crop.mask)

    measured = session_fps(runners, avatar, pcm, sr, args.runs)
    fps, frames = measured["fps"], measured["frames"]

    # components, on the shapes a clip uses
    size, w = cfg.latent_size, s.window_frames
    session = Session(runners, avatar)
    first, count = session.clip_audio_frames(1)
    a, b = session.features.required_span(first, count, s.fps)
    window = np.zeros(b - a, np.float32)
    window[max(-a, 0):] = np.resize(pcm, b - max(a, 0))
    audio_ms, _ = timed(lambda: session.features.tokens_for_frames(window, a, first, count, s.fps), args.runs)
    tokens = session.features.tokens_for_frames(window, a, first, count, s.fps)[None]
    x = torch.randn(1, 4, w, size, size)
    denoise_ms, _ = timed(lambda: runners.denoise(x, torch.tensor([999]), tokens, avatar.face, avatar.reference_kv),
                          args.runs)
    z = torch.randn(s.clip_frames, 4, size, size)
    decode_ms, _ = timed(lambda: runners.decode(z, avatar.decoder_reference), args.runs)

    def first_clip():
        fresh = Session(runners, avatar)
        fresh.push_audio(pcm, sr)
        fresh.run_clip()

    first_clip_ms, _ = timed(first_clip, args.runs)
    fresh = Session(runners, avatar)
    _, end = fresh.features.required_span(*fresh.clip_audio_frames(0), s.fps)
    wait_audio_ms = end / sr * 1000

    frame_images = [np.full((s.image_size, s.image_size, 3), i, np.uint8) for i in range(50)]
    out_tmp = Path(args.out).with_suffix(".tmp.mp4")
    out_tmp.parent.mkdir(parents=True, exist_ok=True)

    def encode():
        with Mp4Writer(out_tmp, fps=s.fps, width=s.image_size, height=s.image_size, audio=pcm[: 2 * sr]) as wr:
            for img in frame_images:
                wr.write(img)

    encode_ms, _ = timed(encode, max(1, args.runs // 2))
    out_tmp.unlink(missing_ok=True)

    result = {
        "benchmark": "cpu_tiny",
        "preset": cfg.name,
        "seeded_weights": cfg.seeded_weights,
        "device": machine_info() | {"av": av.__version__},
        "settings": {"image_size": s.image_size, "fps": s.fps, "steps": cfg.sampler.steps,
                     "clip_frames": s.clip_frames, "motion_frames": s.motion_frames,
                     "audio_window_s": cfg.audio.window_seconds, "runs": args.runs,
                     "audio_seconds": round(len(pcm) / sr, 3)},
        "figures": {
            "animate_fps": round(fps, 2),
            "realtime_factor": round(fps / s.fps, 3),
            "animate_runs_ms": [round(t * 1000, 1) for t in measured["runs_s"]],
            "frames": frames,
            "audio_encoder_ms_per_clip": round(audio_ms, 2),
            "avatar_prepare_ms": round(avatar_ms, 2),
            "denoiser_pass_ms": round(denoise_ms, 2),
            "denoiser_ms_per_clip": round(denoise_ms * cfg.sampler.steps, 2),
            "vae_decode_ms_per_frame": round(decode_ms / s.clip_frames, 2),
            "first_clip_compute_ms": round(first_clip_ms, 1),
            "first_frame_delay_ms": round(wait_audio_ms + first_clip_ms, 1),
            "mp4_encode_ms_per_frame": round(encode_ms / len(frame_images), 2),
        },
    }
    print(json.dumps(result, indent=1))
    save_result(args.out, result)
    print(f"saved {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

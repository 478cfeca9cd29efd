"""`livehead bench`: frames per second of a streaming session, against torch in the same run (JSON)."""

from __future__ import annotations

import argparse
from pathlib import Path

from livehead.engine.eval.bench import machine_info, save_result, session_fps
from livehead.engine.media.bundled import bundled_demo
from livehead.engine.model.config import ModelConfig
from livehead.engine.runtime.session import prepare_avatar
from livehead.engine.weights.loading import weights_label
from livehead.server.backends.runners import make_runners
from livehead.server.cli.common import raise_input


def add_parser(sub) -> argparse.ArgumentParser:
    b = sub.add_parser("bench", help="frames per second of a streaming session, against torch in the same run")
    b.add_argument("--preset", default="tiny", help="tiny (embedded default), echomimic-v1, echomimic-v1-acc")
    b.add_argument("--weights", default=None, help="weights directory (tiny: its shipped weights, or 'seeded')")
    b.add_argument("--backend", default="onnxruntime", help="torch, onnxruntime or tensorrt")
    b.add_argument("--exported", default=None, help="ONNX export directory (default: exported/PRESET, exported "
                   "on first use)")
    b.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
    b.add_argument("--runs", type=int, default=5, help="timed runs after one warm-up; the median is reported")
    b.add_argument("--audio-seconds", type=float, default=None, help="use only the first seconds of the clip")
    b.add_argument("--json", default=None, help="where to save the figures (default: "
                   "benchmarks/results/bench_PRESET_BACKEND.json)")
    return b


def run(args: argparse.Namespace) -> int:
    cfg = ModelConfig.from_name(args.preset)
    if args.runs < 1:
        raise_input(f"--runs must be at least 1, got {args.runs}")
    crop, pcm = bundled_demo(cfg, args.audio_seconds)
    backends = [args.backend] if args.backend == "torch" else [args.backend, "torch"]
    figures = {}
    for backend in backends:
        runners = make_runners(cfg, backend, args.weights, args.device, args.exported)
        avatar = prepare_avatar(runners, crop.image, crop.mask)
        figures[backend] = session_fps(runners, avatar, pcm, cfg.audio.sample_rate, args.runs)
        print(f"{backend:12s} {figures[backend]['fps']:6.1f} frames/s (median of {args.runs}, "
              f"{figures[backend]['frames']} frames of {len(pcm) / cfg.audio.sample_rate:.1f} s audio)")
    result = {"benchmark": "livehead bench", "preset": cfg.name, "backend": args.backend,
              "weights": weights_label(cfg, args.weights), "sampling_steps": cfg.sampler.steps,
              "reference_mix": runners.cfg.sampler.reference_mix,
              "audio_seconds": round(len(pcm) / cfg.audio.sample_rate, 3), "device": machine_info(),
              "runs": args.runs, "figures": figures}
    if len(backends) > 1:
        ratio = figures[args.backend]["fps"] / figures["torch"]["fps"]
        result["speedup_vs_torch"] = round(ratio, 3)
        print(f"{args.backend} is {ratio:.2f}x the torch backend's frames/s (same run)")
    out = save_result(args.json or Path("benchmarks/results") / f"bench_{cfg.name}_{args.backend}.json", result)
    print(f"saved {out}")
    return 0

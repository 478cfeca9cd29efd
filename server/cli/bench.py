"""`livehead bench`: frames per second of a streaming session, against torch in the same run (JSON)."""

from __future__ import annotations

import argparse
from pathlib import Path

from livehead.engine.eval.bench import component_ms, machine_info, save_result, session_fps
from livehead.engine.model.config import ModelConfig
from livehead.engine.runtime.portrait import bundled_demo
from livehead.engine.runtime.session import prepare_avatar
from livehead.engine.weights.loading import weights_label
from livehead.server.backends.runners import make_runners
from livehead.server.cli.common import DEFAULT_PRESET, raise_input


def add_parser(sub) -> argparse.ArgumentParser:
    b = sub.add_parser("bench", help="frames per second of a streaming session, against torch in the same run")
    b.add_argument("--preset", default=DEFAULT_PRESET,
                     help="motion (embedded default), tiny, echomimic-v1, echomimic-v1-acc")
    b.add_argument("--weights", default=None, help="weights directory (tiny: its shipped weights, or 'seeded')")
    b.add_argument("--backend", default="onnxruntime", help="torch, onnxruntime or tensorrt")
    b.add_argument("--exported", default=None, help="ONNX export directory (default: exported/PRESET, exported "
                   "on first use)")
    b.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
    b.add_argument("--runs", type=int, default=5, help="timed runs after one warm-up; the median is reported")
    b.add_argument("--audio-seconds", type=float, default=None, help="use only the first seconds of the clip")
    b.add_argument("--beside", action="append", default=None, metavar="PRESET",
                   help="also measure this preset (torch) in the same run (repeatable; default with the motion "
                        "preset: tiny, the pixel model)")
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
        figures[backend] = measure(runners, avatar, pcm, cfg.audio.sample_rate, args.runs)
        print(f"{backend:12s} {describe(figures[backend], args.runs, len(pcm) / cfg.audio.sample_rate)}")
    beside = {}
    for name in args.beside if args.beside is not None else (["tiny"] if cfg.motion is not None else []):
        other = ModelConfig.from_name(name)
        other_crop, other_pcm = bundled_demo(other, args.audio_seconds)
        runners = make_runners(other, "torch", None, args.device)
        beside[name] = measure(runners, prepare_avatar(runners, other_crop.image, other_crop.mask), other_pcm,
                               other.audio.sample_rate, args.runs)
        print(f"{name + ' (torch)':12s} {describe(beside[name], args.runs, len(other_pcm) / other.audio.sample_rate)}")
    result = {"benchmark": "livehead bench", "preset": cfg.name, "backend": args.backend,
              "weights": weights_label(cfg, args.weights), "sampling_steps": cfg.sampler.steps,
              "reference_mix": runners.cfg.sampler.reference_mix,
              "audio_seconds": round(len(pcm) / cfg.audio.sample_rate, 3), "device": machine_info(),
              "runs": args.runs, "figures": figures, "beside": beside}
    if len(backends) > 1:
        ratio = figures[args.backend]["fps"] / figures["torch"]["fps"]
        result["speedup_vs_torch"] = round(ratio, 3)
        print(f"{args.backend} is {ratio:.2f}x the torch backend's frames/s (same run)")
    out = save_result(args.json or Path("benchmarks/results") / f"bench_{cfg.name}_{args.backend}.json", result)
    print(f"saved {out}")
    return 0


def measure(runners, avatar, pcm, sample_rate: int, runs: int) -> dict:
    """Frames per second (median of `runs`), per-frame milliseconds of each stage, and the output size."""
    height, width = avatar.image.shape[:2]
    return {**session_fps(runners, avatar, pcm, sample_rate, runs),
            "component_ms_per_frame": component_ms(runners, avatar, pcm, sample_rate),
            "output": f"{width}x{height}"}


def describe(figures: dict, runs: int, seconds: float) -> str:
    parts = ", ".join(f"{k} {v:.1f}" for k, v in figures["component_ms_per_frame"].items())
    return (f"{figures['fps']:6.1f} frames/s at {figures['output']} (median of {runs}, {figures['frames']} frames of "
            f"{seconds:.1f} s audio); ms per frame: {parts}")

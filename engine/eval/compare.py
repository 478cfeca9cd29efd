"""Several weights of one preset on the same eval clips and the same speed measure, in one run: what
`benchmarks/compare_weights.py` and `benchmarks/distill_vs_teacher.py` print and save.

`--model NAME=DIR[:STEPS]` (STEPS: sampling steps, default 1; DIR `seeded` for the seed-fixed model). Every
model runs `livehead eval`'s evaluation on the same clips (same seed, same identity stride), then the
streaming session on the bundled clip (`livehead bench`'s measure) for frames per second.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from livehead.engine.common.errors import InputError
from livehead.engine.eval.bench import machine_info, save_result, session_fps
from livehead.engine.eval.evaluate import CRITERIA, evaluate_clips, find_clips, generate_frames
from livehead.engine.model.config import ModelConfig
from livehead.engine.runtime.portrait import bundled_demo
from livehead.engine.runtime.runners import TorchRunners
from livehead.engine.runtime.session import prepare_avatar
from livehead.engine.weights.loading import load_model

SHOWN = tuple(CRITERIA) + ("mouth_corr_audio", "identity_distance_median", "landmark_jitter")



def parse_model(text: str) -> tuple[str, str, int]:
    """"NAME=DIR[:STEPS]" → (name, weights dir, steps). InputError when malformed."""
    name, sep, rest = text.partition("=")
    if not sep or not name or not rest:
        raise InputError(f"--model takes NAME=DIR[:STEPS], got {text!r}")
    weights, colon, steps = rest.rpartition(":")
    if not colon or not steps.isdigit():
        return name, rest, 1
    if int(steps) < 1:
        raise InputError(f"--model {name}: sampling steps must be at least 1, got {steps}")
    return name, weights, int(steps)



def load_runners(cfg: ModelConfig, models: dict[str, tuple[str, int]]) -> dict[str, TorchRunners]:
    """One torch runner per model: {name: (weights, steps)}."""
    return {name: TorchRunners(load_model(cfg.with_steps(steps), weights)) for name, (weights, steps) in models.items()}



def evaluate_models(runners: dict, data_dirs: list[str], image_size: int, seed: int = 0, identity_stride: int = 2,
                    progress: bool = True) -> dict:
    """{data dir: {model name: evaluate_clips result}}, every model on the same clips."""
    evals: dict = {}
    for d in data_dirs:
        clips = find_clips(d)
        evals[d] = {}
        for name, r in runners.items():
            gen = lambda clip, r=r: generate_frames(r, clip.reference, clip.mask, clip.pcm, seed=seed)
            evals[d][name] = evaluate_clips(clips, image_size, gen, identity_stride=identity_stride,
                                            progress=progress)
    return evals



def bundled_speed(runners: dict, cfg: ModelConfig, runs: int) -> dict:
    """Frames per second of each model's streaming session on the bundled clip (`livehead bench`'s measure)."""
    crop, pcm = bundled_demo(cfg)
    return {name: session_fps(r, prepare_avatar(r, crop.image, crop.mask), pcm, cfg.audio.sample_rate, runs)
            for name, r in runners.items()}



def table(evals: dict, speed: dict | None = None) -> str:
    """A markdown table per data folder: one row per model, the SHOWN metrics (+ frames/s)."""
    lines = []
    for d, by_model in evals.items():
        lines += [f"{d}", "| model | " + " | ".join(SHOWN) + (" | frames/s |" if speed else " |"),
                  "|---" * (len(SHOWN) + 1 + bool(speed)) + "|"]
        for name, e in by_model.items():
            s = e["summary"]
            row = [name] + [str(s.get(k)) for k in SHOWN] + ([f"{speed[name]['fps']:.1f}"] if speed else [])
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)



def add_eval_arguments(p: argparse.ArgumentParser, out_name: str) -> None:
    """The options every model-comparison benchmark shares: data, identity stride, timed runs, seed, output."""
    p.add_argument("--preset", default="tiny")
    p.add_argument("--data", action="append", required=True, help="folder of eval clips (repeat for several)")
    p.add_argument("--identity-stride", type=int, default=2, help="embed every k-th frame for identity")
    p.add_argument("--runs", type=int, default=5, help="timed session runs for frames per second")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--out", default=str(Path("benchmarks") / "results" / out_name))



def check_eval_arguments(args: argparse.Namespace) -> None:
    if args.runs < 1 or args.identity_stride < 1:
        raise InputError(f"--runs and --identity-stride must be at least 1, got {args.runs} and {args.identity_stride}")



def save_comparison(args: argparse.Namespace, benchmark: str, cfg: ModelConfig, models: dict, runners: dict,
                    evals: dict, speed: dict, **extra) -> None:
    """Save a comparison's JSON: the machine, each model's weights, steps and reference mix, the speeds, the
    eval summaries and per-clip figures (and `extra` fields, e.g. a teacher/student gap table)."""
    result = {"benchmark": benchmark, "preset": cfg.name, "device": machine_info(),
              "models": {n: {"weights": w, "steps": s, "reference_mix": runners[n].cfg.sampler.reference_mix}
                         for n, (w, s) in models.items()},
              **extra, "speed": speed, "seed": args.seed, "identity_stride": args.identity_stride,
              "evals": {d: {n: {"summary": e["summary"], "clips": e["clips"]} for n, e in v.items()}
                        for d, v in evals.items()}}
    save_result(args.out, result)
    print(f"saved {args.out}")


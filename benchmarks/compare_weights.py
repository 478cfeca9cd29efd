"""Several weights of one preset on the same eval clips and the same speed measure, in one run.

    python benchmarks/compare_weights.py --model shipped=engine/assets/tiny \\
        --model anchored=RUN/weights --model teacher=RUN/teacher/weights:4 \\
        --data CLIPS [--data MORE] [--out benchmarks/results/compare_weights.json]

`--model NAME=DIR[:STEPS]` (STEPS: sampling steps, default 1; DIR `seeded` for the seed-fixed model).
For every --data folder every model runs `livehead eval`'s evaluation (`engine.evaluate.evaluate_clips`:
same clips, same seed, same identity stride); then each runs the streaming session on the bundled 4 s
clip (`livehead bench`'s measure, torch, the threads this process has) for frames per second. Each
model samples with the noise its weights were trained for (`engine.model.trained_sampling`). Prints one
table per folder and saves the summaries, the per-clip figures, the speeds and the machine as JSON.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.bench import machine_info, save_result, session_fps  # noqa: E402
from engine.config import ModelConfig  # noqa: E402
from engine.errors import InputError  # noqa: E402
from engine.evaluate import CRITERIA, evaluate_clips, find_clips, generate_frames  # noqa: E402
from engine.model import TorchRunners, load_model  # noqa: E402

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
            gen = lambda clip, r=r: generate_frames(r, clip.reference, clip.mask, clip.pcm, seed=seed)  # noqa: E731
            evals[d][name] = evaluate_clips(clips, image_size, gen, identity_stride=identity_stride,
                                            progress=progress)
    return evals


def bundled_speed(runners: dict, cfg: ModelConfig, runs: int) -> dict:
    """Frames per second of each model's streaming session on the bundled clip (`livehead bench`'s measure)."""
    from engine.session import prepare_avatar
    from server.cli import bundled_demo

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
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / out_name))


def check_eval_arguments(args: argparse.Namespace) -> None:
    if args.runs < 1 or args.identity_stride < 1:
        raise InputError(f"--runs and --identity-stride must be at least 1, got {args.runs} and {args.identity_stride}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", action="append", required=True, metavar="NAME=DIR[:STEPS]",
                   help="weights to measure, with their sampling steps (default 1); repeat for several")
    add_eval_arguments(p, "compare_weights.json")
    args = p.parse_args(argv)
    try:
        check_eval_arguments(args)
        models: dict[str, tuple[str, int]] = {}
        for text in args.model:
            name, weights, steps = parse_model(text)
            if name in models:
                raise InputError(f"--model {name} given twice")
            models[name] = (weights, steps)
        cfg = ModelConfig.from_name(args.preset)
        runners = load_runners(cfg, models)
        evals = evaluate_models(runners, args.data, cfg.stream.image_size, args.seed, args.identity_stride,
                                progress=not args.quiet)
        speed = bundled_speed(runners, cfg, args.runs)
    except InputError as err:
        print(f"compare_weights: error: {err}", file=sys.stderr)
        return 2
    print(table(evals, speed))
    save_comparison(args, "compare_weights", cfg, models, runners, evals, speed)
    return 0


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


if __name__ == "__main__":
    sys.exit(main())

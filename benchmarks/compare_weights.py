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

from livehead.engine.common.errors import InputError
from livehead.engine.eval.compare import (
    add_eval_arguments,
    bundled_speed,
    check_eval_arguments,
    evaluate_models,
    load_runners,
    parse_model,
    save_comparison,
    table,
)
from livehead.engine.model.config import ModelConfig

ROOT = Path(__file__).resolve().parents[1]


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


if __name__ == "__main__":
    sys.exit(main())

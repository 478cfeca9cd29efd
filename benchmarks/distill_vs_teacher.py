"""A distilled student against its teacher: the eval metrics on the same clips and the speed, in one run.

    python benchmarks/distill_vs_teacher.py --teacher RUN/teacher/weights --teacher-steps 4 \\
        --student RUN/distill/weights --student-steps 1 --data CLIPS [--data MORE] \\
        [--baseline engine/assets/tiny] [--out benchmarks/results/distill_vs_teacher.json]

For every --data folder both models run `livehead eval`'s evaluation (`engine.evaluate.evaluate_clips`,
same clips, same seed, same identity stride), and each of the issue's metrics is compared: the student's
gap to the teacher, absolute and relative to the teacher's value, whether it is within 10 % and whether
it is better (`kept`: within 10 % or better, so the distillation lost at most a tenth).
Relative gaps of a correlation near zero say little, so the absolute gap is reported beside them.
Then both run the streaming session on the bundled 4 s clip (`livehead bench`'s measure, torch, the
threads this process has) for frames per second. `--baseline` adds a third model (e.g. the shipped
weights) to every table, measured the same way.
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
    save_comparison,
)
from livehead.engine.eval.evaluate import CRITERIA
from livehead.engine.model.config import ModelConfig

ROOT = Path(__file__).resolve().parents[1]

WITHIN = 0.10
COMPARED = tuple(CRITERIA) + ("mouth_corr_audio", "identity_distance_median", "mouth_change_corr_gt")
LOWER_IS_BETTER = ("identity_distance_median",)


def gap(student: float | None, teacher: float | None, higher_is_better: bool = True) -> dict:
    """The student's gap to the teacher on one metric: absolute, relative to |teacher|, within 10 %, better,
    and `kept` (within 10 % or better: the distillation lost at most a tenth of the teacher's figure)."""
    if student is None or teacher is None:
        return {"teacher": teacher, "student": student, "abs": None, "rel": None, "within_10pct": None,
                "better": None, "kept": None}
    diff = student - teacher
    rel = diff / abs(teacher) if teacher else None
    within = abs(diff) <= WITHIN * abs(teacher) if teacher else diff == 0
    better = diff > 0 if higher_is_better else diff < 0
    return {"teacher": teacher, "student": student, "abs": round(diff, 4),
            "rel": None if rel is None else round(rel, 4), "within_10pct": within, "better": better,
            "kept": within or better}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--teacher", required=True, help="the teacher's weights directory")
    p.add_argument("--teacher-steps", type=int, required=True, help="sampling steps of the teacher")
    p.add_argument("--student", required=True, help="the distilled student's weights directory")
    p.add_argument("--student-steps", type=int, default=1, help="sampling steps of the student")
    p.add_argument("--baseline", default=None, help="a third weights directory to measure alongside")
    p.add_argument("--baseline-steps", type=int, default=1)
    add_eval_arguments(p, "distill_vs_teacher.json")
    args = p.parse_args(argv)
    try:
        check_eval_arguments(args)
        base = ModelConfig.from_name(args.preset)
        models = {"teacher": (args.teacher, args.teacher_steps), "student": (args.student, args.student_steps)}
        if args.baseline:
            models["baseline"] = (args.baseline, args.baseline_steps)
        runners = load_runners(base, models)
        evals = evaluate_models(runners, args.data, base.stream.image_size, args.seed, args.identity_stride,
                                progress=not args.quiet)
        for d, by_model in evals.items():
            for name, e in by_model.items():
                print(f"{d} {name:8s} " + "  ".join(f"{k} {e['summary'].get(k)}" for k in COMPARED))
        speed = bundled_speed(runners, base, args.runs)
    except InputError as err:
        print(f"distill_vs_teacher: error: {err}", file=sys.stderr)
        return 2
    comparison = {d: {k: gap(e["student"]["summary"].get(k), e["teacher"]["summary"].get(k),
                             higher_is_better=k not in LOWER_IS_BETTER) for k in COMPARED}
                  for d, e in evals.items()}
    for d, rows in comparison.items():
        print(f"{d}: student within 10 % of the teacher or better on "
              + ", ".join(f"{k} {'yes' if g['kept'] else 'no'} ({g['abs']:+})" for k, g in rows.items()
                          if g["abs"] is not None))
    for name, f in speed.items():
        print(f"{name:8s} {f['fps']:6.1f} frames/s ({models[name][1]} steps)")
    save_comparison(args, "distill_vs_teacher", base, models, runners, evals, speed, comparison=comparison)
    return 0


if __name__ == "__main__":
    sys.exit(main())

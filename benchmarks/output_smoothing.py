"""Output smoothing of the motion tier: lip sync, silence and landmark jitter against the smoothing strength.

    python benchmarks/output_smoothing.py --data TRAINING_GRID_DIR [--out benchmarks/results/output_smoothing.json]

A live session may smooth the generated expression with a causal One Euro filter before rendering
(`StreamConfig.output_smoothing`; eyelids and head pose pass unchanged). For each strength every clip's first
frame speaks the clip's own audio through `Session` with the preset's live schedule (2-frame chunks), rendered
and scored exactly as `livehead eval` scores it (`evaluate_pair`: mouth correlation with the real video, silent
frames closed beside the real rate, landmark jitter beside the real video's), pooled over the clips as
`livehead eval` pools them (`motion_summary`). Identity, mismatched audio and self-reenactment do not depend on
the smoothing and are left out.

Selection rule (MODEL_CARD.md, written before this ran): run on the six training clips only; choose the largest
strength whose pooled mouth correlation stays within 0.02 of no smoothing; ship it if its pooled jitter is no
worse than the real video's and its silent-closed rate is within 0.1 of the real one.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

from livehead.engine.common.constants import SAMPLE_RATE
from livehead.engine.eval.bench import machine_info, save_result
from livehead.engine.eval.evaluate import evaluate_pair, find_clips, prepare_clip
from livehead.engine.eval.motion_eval import EVAL_SIZE, _crop_like_truth, generate_clip, motion_summary
from livehead.engine.model.config import ModelConfig
from livehead.engine.motion.space import GRID_HELD_OUT
from livehead.engine.runtime.runners import torch_runners
from livehead.engine.weights.loading import load_model

ROOT = Path(__file__).resolve().parents[1]
STRENGTHS = (0.0, 0.15, 0.3, 0.45, 0.6)
CORR_TOLERANCE = 0.02
KEYS = ("mouth_corr_gt", "silent_closed", "gt_silent_closed", "landmark_jitter", "gt_landmark_jitter")


def run(data: str, strengths=STRENGTHS) -> dict:
    base = ModelConfig.from_name("motion")
    model = load_model(base)
    sources = [c for c in find_clips(data) if c.name not in GRID_HELD_OUT]
    clips = [prepare_clip(c, EVAL_SIZE) for c in sources]
    rows, summary = [], []
    for strength in strengths:
        model.cfg = dataclasses.replace(base, stream=dataclasses.replace(base.stream, output_smoothing=strength))
        runners = torch_runners(model)
        per_clip = []
        for clip in clips:
            t = time.perf_counter()
            frames = _crop_like_truth(generate_clip(runners, clip, clip.pcm), clip, EVAL_SIZE)
            metrics = evaluate_pair(frames, clip.reference, clip.pcm, SAMPLE_RATE, gt_open=clip.gt_open,
                                    gt_frames=clip.gt_frames, silent=clip.silent, identity=False)
            row = {"output_smoothing": strength, "clip": clip.source.name, **{k: metrics.get(k) for k in KEYS},
                   "silent_frames": metrics.get("silent_frames"), "seconds": round(time.perf_counter() - t, 1)}
            per_clip.append({**metrics, "clip": clip.source.name})
            rows.append(row)
            print(row, flush=True)
        pooled = motion_summary(per_clip)  # pooled as `livehead eval` pools (gt_silent_closed included)
        summary.append({"output_smoothing": strength, **{k: pooled.get(k) for k in KEYS}})
        print(summary[-1], flush=True)
    return {"clips": [c.name for c in sources], "rows": rows, "summary": summary, "choice": choose(summary)}


def choose(summary: list[dict]) -> dict:
    """The selection rule (module doc) applied to the pooled rows."""
    none = next(s for s in summary if s["output_smoothing"] == 0.0)
    ok = [s for s in summary if s["mouth_corr_gt"] >= none["mouth_corr_gt"] - CORR_TOLERANCE]
    best = max(ok, key=lambda s: s["output_smoothing"])
    ships = (best["landmark_jitter"] <= best["gt_landmark_jitter"]
             and abs(best["silent_closed"] - best["gt_silent_closed"]) <= 0.1)
    return {"output_smoothing": best["output_smoothing"], "ships": bool(ships and best["output_smoothing"] > 0),
            "rule": f"largest strength with pooled mouth correlation within {CORR_TOLERANCE} of none; ships if its "
                    "jitter is no worse than the real video's and silent closed is within 0.1 of the real rate"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="folder of the training GRID clips (held-out speakers are skipped)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "output_smoothing.json"))
    args = p.parse_args()
    t = time.perf_counter()
    result = run(args.data)
    result.update(command="python benchmarks/output_smoothing.py --data GRID_TRAINING_DIR", machine=machine_info(),
                  seconds=round(time.perf_counter() - t, 1))
    save_result(args.out, result)
    print(result["choice"])


if __name__ == "__main__":
    main()

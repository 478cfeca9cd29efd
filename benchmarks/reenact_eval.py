"""Video-driven reenactment on the held-out GRID speakers: self-reenactment with 1 and 4 references, and
cross-reenactment (each held-out speaker's clip driving the other's photo). One run, JSON.

    python benchmarks/reenact_eval.py [--grid ../shared/data/grid] [--out benchmarks/results/reenact_grid_heldout.json]
                                      [--sheet docs/images/reenact_cross.png]

How the scores are made (and which frames count): see engine/eval/reenact_eval.py. The clips (GRID, CC BY 4.0)
are never used to fit the motion space, the generator or the mouth refiner (GRID_HELD_OUT).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from livehead.engine.common.errors import InputError
from livehead.engine.eval.bench import machine_info, save_result
from livehead.engine.eval.contact_sheet import contact_sheet, stack_rows
from livehead.engine.eval.image_metrics import face_box
from livehead.engine.eval.reenact_eval import (
    EXCLUDE_RADIUS,
    REENACT_CRITERIA,
    cross_reenactment_scores,
    self_reenactment_scores,
)
from livehead.engine.media.audio_video import load_video
from livehead.engine.motion.driver import DEFAULT_SMOOTHING
from livehead.engine.motion.space import GRID_HELD_OUT
from livehead.engine.motion.tracker import detect

ROOT = Path(__file__).resolve().parents[1]
SHEET_HEIGHT = 160


def face_crops(frames: list[np.ndarray]) -> list[np.ndarray]:
    """The same face box (of frame 0's landmarks, widened to a square) cut from every frame."""
    x0, y0, x1, y1 = face_box(detect(frames[0])[:, :2], frames[0].shape)
    side = max(x1 - x0, y1 - y0) * 1.3
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    h, w = frames[0].shape[:2]
    a, b = int(max(0, cx - side / 2)), int(max(0, cy - side / 2))
    c, d = int(min(w, cx + side / 2)), int(min(h, cy + side / 2))
    return [f[b:d, a:c] for f in frames]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--grid", default=str(ROOT.parent / "shared" / "data" / "grid"))
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "reenact_grid_heldout.json"))
    p.add_argument("--sheet", default=None, help="contact sheet PNG of the cross-reenactment (driver row, output row)")
    p.add_argument("--smoothing", type=float, default=DEFAULT_SMOOTHING)
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    try:
        clips = {name: list(load_video(Path(args.grid) / f"{name}.mpg")[0]) for name in GRID_HELD_OUT}
    except InputError as err:
        print(f"reenact_eval: error: {err}", file=sys.stderr)
        return 2
    result: dict = {"clips": list(clips), "smoothing": args.smoothing, "criteria": REENACT_CRITERIA,
                    "scoring": f"self-reenactment: photo = frame 0, driver = the clip; extra references are frames "
                               f"of the same clip (spread over mouth openings); frames within {EXCLUDE_RADIUS} of any "
                               f"reference of any run are EXCLUDED from the scores (same frames for every run); "
                               f"'all_frames' scores every frame 1.. including the references. cross-reenactment: "
                               f"the default neutral rule (the driving frame whose mouth matches the photo's), and "
                               f"beside it the mouth correlation with the driver's frame 0 as the neutral",
                    "self": {}, "cross": {}}
    for name, frames in clips.items():
        result["self"][name] = self_reenactment_scores(frames, smoothing=args.smoothing)
        print(name, result["self"][name], flush=True)
    rows = []
    names = list(clips)
    for a, b in ((names[0], names[1]), (names[1], names[0])):
        scores, rendered = cross_reenactment_scores(clips[a], clips[b][0], smoothing=args.smoothing)
        first, _ = cross_reenactment_scores(clips[a], clips[b][0], smoothing=args.smoothing, neutral_frame=0)
        scores["mouth_corr_driver_if_neutral_is_frame_0"] = first["mouth_corr_driver"]
        result["cross"][f"{a}_drives_{b}"] = scores
        print(a, "drives", b, scores, flush=True)
        rows += [contact_sheet(face_crops([clips[a][0]])[0], face_crops(clips[a]), 8, SHEET_HEIGHT),
                 contact_sheet(face_crops([clips[b][0]])[0], face_crops(rendered), 8, SHEET_HEIGHT)]
    self_runs = [r for r in result["self"].values()]
    cross_runs = list(result["cross"].values())
    result["pass"] = {
        "self_identity": all(r[f"references_{n}"]["identity_same"] >= REENACT_CRITERIA["identity_same_min"]
                             for r in self_runs for n in (1, 4)),
        "more_references_better_mouth": all(r["references_4"]["mouth_psnr"] > r["references_1"]["mouth_psnr"]
                                            and r["references_4"]["mouth_ssim"] > r["references_1"]["mouth_ssim"]
                                            for r in self_runs),
        "cross_identity": all(c["identity_same_as_photo"] >= REENACT_CRITERIA["identity_same_min"] for c in cross_runs),
        "cross_mouth_follows_driver": all((c["mouth_corr_driver"] or 0) >= REENACT_CRITERIA["cross_mouth_corr_min"]
                                          for c in cross_runs),
    }
    result["machine"] = machine_info()
    result["seconds"] = round(time.perf_counter() - t0, 1)
    print("pass", result["pass"])
    print(f"wrote {save_result(args.out, result)}")
    if args.sheet:
        Image.fromarray(stack_rows(rows)).save(args.sheet)
        print(f"wrote {args.sheet}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Fit the motion space (canonical face shape + expression PCA) on talking-face clips.

The shipped engine/assets/motion/motion_space.npz is, from the checkout's root:

    python -m livehead.engine.training.motion_space --data ../shared/data/grid \
        --exclude lbbc2a --exclude sbia1a --out engine/assets/motion/motion_space.npz

Every clip is tracked with MediaPipe Face Mesh in video mode; its first frame is its neutral (clips
should start with a resting face). The canonical shape is the clips' generalised Procrustes mean, the
basis the uncentred PCA of their pose-normalised offsets (livehead.engine.motion.space); the fewest
components keeping `keep` of the offsets' second moment go into the motion vector. Held-out clips are
left out with --exclude, so they can be reported on, never fitted on.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from livehead.engine.common.errors import InputError
from livehead.engine.media.audio_video import load_video
from livehead.engine.motion.space import DEFAULT_KEEP, MotionSpace
from livehead.engine.motion.tracker import track_frames

VIDEO_SUFFIXES = (".mpg", ".mp4", ".mov", ".avi", ".mkv", ".webm")


def find_clips(data_dir: str | os.PathLike, exclude: tuple[str, ...] = ()) -> list[Path]:
    """The videos in data_dir (by name), without those whose stem is in exclude."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise InputError(f"data folder not found: {data_dir}; pass a folder of talking-face clips")
    clips = sorted(p for p in data_dir.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
    kept = [p for p in clips if p.stem not in set(exclude)]
    if not kept:
        raise InputError(f"no clips to fit on in {data_dir} ({', '.join(VIDEO_SUFFIXES)}; {len(clips)} excluded)")
    return kept


def track_clip(path: str | os.PathLike) -> np.ndarray:
    """Landmarks of every frame of a clip (video mode) → float32 [F, 478, 3] pixels."""
    frames, _ = load_video(path)
    try:
        lm, _ = track_frames(frames)
    except InputError as err:
        raise InputError(f"{path}: {err}") from None
    return lm


def fit_motion_space(video_paths: list[str | os.PathLike], out_path: str | os.PathLike,
                     keep: float = DEFAULT_KEEP, progress: bool = True) -> MotionSpace:
    """Track the clips, fit the motion space on them and save it to out_path (.npz)."""
    if not 0.0 < keep <= 1.0:
        raise InputError(f"keep must be a fraction in (0, 1], got {keep}")
    tracks = []
    with tqdm(video_paths, desc="tracking", unit="clip", disable=not progress) as bar:
        for path in bar:
            tracks.append(track_clip(path)[..., :2])
            bar.set_postfix(frames=sum(len(t) for t in tracks))
    space = MotionSpace.fit(tracks, keep=keep)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    space.save(out_path)
    return space


def describe(space: MotionSpace) -> dict:
    """What a fitted space keeps: components, second-moment fractions."""
    return {"components": space.k, "variance_kept": round(space.kept, 4), "dimensions": int(space.components.shape[1]),
            "components_for_95": space.components_for(0.95), "components_for_99": space.components_for(0.99),
            "energy_first": [round(float(e), 4) for e in space.energy[:10]]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m livehead.engine.training.motion_space",
                                description="Fit the motion space (canonical shape + expression PCA) on clips.")
    p.add_argument("--data", required=True, help="folder of talking-face clips (.mpg, .mp4, ...)")
    p.add_argument("--exclude", action="append", default=[], metavar="NAME",
                   help="a clip's name without its suffix to leave out (held out); repeat for more")
    p.add_argument("--out", required=True, help="the .npz to write")
    p.add_argument("--keep", type=float, default=DEFAULT_KEEP,
                   help=f"fraction of the offsets' second moment the components keep (default {DEFAULT_KEEP})")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    try:
        clips = find_clips(args.data, tuple(args.exclude))
        space = fit_motion_space(clips, args.out, keep=args.keep, progress=not args.quiet)
    except InputError as err:
        print(f"motion_space: error: {err}", file=sys.stderr)
        return 2
    missing = sorted(set(args.exclude) - {q.stem for q in Path(args.data).iterdir()})
    report = {"out": str(args.out), "clips": [c.stem for c in clips], "excluded": sorted(args.exclude),
              **describe(space)}
    if missing:
        report["excluded_not_found"] = missing
    print(json.dumps(report, indent=1))
    print(f"wrote {args.out}: {space.k} components keep {100 * space.kept:.1f} % of the offsets' second moment "
          f"({len(clips)} clips)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

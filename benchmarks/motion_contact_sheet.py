"""Contact sheets of faces the motion tier never trained on, talking: each row is the photo, then frames across
the clip. The picture to look at before believing `livehead eval`'s table.

    python benchmarks/motion_contact_sheet.py --out docs/images/motion_unseen_faces.png \\
        [--grid ../shared/data/grid] [--clip lbbc2a --clip sbia1a] [--demo docs/images/demo.png]

Rows: the bundled portrait speaking the bundled speech, then each named GRID clip's first frame speaking that
clip's own audio (the GRID speakers held out of every training step by default). `--demo` also writes the
bundled portrait's row alone (the README's picture).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from livehead.engine.common.errors import InputError
from livehead.engine.eval.contact_sheet import contact_sheet, stack_rows
from livehead.engine.eval.evaluate import generate_frames
from livehead.engine.media.audio_video import load_audio, load_video
from livehead.engine.model.config import ModelConfig
from livehead.engine.motion.space import GRID_HELD_OUT
from livehead.engine.runtime.portrait import bundled_demo, portrait_for
from livehead.engine.runtime.runners import torch_runners
from livehead.engine.weights.loading import load_model

ROOT = Path(__file__).resolve().parents[1]


def row(runners, image: np.ndarray, pcm: np.ndarray, count: int, height: int) -> np.ndarray:
    picture = portrait_for(runners.cfg, image)
    frames = generate_frames(runners, picture.image, picture.mask, pcm)
    return contact_sheet(picture.image, frames, count=count, height=height)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=str(ROOT / "docs" / "images" / "motion_unseen_faces.png"))
    p.add_argument("--grid", default=str(ROOT.parent / "shared" / "data" / "grid"))
    p.add_argument("--clip", action="append", default=None, help="GRID clip name (default: the held-out ones)")
    p.add_argument("--weights", default=None)
    p.add_argument("--count", type=int, default=8)
    p.add_argument("--height", type=int, default=160)
    p.add_argument("--demo", default=None, help="also write the bundled portrait's row here")
    args = p.parse_args(argv)
    try:
        cfg = ModelConfig.from_name("motion")
        runners = torch_runners(load_model(cfg, args.weights))
        picture, pcm = bundled_demo(cfg)
        rows = [row(runners, picture.image, pcm, args.count, args.height)]
        if args.demo:
            Image.fromarray(rows[0]).save(args.demo)
            print(f"wrote {args.demo}")
        for name in args.clip or list(GRID_HELD_OUT):
            video = Path(args.grid) / f"{name}.mpg"
            frames, _ = load_video(video)
            rows.append(row(runners, frames[0], load_audio(video, cfg.audio.sample_rate), args.count, args.height))
    except InputError as err:
        print(f"motion_contact_sheet: error: {err}", file=sys.stderr)
        return 2
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(stack_rows(rows)).save(args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Contact sheets: the photo, then frames across a clip, in one row: the picture to look at before a table.

    sheet = contact_sheet(photo, frames, count=8)                       # uint8 [H, W, 3]
    python -m livehead.engine.eval.contact_sheet --image me.jpg --video me.mp4 --out sheet.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from livehead.engine.common.errors import InputError
from livehead.engine.eval.evaluate import read_video
from livehead.engine.media.audio_video import load_image

GAP = 4  # pixels of white between tiles


def _tile(image: np.ndarray, height: int) -> np.ndarray:
    h, w = image.shape[:2]
    return cv2.resize(image, (max(1, round(w * height / h)), height), interpolation=cv2.INTER_AREA)


def contact_sheet(photo: np.ndarray, frames: list[np.ndarray], count: int = 8, height: int = 192) -> np.ndarray:
    """photo [H, W, 3] then `count` frames evenly spread over `frames` (first to last), each scaled to `height`
    pixels, side by side with white gaps → uint8 [height, W_total, 3]."""
    if not frames:
        raise InputError("no frames to put on a contact sheet")
    if count < 1 or height < 8:
        raise InputError(f"a contact sheet needs at least one frame and 8 pixels of height, got {count}, {height}")
    picks = np.unique(np.linspace(0, len(frames) - 1, min(count, len(frames))).round().astype(int))
    tiles = [_tile(photo, height)] + [_tile(frames[i], height) for i in picks]
    gap = np.full((height, GAP, 3), 255, np.uint8)
    row = [gap]
    for t in tiles:
        row += [t, gap]
    return np.concatenate(row, axis=1)


def stack_rows(rows: list[np.ndarray]) -> np.ndarray:
    """Sheets of one height on top of each other (padded white to the widest) → uint8 [H_total, W, 3]."""
    width = max(r.shape[1] for r in rows)
    padded = [np.pad(r, ((0, GAP), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    return np.concatenate(padded, axis=0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m livehead.engine.eval.contact_sheet", description=__doc__.split("\n")[0])
    p.add_argument("--image", required=True, help="the photo the video was made from")
    p.add_argument("--video", required=True, help="the rendered video")
    p.add_argument("--out", required=True, help="PNG to write")
    p.add_argument("--count", type=int, default=8)
    p.add_argument("--height", type=int, default=192)
    args = p.parse_args(argv)
    try:
        frames, _ = read_video(args.video)
        sheet = contact_sheet(load_image(args.image), frames, args.count, args.height)
    except InputError as err:
        print(f"contact_sheet: error: {err}", file=sys.stderr)
        return 2
    Image.fromarray(sheet).save(Path(args.out))
    print(f"wrote {args.out} ({sheet.shape[1]}x{sheet.shape[0]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""How fast the motion tier's photo renderer draws a frame on the CPU.

    OMP_NUM_THREADS=2 python benchmarks/motion_render.py [--threads 2] [--out benchmarks/results/motion_render.json]

The bundled portrait is resized to each long side (256, 512) and driven by a speech-like motion (jaw and
two more expression components, head roll and shift, a blink), so the mouth layer is drawn on most frames
as in use. Once per side: `prepare_photo_ms` (face checks and landmarks, MediaPipe already loaded) and
`renderer_setup_ms` (warp mesh, mouth layer). Per side, medians over --frames frames after --warmup:
`decode` (MotionSpace.decode of one
frame), `warp` (the renderer without its mouth layer), `render` (PhotoRenderer.render, the figure to
quote), and `render_2_sessions` (two threads rendering on one shared renderer: wall time per frame).
Baseline, in the same run: the engine's existing piecewise-affine warp (`engine.media.warp`, one
fillConvexPoly per triangle and a per-pixel map) over the same mesh points, its ratio to `warp` quoted.
OpenCV uses --threads threads.
"""

from __future__ import annotations

import argparse
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from livehead.engine.eval.bench import machine_info, save_result
from livehead.engine.media.audio_video import load_image
from livehead.engine.media.warp import border_points, delaunay_triangles, piecewise_affine_warp
from livehead.engine.motion.photo import prepare_photo
from livehead.engine.motion.renderer import PhotoRenderer
from livehead.engine.motion.space import default_motion_space

ROOT = Path(__file__).resolve().parents[1]
SIDES = (256, 512)


def speech_like_motion(space, n: int) -> np.ndarray:
    """[n, M]: jaw at the training clips' coefficient scale, two more components, roll ±3°, shift, a blink."""
    t = np.arange(n, dtype=np.float64)
    k = space.k
    motion = space.neutral_motion(n)
    motion[:, 0] = 0.6 * np.sin(2 * np.pi * t / 9)
    motion[:, 2] = 0.2 * np.sin(2 * np.pi * t / 11)
    motion[:, 4] = 0.15 * np.sin(2 * np.pi * t / 7 + 1.0)
    motion[:, k + 2] = np.deg2rad(3.0) * np.sin(2 * np.pi * t / 25)
    motion[:, k + 4] = 0.04 * np.sin(2 * np.pi * t / 23)
    motion[:, k] = motion[:, k + 1] = np.clip(0.1 + 0.9 * (np.abs(t % 40 - 20) - 1) / 3, 0.1, 1.0)
    return motion


def median_ms(fn, items, warmup: int) -> float:
    times = []
    for i, item in enumerate(items):
        t = time.perf_counter()
        fn(item)
        if i >= warmup:
            times.append(time.perf_counter() - t)
    return round(1000 * statistics.median(times), 3)


def bench_side(portrait: np.ndarray, side: int, frames: int, warmup: int) -> dict:
    space = default_motion_space()
    image = cv2.resize(portrait, (side, side), interpolation=cv2.INTER_CUBIC)
    prepare_photo(image, max_side=side)  # loads MediaPipe's graphs
    t = time.perf_counter()
    photo = prepare_photo(image, max_side=side)
    prepare_ms = 1000 * (time.perf_counter() - t)
    t = time.perf_counter()
    renderer = PhotoRenderer(photo, max_side=side)
    setup_ms = 1000 * (time.perf_counter() - t)
    bare = PhotoRenderer(renderer.photo, max_side=side, mouth_layer=False)
    motion = speech_like_motion(space, warmup + frames)
    moved = space.decode(motion, renderer.neutral)
    result = {
        "output": [renderer.height, renderer.width], "prepare_photo_ms": round(prepare_ms, 1),
        "renderer_setup_ms": round(setup_ms, 1),
        "grid_nodes": [renderer.grid.nx, renderer.grid.ny],
        "decode_ms": median_ms(lambda m: space.decode(m[None], renderer.neutral), motion, warmup),
        "warp_ms": median_ms(bare.render, moved, warmup),
        "render_ms": median_ms(renderer.render, moved, warmup),
    }
    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(renderer.render, moved[:warmup]))
        t = time.perf_counter()
        list(pool.map(renderer.render, moved[warmup:]))
        result["render_2_sessions_ms"] = round(1000 * (time.perf_counter() - t) / frames, 3)
    # baseline: the engine's existing warp over the same mesh points plus fixed border points
    src = np.concatenate([renderer.neutral[:468], border_points(side)])
    triangles = delaunay_triangles(src, side)
    grid = np.mgrid[0:side, 0:side].astype(np.float32)
    targets = [np.concatenate([m[:468], src[468:]]) for m in moved]
    result["baseline_media_warp_ms"] = median_ms(
        lambda target: piecewise_affine_warp(renderer.image, src, target, triangles, grid), targets, warmup)
    result["baseline_over_warp"] = round(result["baseline_media_warp_ms"] / result["warp_ms"], 2)
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=2, help="OpenCV threads")
    p.add_argument("--frames", type=int, default=50, help="timed frames per figure (the median is reported)")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "motion_render.json"))
    args = p.parse_args(argv)
    cv2.setNumThreads(args.threads)
    portrait = load_image(ROOT / "engine" / "assets" / "portrait.png")
    result = {"benchmark": "motion_render", "cv2_threads": cv2.getNumThreads(), "opencv": cv2.__version__,
              "frames": args.frames, "device": machine_info(),
              "sides": {str(side): bench_side(portrait, side, args.frames, args.warmup) for side in SIDES}}
    for side, r in result["sides"].items():
        print(f"{side:>4} px: render {r['render_ms']:.2f} ms/frame (warp {r['warp_ms']:.2f}, decode "
              f"{r['decode_ms']:.2f}; 2 sessions {r['render_2_sessions_ms']:.2f} ms/frame); media.warp baseline "
              f"{r['baseline_media_warp_ms']:.2f} ms = {r['baseline_over_warp']}× the warp")
    print(f"wrote {save_result(args.out, result)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

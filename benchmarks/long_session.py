"""Does a long session drift? One streaming session over a long clip, scored segment by segment.

    python -m livehead.engine.synth.make_clips --portrait engine/assets/portrait.png --out long --no-augment \\
        --text "$(python -c 'from engine.synthetic_talker import SENTENCES; print(" ".join(SENTENCES * 2))')"
    python benchmarks/long_session.py --data long [--weights DIR] [--segment-seconds 10] \\
        [--out benchmarks/results/long_session.json]

Every clip after the first window is conditioned on the session's own last frames (the motion prefix),
never on ground truth, so errors can pile up over minutes of a live call while a 3-4 s eval clip hides
them. This runs the same `Session` as `livehead animate` over each clip in one go and reports the eval
metrics (`engine.evaluate.evaluate_pair`) per segment of `--segment-seconds`: mouth correlation with the
generator's truth, mouth closed in silence, identity (dlib distance to the reference), landmark jitter.
A model that drifts shows the identity distance rising and the mouth figures falling segment by segment.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from livehead.engine.common.errors import InputError
from livehead.engine.eval.bench import machine_info, save_result
from livehead.engine.eval.evaluate import FPS, evaluate_pair, find_clips, generate_frames, prepare_clip
from livehead.engine.model.config import ModelConfig
from livehead.engine.runtime.runners import TorchRunners
from livehead.engine.weights.loading import load_model, weights_label

ROOT = Path(__file__).resolve().parents[1]

KEYS = ("mouth_corr_gt", "mouth_corr_audio", "silent_closed", "identity_same", "identity_distance_median",
        "landmark_jitter")


def segment_bounds(n_frames: int, segment_frames: int) -> list[tuple[int, int]]:
    """[start, end) frame ranges of whole segments; a last piece shorter than half a segment joins the one
    before it (too few frames for a correlation of its own)."""
    if segment_frames < 1:
        raise InputError(f"segments must hold at least one frame, got {segment_frames}")
    bounds = [(a, min(a + segment_frames, n_frames)) for a in range(0, n_frames, segment_frames)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] < segment_frames / 2:
        bounds[-2:] = [(bounds[-2][0], n_frames)]
    return bounds


def score_segments(frames: list[np.ndarray], clip, sample_rate: int, segment_frames: int,
                   identity_stride: int) -> list[dict]:
    """evaluate_pair on each segment of a generated clip against its ground truth."""
    n = len(frames) if clip.gt_open is None else min(len(frames), len(clip.gt_open))
    out = []
    for a, b in segment_bounds(n, segment_frames):
        pcm = clip.pcm[a * sample_rate // FPS: b * sample_rate // FPS]
        m = evaluate_pair(frames[a:b], clip.reference, pcm, sample_rate,
                          gt_open=None if clip.gt_open is None else clip.gt_open[a:b],
                          gt_frames=None if clip.gt_open is not None else clip.gt_frames[a:b],
                          silent=None if clip.silent is None else clip.silent[a:b], identity_stride=identity_stride)
        out.append({"start_s": round(a / FPS, 2), "end_s": round(b / FPS, 2)} | {k: m.get(k) for k in KEYS})
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="folder of long clips (synthetic_talker output or GRID-style)")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--weights", default=None, help="weights directory (default: the preset's own)")
    p.add_argument("--segment-seconds", type=float, default=10.0, help="length of the scored segments")
    p.add_argument("--identity-stride", type=int, default=2, help="embed every k-th frame for identity")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "long_session.json"))
    args = p.parse_args(argv)
    try:
        if not 0.04 <= args.segment_seconds <= 3600 or args.identity_stride < 1:
            raise InputError(f"--segment-seconds must be in [0.04, 3600] and --identity-stride at least 1, got "
                             f"{args.segment_seconds} and {args.identity_stride}")
        cfg = ModelConfig.from_name(args.preset)
        runners = TorchRunners(load_model(cfg, args.weights))
        sr = cfg.audio.sample_rate
        results = []
        for source in find_clips(args.data):
            clip = prepare_clip(source, cfg.stream.image_size, sr)
            t = time.perf_counter()
            frames = generate_frames(runners, clip.reference, clip.mask, clip.pcm, seed=args.seed)
            seconds = time.perf_counter() - t
            segments = score_segments(frames, clip, sr, round(args.segment_seconds * FPS),
                                      args.identity_stride)
            results.append({"clip": source.name, "seconds": round(len(frames) / FPS, 2),
                            "generate_fps": round(len(frames) / seconds, 1), "segments": segments})
            print(f"{source.name}: {len(frames)} frames in {seconds:.1f} s")
            for s in segments:
                print(f"  {s['start_s']:6.1f}-{s['end_s']:6.1f} s  " +
                      "  ".join(f"{k} {s[k]}" for k in KEYS))
    except InputError as err:
        print(f"long_session: error: {err}", file=sys.stderr)
        return 2
    result = {"benchmark": "long_session", "preset": cfg.name, "weights": weights_label(cfg, args.weights),
              "sampling_steps": cfg.sampler.steps, "segment_seconds": args.segment_seconds,
              "device": machine_info(), "clips": results}
    save_result(args.out, result)
    print(f"saved {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`livehead eval`: lip-sync, silence, identity and jitter metrics on a folder of clips (JSON)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from livehead.engine.eval.evaluate import evaluate_clips, find_clips, generate_frames, vae_roundtrip_frames
from livehead.engine.eval.motion_eval import EVAL_SIZE, evaluate_motion_clips
from livehead.engine.media.audio_video import load_image
from livehead.engine.model.config import ModelConfig
from livehead.engine.weights.loading import weights_label
from livehead.server.backends.runners import make_runners, motion_controls, print_seeded_note
from livehead.server.cli.common import DEFAULT_PRESET, add_motion_controls, raise_input


def add_parser(sub) -> argparse.ArgumentParser:
    v = sub.add_parser("eval", help="lip-sync, silence, identity and jitter metrics on a folder of clips (JSON)")
    v.add_argument("--data", required=True, help="folder of clips: GRID .mpg (+ .align) or synthetic_talker output")
    v.add_argument("--preset", default=DEFAULT_PRESET,
                     help="motion (embedded default), tiny, echomimic-v1, echomimic-v1-acc")
    v.add_argument("--weights", default=None, help="weights directory (default: the preset's own)")
    v.add_argument("--out", default=None, help="write the JSON here (default: print it)")
    v.add_argument("--reference", default=None, help="animate this portrait instead of each clip's first frame")
    v.add_argument("--ground-truth", action="store_true", help="score the clips' own videos instead of the model "
                   "(the best achievable figures)")
    v.add_argument("--shift", type=int, default=0, help="with --ground-truth: delay the video by N frames")
    v.add_argument("--vae-roundtrip", action="store_true", help="score the clips' own videos after the "
                   "weights' VAE (encode + decode): the ceiling the VAE puts on the model")
    v.add_argument("--identity-stride", type=int, default=1, help="embed every K-th frame for the identity metric")
    v.add_argument("--limit", type=int, default=None, help="only the first N clips")
    v.add_argument("--seed", type=int, default=0)
    v.add_argument("--steps", type=int, default=None)
    v.add_argument("--device", default="auto")
    add_motion_controls(v)
    v.add_argument("--series", action="store_true", help="include per-frame mouth openings in the JSON")
    v.add_argument("--quiet", action="store_true", help="no progress bar")
    return v


def run(args: argparse.Namespace) -> int:
    cfg = ModelConfig.from_name(args.preset)
    if args.steps is not None:
        cfg = cfg.with_steps(args.steps)
    if args.identity_stride < 1:
        raise_input(f"--identity-stride must be at least 1, got {args.identity_stride}")
    if args.shift and not args.ground_truth:
        raise_input("--shift only applies with --ground-truth")
    if args.vae_roundtrip and args.ground_truth:
        raise_input("--vae-roundtrip and --ground-truth exclude each other (both score the clips' own videos)")
    if args.out and not Path(args.out).resolve().parent.is_dir():
        raise_input(f"output directory does not exist: {Path(args.out).parent}; create it first")
    if cfg.motion is not None and (args.vae_roundtrip or args.reference):
        raise_input("the motion preset has no VAE and animates each clip's own first frame: "
                    "--vae-roundtrip and --reference apply to the pixel presets (--preset tiny)")
    clips = find_clips(args.data)
    if cfg.motion is not None and not args.ground_truth:
        return run_motion(args, cfg, clips[: max(0, args.limit)] if args.limit is not None else clips)
    reference = None
    if args.reference:
        reference = load_image(args.reference)
    if args.limit is not None:
        clips = clips[: max(0, args.limit)]
    generate = None  # --ground-truth: score the clips' own videos
    if not args.ground_truth:
        runners = make_runners(cfg, "torch", args.weights, args.device, progress=not args.quiet)
        print_seeded_note(cfg, args.weights)
        if args.vae_roundtrip:
            generate = lambda clip: vae_roundtrip_frames(runners, clip.gt_frames, clip.reference,
                                                             clip.mask)
        else:
            generate = lambda clip: generate_frames(runners, clip.reference, clip.mask, clip.pcm,
                                                    seed=args.seed)
    size = EVAL_SIZE if cfg.motion is not None else cfg.stream.image_size
    result = evaluate_clips(clips, size, generate, identity_stride=args.identity_stride,
                            reference=reference, shift=args.shift, progress=not args.quiet, series=args.series,
                            with_silence=not args.vae_roundtrip)
    model = "ground-truth" if args.ground_truth else f"{cfg.name} VAE round trip" if args.vae_roundtrip else cfg.name
    result = {"model": model, "weights": None if args.ground_truth else weights_label(cfg, args.weights),
              "data": str(args.data), "steps": cfg.sampler.steps, "seed": args.seed,
              "reference_mix": None if args.ground_truth else runners.cfg.sampler.reference_mix, **result}
    text = json.dumps(result, indent=1) + "\n"
    if args.out:
        Path(args.out).write_text(text)
        s = result["summary"]
        print(f"wrote {args.out}: {s['clips']} clips, mouth corr {s['mouth_corr_gt']}, silent closed "
              f"{s['silent_closed']}, same person {s['identity_same']}; pass: "
              + ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in s["pass"].items()))
    else:
        sys.stdout.write(text)
    return 0


def run_motion(args: argparse.Namespace, cfg: ModelConfig, clips) -> int:
    """`livehead eval` of the motion tier (`engine.eval.motion_eval`)."""
    runners = make_runners(cfg, "torch", args.weights, args.device, progress=not args.quiet,
                           controls=motion_controls(args))
    print_seeded_note(cfg, args.weights)
    result = evaluate_motion_clips(clips, runners, identity_stride=args.identity_stride, seed=args.seed,
                                   progress=not args.quiet)
    result = {"model": cfg.name, "weights": weights_label(cfg, args.weights), "data": str(args.data),
              "seed": args.seed, **result}
    text = json.dumps(result, indent=1) + "\n"
    if not args.out:
        sys.stdout.write(text)
        return 0
    Path(args.out).write_text(text)
    s = result["summary"]
    print(f"wrote {args.out}: {s['clips']} clips, mouth corr {s['mouth_corr_gt']} (mismatched audio "
          f"{s['mouth_corr_gt_mismatched']}), silent closed {s['silent_closed']} (real video {s['gt_silent_closed']}), "
          f"same person {s['identity_same']}; pass: "
          + ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in s["pass"].items()))
    return 0

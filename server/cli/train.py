"""`livehead train vae|stage1|stage2|distill|motion`: the embedded models' training stages (resumable)."""

from __future__ import annotations

import argparse

from livehead.engine.model.config import ModelConfig
from livehead.engine.runtime.runners import resolve_device
from livehead.engine.training.distill import distill
from livehead.engine.training.motion import train_motion
from livehead.engine.training.options import TrainOptions, options_from
from livehead.engine.training.train import train_stage
from livehead.engine.training.vae import train_vae
from livehead.server.cli.common import raise_input

TRAIN_STAGES = ("vae", "stage1", "stage2", "distill", "motion")


def add_parser(sub) -> None:
    """`livehead train ...`: the pixel model's stages (engine/training/train.py) and the motion generator's."""
    t = sub.add_parser("train", help="train the embedded models: vae, stage1, stage2, distill (pixel tiny) or "
                       "motion (the motion tier's generator); resumable")
    t.add_argument("stage", choices=TRAIN_STAGES, help="vae, stage1 (image), stage2 (video + audio), distill, "
                   "motion (the motion generator: GRID-style videos with audio; held-out clips are skipped)")
    t.add_argument("--data", action="append", required=True, metavar="DIR",
                   help="folder of videos with audio (GRID .mpg, synthetic_talker .mp4) or prepared clips; repeatable")
    t.add_argument("--out", required=True, help="run folder: checkpoint.pt, log.jsonl, weights/")
    t.add_argument("--preset", default=None, help="default: motion for the motion stage, else tiny")
    t.add_argument("--init", default=None, help="weights folder to start from (the previous stage's OUT/weights)")
    t.add_argument("--whisper", default=None, help="pretrained Whisper-tiny weights for the (frozen) audio encoder")
    t.add_argument("--cache", default=None, help="cropped clips and latent cache (default: OUT/../cache)")
    t.add_argument("--mix", default=None, help="share of each --data folder, e.g. 1,1")
    t.add_argument("--device", default="auto")
    t.add_argument("--resume", action="store_true", help="continue OUT's checkpoint")
    t.add_argument("--quiet", action="store_true", help="no progress bars")
    from dataclasses import fields

    for f in fields(TrainOptions):
        if "help" in f.metadata:  # the numeric options; shown with their defaults
            t.add_argument(f"--{f.name.replace('_', '-')}", type={"int": int, "float": float}[str(f.type)],
                           default=None, help=f"{f.metadata['help']} (default: {f.default})")
    t.add_argument("--reference-mix", type=float, default=None,
                   help="stage2: centre the diffusion noise on the reference latent by this share in [0, 1) "
                        "(the one-step model then sees the photo's layout in its input; recorded in the "
                        "weights' livehead.json; default: the --init weights' own, else 0)")
    t.add_argument("--train-spatial", action="store_true", help="stage2: also train the spatial layers")
    t.add_argument("--decoder-only", action="store_true",
                   help="vae: fine-tune only the decoder of --init's VAE (latents and latent caches stay valid)")
    t.add_argument("--precision", default=None, help="fp32 (default; TF32 on CUDA) or bf16 (autocast on CUDA)")


def run(args: argparse.Namespace) -> int:
    cfg = ModelConfig.from_name(args.preset or ("motion" if args.stage == "motion" else "tiny"))
    try:
        mix = tuple(float(x) for x in args.mix.split(",")) if args.mix else None
    except ValueError:
        raise_input(f"--mix must be comma-separated numbers, one per --data folder, got {args.mix!r}")
    opts = options_from(args, progress=not args.quiet, mix=mix)
    run = dict(init=args.init, whisper=args.whisper, cache=args.cache, device=resolve_device(args.device),
               resume=args.resume)
    if args.stage == "motion":
        weights = train_motion(cfg, args.data, args.out, opts, **run)
        print(f"wrote {weights} (motion generator); try it: livehead animate --weights {weights}; evaluate it: "
              f"livehead eval --weights {weights} --data DIR")
        return 0
    if args.stage == "vae":
        train = train_vae
    elif args.stage == "distill":
        train = distill
    else:
        def train(*a, **kw):
            return train_stage(args.stage, *a, **kw)
    weights = train(cfg, args.data, args.out, opts, **run)
    if args.stage == "vae":
        if opts.decoder_only:  # the --init model with a new decoder: check what it gained
            print(f"wrote {weights} (vae decoder); check it: livehead eval --vae-roundtrip --weights {weights} "
                  f"--data DIR")
        else:
            print(f"wrote {weights} (vae); next: livehead train stage1 --init {weights} ...")
        return 0
    if args.stage == "distill":
        steps = opts.to_steps
    elif opts.t_min == opts.t_max == cfg.sampler.num_train_timesteps - 1:
        steps = 1  # trained at t = 999 only: a one-step model
    else:
        steps = opts.from_steps  # the teacher samples with more steps
    print(f"wrote {weights} ({args.stage}); try it: livehead animate --preset {cfg.name} --weights {weights} "
          f"--steps {steps}")
    return 0

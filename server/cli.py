"""The `livehead` command.

    livehead animate [--image PHOTO] [--audio AUDIO] [--out OUT.mp4] [--preset tiny] [--weights DIR]
                     [--steps N] [--seed S] [--device auto|cpu|cuda] [--schedule stream|offline]
                     [--no-crop] [--quiet]
    livehead parity --fixtures DIR [--json OUT]
    livehead weights manifest --preset NAME
    livehead weights download echomimic-v1-acc|echomimic-v1 [--dir DIR] [--quiet]
    livehead weights convert DIR [--preset echomimic-v1-acc] [--out DIR2] [--dtype fp16|bf16|fp32] [--quiet]
    livehead eval --data DIR [--preset tiny] [--weights DIR] [--out RESULT.json] [--reference PHOTO]
                  [--ground-truth [--shift N] | --vae-roundtrip] [--identity-stride K] [--limit N] [--seed S]
                  [--steps N] [--device auto] [--series] [--quiet]
    livehead live --mic | --audio FILE [--image PHOTO] [--out OUT.mp4] [--seconds S] [--no-window] [--json OUT]
    livehead train vae|stage1|stage2|distill --data DIR [--data DIR2 --mix 1,1] --out RUN [--init WEIGHTS]
                   [--whisper FILE] [--steps N] [--batch B] [--lr LR] [--ema D] [--resume] [--device auto] [--quiet]
    livehead serve [--host 127.0.0.1] [--port 8080] [--preset tiny] [--weights DIR] [--device auto]
                   [--backend torch|onnxruntime|tensorrt] [--max-sessions N] [--token T] [--ice-server URL]...
                   [--latency S]

Bad input ends with a one-line `livehead: error: ...` on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ASSETS = Path(__file__).resolve().parent.parent / "engine" / "assets"
DEFAULT_IMAGE = ASSETS / "portrait.png"
DEFAULT_AUDIO = ASSETS / "speech.wav"
EXIT_BAD_INPUT = 2


def bundled_demo(cfg, seconds: float | None = None):
    """The bundled portrait cropped for cfg and the bundled speech at cfg's rate (its first `seconds` when
    given): the clip `livehead animate`, `livehead bench` and the benchmarks run without arguments.
    Returns (PortraitCrop, pcm float32 [T])."""
    from engine.face import prepare_portrait
    from engine.media import load_audio, load_image

    crop = prepare_portrait(load_image(DEFAULT_IMAGE), cfg.stream.image_size)
    pcm = load_audio(DEFAULT_AUDIO, sample_rate=cfg.audio.sample_rate)
    if seconds is not None:
        pcm = pcm[: max(1, int(seconds * cfg.audio.sample_rate))]
    return crop, pcm


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """The model, weights, runtime and crop options that `animate` and `live` share."""
    p.add_argument("--preset", default="tiny", help="tiny (embedded default), echomimic-v1, echomimic-v1-acc")
    p.add_argument("--weights", default=None,
                   help="weights directory (required for the echomimic presets; tiny: its shipped weights, "
                        "or 'seeded' for the seed-fixed random model)")
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: the preset's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
    p.add_argument("--backend", default="torch", help="torch, onnxruntime or tensorrt")
    p.add_argument("--exported", default=None, help="ONNX export directory for onnxruntime/tensorrt "
                   "(default: exported/PRESET, exported on first use)")
    p.add_argument("--no-crop", action="store_true", help="use the whole image when no face is detected")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="livehead", description="Real-time talking-head engine (EMO family).")
    sub = p.add_subparsers(dest="command", required=True)

    a = sub.add_parser("animate", help="render a portrait speaking an audio file to an mp4")
    a.add_argument("--image", default=str(DEFAULT_IMAGE), help="portrait photo (default: bundled portrait)")
    a.add_argument("--audio", default=str(DEFAULT_AUDIO), help="speech or song, any container (default: bundled clip)")
    a.add_argument("--out", default="livehead-demo.mp4", help="output mp4 (H.264 + AAC, 25 fps)")
    add_model_arguments(a)
    a.add_argument("--schedule", default="stream", help="stream (causal, the live path) or offline (EchoMimic's "
                   "reference: whole-file audio features, all windows jointly)")
    a.add_argument("--quiet", action="store_true", help="no progress bar")

    q = sub.add_parser("parity", help="check livehead against EchoMimic's recorded outputs on a fixture set")
    q.add_argument("--fixtures", required=True, help="fixture folder (config.json, *.safetensors, *.npz, *.npy)")
    q.add_argument("--json", default=None, help="also write the per-stage errors as JSON here")
    q.add_argument("--quiet", action="store_true", help="no progress bar")

    e = sub.add_parser("export", help="export every component to ONNX (and TensorRT engines)")
    e.add_argument("--preset", default="tiny")
    e.add_argument("--weights", default=None)
    e.add_argument("--out", default=None, help="output directory (default: exported/PRESET)")
    e.add_argument("--opset", type=int, default=17)
    e.add_argument("--precision", default="fp32", help="fp32 or fp16 (fp16 for GPU runtimes)")
    e.add_argument("--check", action="store_true", help="compare every exported graph and the whole pipeline "
                   "with torch fp32")
    e.add_argument("--tensorrt", action="store_true", help="also build TensorRT engines (NVIDIA GPU + tensorrt)")
    e.add_argument("--trt-precision", default="fp16", help="fp32, fp16, bf16 or fp8 for the TensorRT engines")
    e.add_argument("--quiet", action="store_true")

    b = sub.add_parser("bench", help="frames per second of a streaming session, against torch in the same run")
    b.add_argument("--preset", default="tiny", help="tiny (embedded default), echomimic-v1, echomimic-v1-acc")
    b.add_argument("--weights", default=None, help="weights directory (tiny: its shipped weights, or 'seeded')")
    b.add_argument("--backend", default="onnxruntime", help="torch, onnxruntime or tensorrt")
    b.add_argument("--exported", default=None, help="ONNX export directory (default: exported/PRESET, exported "
                   "on first use)")
    b.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
    b.add_argument("--runs", type=int, default=5, help="timed runs after one warm-up; the median is reported")
    b.add_argument("--audio-seconds", type=float, default=None, help="use only the first seconds of the clip")
    b.add_argument("--json", default=None, help="where to save the figures (default: "
                   "benchmarks/results/bench_PRESET_BACKEND.json)")

    v = sub.add_parser("eval", help="lip-sync, silence, identity and jitter metrics on a folder of clips (JSON)")
    v.add_argument("--data", required=True, help="folder of clips: GRID .mpg (+ .align) or synthetic_talker output")
    v.add_argument("--preset", default="tiny")
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
    v.add_argument("--series", action="store_true", help="include per-frame mouth openings in the JSON")
    v.add_argument("--quiet", action="store_true", help="no progress bar")

    w = sub.add_parser("weights", help="checkpoint tools")
    wsub = w.add_subparsers(dest="weights_command", required=True)
    m = wsub.add_parser("manifest", help="print the preset's checkpoint keys and shapes as JSON")
    m.add_argument("--preset", default="tiny")
    d = wsub.add_parser("download", help="fetch a preset's public checkpoints from the Hugging Face hub "
                        "(resumable; files already complete are skipped)")
    d.add_argument("preset", help="echomimic-v1-acc or echomimic-v1")
    d.add_argument("--dir", default=None, help="weights directory (default: weights/PRESET)")
    d.add_argument("--quiet", action="store_true", help="no progress bars")
    c = wsub.add_parser("convert", help="rewrite a weights directory's files as checked .safetensors "
                        "(loaded in preference to the .pth files)")
    c.add_argument("dir", help="weights directory in the release layout")
    c.add_argument("--preset", default="echomimic-v1-acc")
    c.add_argument("--out", default=None, help="write the .safetensors files here (default: beside the originals)")
    c.add_argument("--dtype", default="fp16", help="fp16 (default), bf16 or fp32")
    c.add_argument("--quiet", action="store_true", help="no progress bar")

    from server.live import add_parser as add_live_parser

    add_live_parser(sub)

    from server.serve import add_parser as add_serve_parser

    add_serve_parser(sub)
    add_train_parser(sub)
    return p


def cmd_animate(args: argparse.Namespace) -> int:
    from engine.config import ModelConfig
    from engine.model import resolve_device
    from engine.render import render_file
    from server.backends import make_runners, print_seeded_note

    cfg = ModelConfig.from_name(args.preset)
    if args.steps is not None:
        cfg = cfg.with_steps(args.steps)
    device = resolve_device(args.device)
    out = Path(args.out)
    if out.suffix.lower() != ".mp4":
        raise_input(f"--out must name an .mp4 file, got {args.out!r}")
    if not out.parent.is_dir():
        raise_input(f"output directory does not exist: {out.parent}; create it or choose another --out")
    runners = make_runners(cfg, args.backend, args.weights, args.device, args.exported, progress=not args.quiet)
    print_seeded_note(cfg, args.weights)
    report = render_file(runners, args.image, args.audio, out, seed=args.seed,
                         crop=not args.no_crop, progress=not args.quiet, schedule=args.schedule)
    print(f"wrote {out}: {report.frames} frames at {cfg.stream.fps} fps for {report.audio_seconds:.2f} s of audio "
          f"({report.fps:.1f} frames/s on {device} with {args.backend}, preset {cfg.name}, "
          f"{cfg.sampler.steps} step{'s' if cfg.sampler.steps != 1 else ''})")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from engine.config import ModelConfig
    from engine.model import load_model, weights_identity
    from export.onnx_export import export_preset
    from server.backends import default_export_dir

    cfg = ModelConfig.from_name(args.preset)
    out = Path(args.out) if args.out else default_export_dir(cfg)
    model = load_model(cfg, args.weights)
    manifest = export_preset(cfg, model, out, opset=args.opset, precision=args.precision, progress=not args.quiet,
                             weights_id=weights_identity(cfg, args.weights))
    for name, entry in manifest["components"].items():
        print(f"{name:16s} {entry['file']:24s} {entry['bytes'] / 1e6:9.1f} MB  sha256 {entry['sha256'][:12]}")
    print(f"wrote {out / 'manifest.json'} (opset {args.opset}, {args.precision}); every graph passed onnx.checker")
    if args.check:
        _export_check(cfg, load_model(cfg, args.weights), out)
    if args.tensorrt:
        from export.tensorrt import TrtRunners

        TrtRunners(cfg, out, precision=args.trt_precision)
        print(f"built TensorRT engines ({args.trt_precision}) under {out / 'tensorrt'}")
    return 0


def _export_check(cfg, model, out: Path) -> None:
    from engine.model import TorchRunners
    from export.check import component_errors, format_errors, pipeline_psnr
    from export.ort_runners import OrtRunners

    ort = OrtRunners.from_dir(cfg, out)  # samples with the reference mix the export's manifest records
    s = cfg.stream
    rows = component_errors(model, ort, [(s.window_frames, 1), (s.clip_frames, 2)])
    print(format_errors(rows))
    crop, pcm = bundled_demo(cfg, seconds=2)
    psnr, frames = pipeline_psnr(TorchRunners(model), ort, crop.image, crop.mask, pcm, cfg.audio.sample_rate)
    print(f"pipeline: {frames} frames, onnxruntime vs torch fp32 PSNR {psnr:.1f} dB")


def cmd_bench(args: argparse.Namespace) -> int:
    from engine.bench import machine_info, save_result, session_fps
    from engine.config import ModelConfig
    from engine.model import weights_label
    from engine.session import prepare_avatar
    from server.backends import make_runners

    cfg = ModelConfig.from_name(args.preset)
    if args.runs < 1:
        raise_input(f"--runs must be at least 1, got {args.runs}")
    crop, pcm = bundled_demo(cfg, args.audio_seconds)
    backends = [args.backend] if args.backend == "torch" else [args.backend, "torch"]
    figures = {}
    for backend in backends:
        runners = make_runners(cfg, backend, args.weights, args.device, args.exported)
        avatar = prepare_avatar(runners, crop.image, crop.mask)
        figures[backend] = session_fps(runners, avatar, pcm, cfg.audio.sample_rate, args.runs)
        print(f"{backend:12s} {figures[backend]['fps']:6.1f} frames/s (median of {args.runs}, "
              f"{figures[backend]['frames']} frames of {len(pcm) / cfg.audio.sample_rate:.1f} s audio)")
    result = {"benchmark": "livehead bench", "preset": cfg.name, "backend": args.backend,
              "weights": weights_label(cfg, args.weights), "sampling_steps": cfg.sampler.steps,
              "reference_mix": runners.cfg.sampler.reference_mix,
              "audio_seconds": round(len(pcm) / cfg.audio.sample_rate, 3), "device": machine_info(),
              "runs": args.runs, "figures": figures}
    if len(backends) > 1:
        ratio = figures[args.backend]["fps"] / figures["torch"]["fps"]
        result["speedup_vs_torch"] = round(ratio, 3)
        print(f"{args.backend} is {ratio:.2f}x the torch backend's frames/s (same run)")
    out = save_result(args.json or Path("benchmarks/results") / f"bench_{cfg.name}_{args.backend}.json", result)
    print(f"saved {out}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from engine.config import ModelConfig
    from engine.evaluate import evaluate_clips, find_clips, generate_frames
    from engine.model import weights_label

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
    clips = find_clips(args.data)
    reference = None
    if args.reference:
        from engine.media import load_image

        reference = load_image(args.reference)
    if args.limit is not None:
        clips = clips[: max(0, args.limit)]
    generate = None  # --ground-truth: score the clips' own videos
    if not args.ground_truth:
        from server.backends import make_runners, print_seeded_note

        runners = make_runners(cfg, "torch", args.weights, args.device, progress=not args.quiet)
        print_seeded_note(cfg, args.weights)
        if args.vae_roundtrip:
            from engine.evaluate import vae_roundtrip_frames

            generate = lambda clip: vae_roundtrip_frames(runners, clip.gt_frames, clip.reference,  # noqa: E731
                                                             clip.mask)
        else:
            generate = lambda clip: generate_frames(runners, clip.reference, clip.mask, clip.pcm,  # noqa: E731
                                                    seed=args.seed)
    result = evaluate_clips(clips, cfg.stream.image_size, generate, identity_stride=args.identity_stride,
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


def cmd_parity(args: argparse.Namespace) -> int:
    from engine.bench import save_result
    from engine.parity import format_report, results_json, run_parity

    results = run_parity(Path(args.fixtures), progress=not args.quiet)
    print(format_report(results))
    if args.json:
        save_result(args.json, results_json(Path(args.fixtures), results))
    return 0 if all(r.ok for r in results) else 1


def _size(path: Path) -> str:
    n = path.stat().st_size if path.is_file() else 0
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def cmd_weights_download(args: argparse.Namespace) -> int:
    from engine.hub import download_weights

    dest = Path(args.dir) if args.dir else Path("weights") / args.preset
    counts = {"present": 0, "fetched": 0}

    def report(status: str, path: Path) -> None:
        counts[status] += 1
        print(f"{status:8s} {path} ({_size(path)})", flush=True)

    download_weights(args.preset, dest, progress=not args.quiet, report=report)
    print(f"weights for {args.preset} in {dest}: {counts['fetched']} fetched, {counts['present']} already present; "
          f"use: livehead animate --preset {args.preset} --weights {dest}")
    return 0


DTYPES = {"fp16": "float16", "bf16": "bfloat16", "fp32": "float32"}


def cmd_weights_convert(args: argparse.Namespace) -> int:
    import torch

    from engine.config import ModelConfig
    from engine.weights import convert_to_safetensors

    if args.dtype not in DTYPES:
        raise_input(f"--dtype must be fp16, bf16 or fp32, got {args.dtype!r}")
    cfg = ModelConfig.from_name(args.preset)
    out = Path(args.out) if args.out else None
    written = convert_to_safetensors(cfg, Path(args.dir), out, dtype=getattr(torch, DTYPES[args.dtype]),
                                     progress=not args.quiet)
    for path in written:
        print(f"wrote    {path} ({_size(path)})")
    print(f"{len(written)} files as {args.dtype} safetensors; they are loaded in preference to the .pth files "
          f"(use: livehead animate --preset {cfg.name} --weights {out or args.dir})")
    return 0


def cmd_weights(args: argparse.Namespace) -> int:
    if args.weights_command == "download":
        return cmd_weights_download(args)
    if args.weights_command == "convert":
        return cmd_weights_convert(args)
    from engine.config import ModelConfig
    from engine.model import build_manifest

    cfg = ModelConfig.from_name(args.preset)
    json.dump(build_manifest(cfg), sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 0


def cmd_live(args: argparse.Namespace) -> int:
    from server.live import cmd_live as run_live

    return run_live(args)


def raise_input(message: str):
    from engine.errors import InputError

    raise InputError(message)


def cmd_serve(args: argparse.Namespace) -> int:
    from server.serve import cmd_serve as run

    return run(args)


TRAIN_STAGES = ("vae", "stage1", "stage2", "distill")


def add_train_parser(sub) -> None:
    """`livehead train vae|stage1|stage2|distill`: the embedded model's training stages (engine/train.py)."""
    t = sub.add_parser("train", help="train the embedded model: vae, stage1, stage2, distill (resumable)")
    t.add_argument("stage", choices=TRAIN_STAGES, help="vae, stage1 (image), stage2 (video + audio), distill")
    t.add_argument("--data", action="append", required=True, metavar="DIR",
                   help="folder of videos with audio (GRID .mpg, synthetic_talker .mp4) or prepared clips; repeatable")
    t.add_argument("--out", required=True, help="run folder: checkpoint.pt, log.jsonl, weights/")
    t.add_argument("--preset", default="tiny")
    t.add_argument("--init", default=None, help="weights folder to start from (the previous stage's OUT/weights)")
    t.add_argument("--whisper", default=None, help="pretrained Whisper-tiny weights for the (frozen) audio encoder")
    t.add_argument("--cache", default=None, help="cropped clips and latent cache (default: OUT/../cache)")
    t.add_argument("--mix", default=None, help="share of each --data folder, e.g. 1,1")
    t.add_argument("--device", default="auto")
    t.add_argument("--resume", action="store_true", help="continue OUT's checkpoint")
    t.add_argument("--quiet", action="store_true", help="no progress bars")
    from dataclasses import fields

    from engine.train_options import TrainOptions

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


def cmd_train(args: argparse.Namespace) -> int:
    from engine.config import ModelConfig
    from engine.model import resolve_device
    from engine.train_options import options_from

    cfg = ModelConfig.from_name(args.preset)
    try:
        mix = tuple(float(x) for x in args.mix.split(",")) if args.mix else None
    except ValueError:
        raise_input(f"--mix must be comma-separated numbers, one per --data folder, got {args.mix!r}")
    opts = options_from(args, progress=not args.quiet, mix=mix)
    run = dict(init=args.init, whisper=args.whisper, cache=args.cache, device=resolve_device(args.device),
               resume=args.resume)
    if args.stage == "vae":
        from engine.train_vae import train_vae as train
    elif args.stage == "distill":
        from engine.distill import distill as train
    else:
        from engine.train import train_stage

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


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    args = _parser().parse_args(argv)
    from engine.errors import InputError

    try:
        commands = {"animate": cmd_animate, "parity": cmd_parity, "weights": cmd_weights, "live": cmd_live,
                    "export": cmd_export, "bench": cmd_bench, "serve": cmd_serve, "eval": cmd_eval}
        commands["train"] = cmd_train
        return commands[args.command](args)
    except InputError as err:
        print(f"livehead: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("livehead: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

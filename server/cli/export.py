"""`livehead export`: every component to ONNX (and TensorRT engines), optionally checked against torch."""

from __future__ import annotations

import argparse
from pathlib import Path

from livehead.engine.model.config import ModelConfig
from livehead.engine.runtime.portrait import bundled_demo
from livehead.engine.runtime.runners import TorchRunners
from livehead.engine.weights.loading import load_model, weights_identity
from livehead.export.check import component_errors, format_errors, pipeline_psnr
from livehead.export.onnx_export import export_preset
from livehead.export.ort_runners import OrtRunners
from livehead.export.tensorrt import TrtRunners
from livehead.server.backends.runners import default_export_dir
from livehead.server.cli.common import DEFAULT_PRESET


def add_parser(sub) -> argparse.ArgumentParser:
    e = sub.add_parser("export", help="export every component to ONNX (and TensorRT engines)")
    e.add_argument("--preset", default=DEFAULT_PRESET,
                     help="motion (embedded default), tiny, echomimic-v1, echomimic-v1-acc")
    e.add_argument("--weights", default=None)
    e.add_argument("--out", default=None, help="output directory (default: exported/PRESET)")
    e.add_argument("--opset", type=int, default=17)
    e.add_argument("--precision", default="fp32", help="fp32 or fp16 (fp16 for GPU runtimes)")
    e.add_argument("--check", action="store_true", help="compare every exported graph and the whole pipeline "
                   "with torch fp32")
    e.add_argument("--tensorrt", action="store_true", help="also build TensorRT engines (NVIDIA GPU + tensorrt)")
    e.add_argument("--trt-precision", default="fp16", help="fp32, fp16, bf16 or fp8 for the TensorRT engines")
    e.add_argument("--quiet", action="store_true")
    return e


def run(args: argparse.Namespace) -> int:
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
        TrtRunners(cfg, out, precision=args.trt_precision)
        print(f"built TensorRT engines ({args.trt_precision}) under {out / 'tensorrt'}")
    return 0


def _export_check(cfg, model, out: Path) -> None:
    ort = OrtRunners.from_dir(cfg, out)  # samples with the reference mix the export's manifest records
    s = cfg.stream
    rows = component_errors(model, ort, [(s.window_frames, 1), (s.clip_frames, 2)])
    print(format_errors(rows))
    crop, pcm = bundled_demo(cfg, seconds=2)
    psnr, frames = pipeline_psnr(TorchRunners(model), ort, crop.image, crop.mask, pcm, cfg.audio.sample_rate)
    print(f"pipeline: {frames} frames, onnxruntime vs torch fp32 PSNR {psnr:.1f} dB")

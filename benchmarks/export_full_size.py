"""Full-size `echomimic-v1-acc`: every component exported to ONNX on CPU (external data where over 2 GB),
then one denoiser step under ONNX Runtime CPU, compared with torch fp32 on the same inputs.

    python benchmarks/export_full_size.py [--out /tmp/livehead-full] [--frames 1] [--latent 32]

Random weights (the speed and the graph do not depend on their values). The ~5.2 GB of fp32 weights
exceed protobuf's 2 GB limit, so the weights go to `denoiser.onnx.data`. The check runs one denoiser
call at a small shape (default 1 frame of 32×32 latents = a 256² frame), since a 12-frame 512² step is
~13 TFLOP — minutes on a 2-core CPU. Saves JSON under benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

from livehead.engine.eval.bench import machine_info, save_result
from livehead.engine.model.avatar_model import COMPONENT_SEEDS, AvatarModel
from livehead.engine.model.config import ModelConfig
from livehead.engine.model.init_weights import seeded_init_
from livehead.export.graphs import KV_NAMES
from livehead.export.onnx_export import export_preset

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="/tmp/livehead-full")
    p.add_argument("--frames", type=int, default=1)
    p.add_argument("--latent", type=int, default=32)
    p.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "export_full_size.json"))
    args = p.parse_args()
    cfg = ModelConfig.from_name("echomimic-v1-acc")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    model = AvatarModel(cfg)
    for name, module in model.components().items():
        seeded_init_(module, COMPONENT_SEEDS[name])
    model.eval().requires_grad_(False)
    den = model.denoiser
    params = sum(p.numel() for p in model.parameters())
    s, f = args.latent, args.frames
    manifest = export_preset(cfg, model, out, latent_hw=(s, s))
    t_export = time.perf_counter() - t0
    gen = torch.Generator().manual_seed(0)
    kv = []
    for lvl, c in zip([0, 0, 1, 1, 2, 2, 3, 2, 2, 2, 1, 1, 1, 0, 0, 0],
                      [320, 320, 640, 640, 1280, 1280, 1280, 1280, 1280, 1280, 640, 640, 640, 320, 320, 320]):
        kv += [torch.randn(1, (s >> lvl) ** 2, c, generator=gen) for _ in range(2)]
    inputs = (torch.randn(1, 4, f, s, s, generator=gen), torch.tensor([999]), torch.randn(1, f, 50, 384, generator=gen),
              torch.randn(1, 320, s, s, generator=gen), *kv)
    names = ["sample", "timestep", "audio_tokens", "face_features", *KV_NAMES]
    path = out / "denoiser.onnx"
    data = path.with_name(path.name + ".data")

    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    t1 = time.perf_counter()
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    t_load = time.perf_counter() - t1
    t2 = time.perf_counter()
    got = session.run(None, {n: t.numpy() for n, t in zip(names, inputs)})[0]
    t_ort = time.perf_counter() - t2
    with torch.no_grad():
        t3 = time.perf_counter()
        expected = den(*inputs).numpy()
        t_torch = time.perf_counter() - t3
    diff = np.abs(got - expected)
    result = {
        "benchmark": "export_full_size", "preset": cfg.name, "component": "denoiser", "device": machine_info(),
        "parameters": params, "components": {k: {"bytes": v["bytes"], "external_data": v["external_data"]}
                                             for k, v in manifest["components"].items()},
        "denoiser_onnx_bytes": path.stat().st_size,
        "external_data_bytes": data.stat().st_size if data.exists() else 0,
        "check_shape": {"frames": f, "latent": s},
        "seconds": {"build_and_export_all": round(t_export, 1), "ort_load": round(t_load, 1),
                    "ort_step": round(t_ort, 2), "torch_step": round(t_torch, 2)},
        "max_abs_error": float(diff.max()), "mean_abs_error": float(diff.mean()),
        "max_abs_value": float(np.abs(expected).max()),
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2),
    }
    print(json.dumps(result, indent=1))
    save_result(args.json, result)
    return 0 if diff.max() <= 1e-3 * max(1.0, float(np.abs(expected).max())) else 1


if __name__ == "__main__":
    sys.exit(main())

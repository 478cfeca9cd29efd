"""Export every component of a preset to ONNX, check it, and write a manifest.

    livehead export --preset tiny --out exported/tiny [--weights DIR] [--opset 17] [--precision fp32|fp16]

Writes `<component>.onnx` for audio_encoder, vae_encoder, face_locator, reference, denoiser and
vae_decoder (see `export.graphs`), each checked with `onnx.checker`, plus `manifest.json`: preset,
opset, precision, and per file its sha256, size and the names, shapes (ints or dynamic-axis names)
and dtypes of its inputs and outputs. Files over 2 GB keep their weights in external data
(`<component>.onnx.data`).
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import torch

from livehead.engine.common.errors import InputError
from livehead.engine.model.avatar_model import AvatarModel, MotionModel
from livehead.engine.model.config import ModelConfig
from livehead.engine.weights.loading import with_reference_mix
from livehead.export.graphs import graph_specs

PROTOBUF_LIMIT = 2 * 1024**3 - 64 * 1024**2  # stay clear of protobuf's 2 GB message limit
PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16}
MANIFEST = "manifest.json"
EXPORT_FORMAT = 2  # bumped when the graphs' interface changes (2: the motion generator's window is dynamic)


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _value_info(values) -> list[dict]:
    import onnx

    out = []
    for v in values:
        dims = [d.dim_param if d.dim_param else d.dim_value for d in v.type.tensor_type.shape.dim]
        out.append({"name": v.name, "shape": dims,
                    "dtype": onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type).name})
    return out


def _param_bytes(module: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


def export_component(spec, path: Path, opset: int) -> None:
    """torch → ONNX for one GraphSpec; external data (`<file>.data`) when weights pass the protobuf limit."""
    import shutil
    import tempfile

    import onnx

    large = _param_bytes(spec.module) > PROTOBUF_LIMIT
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".export-") as scratch:
        target = Path(scratch) / path.name if large else path
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # tracer warnings about Python scalars are expected and harmless
            torch.onnx.export(spec.module, spec.inputs, str(target), input_names=spec.input_names,
                              output_names=spec.output_names, dynamic_axes=spec.dynamic_axes,
                              opset_version=opset, dynamo=False, do_constant_folding=True, external_data=large)
        if large:
            # the exporter writes one file per tensor: gather them into a single `<name>.onnx.data`
            model = onnx.load(str(target), load_external_data=True)
            path.with_name(path.name + ".data").unlink(missing_ok=True)
            onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                            location=path.name + ".data", size_threshold=1024)
            del model
            shutil.rmtree(scratch, ignore_errors=True)
    onnx.checker.check_model(str(path), full_check=False)


def export_preset(cfg: ModelConfig, model: AvatarModel | MotionModel, out_dir: Path, opset: int = 17,
                  precision: str = "fp32", progress: bool = True, components: list[str] | None = None,
                  latent_hw: tuple[int, int] | None = None, weights_id: str | None = None) -> dict:
    """Export (a subset of) the components; returns the manifest also written to out_dir/manifest.json.

    `weights_id` (`engine.model.weights_identity`) is recorded so that a later run can tell whether the
    files still hold the weights it asks for."""
    import onnx
    from tqdm import tqdm

    if precision not in PRECISIONS:
        raise InputError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if not 14 <= opset <= 21:
        raise InputError(f"--opset must be between 14 and 21 (scaled dot-product attention needs 14), got {opset}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dtype = PRECISIONS[precision]
    model = model.to(dtype).eval()
    specs = [s for s in graph_specs(cfg, model.float(), latent_hw=latent_hw) if not components or s.name in components]
    model.to(dtype)
    # the noise these weights sample with (`SamplerConfig.reference_mix`): runners built from the folder use it
    manifest = {"preset": cfg.name, "format": EXPORT_FORMAT, "opset": opset, "precision": precision,
                "torch": torch.__version__,
                "onnx": onnx.__version__, "weights": weights_id, "reference_mix": model.cfg.sampler.reference_mix,
                "components": {}}
    if cfg.motion is not None:  # the latent space of the motion tier: z = (motion - mean) / std
        manifest["motion_mean"] = model.generator.motion_mean.float().tolist()
        manifest["motion_std"] = model.generator.motion_std.float().tolist()
    for spec in tqdm(specs, desc="export", unit="graph", disable=not progress):
        spec.inputs = tuple(t.to(dtype) if t.is_floating_point() else t for t in spec.inputs)
        path = out_dir / f"{spec.name}.onnx"
        export_component(spec, path, opset)
        graph = onnx.load(str(path), load_external_data=False).graph
        data = path.with_name(path.name + ".data")
        manifest["components"][spec.name] = {
            "file": path.name,
            "external_data": data.name if data.exists() else None,
            "sha256": sha256_of(path),
            "bytes": path.stat().st_size + (data.stat().st_size if data.exists() else 0),
            "inputs": _value_info(graph.input),
            "outputs": _value_info(graph.output),
        }
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def read_manifest(out_dir: Path) -> dict:
    path = Path(out_dir) / MANIFEST
    if not path.is_file():
        raise InputError(f"{out_dir} holds no exported model ({MANIFEST} missing): run `livehead export` first")
    manifest = json.loads(path.read_text())
    for name, entry in manifest["components"].items():
        f = Path(out_dir) / entry["file"]
        if not f.is_file():
            raise InputError(f"exported component {name} is missing: {f}")
    return manifest


def exported_sampling(cfg: ModelConfig, manifest: dict) -> ModelConfig:
    """cfg with the reference mix the exported weights were trained for (0 for exports that record none)."""
    return with_reference_mix(cfg, manifest.get("reference_mix", 0.0))

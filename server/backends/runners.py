"""Pick a backend for the front ends: torch, onnxruntime or tensorrt, all behind `Runners`.

    runners = make_runners(cfg, "onnxruntime", weights=None, device="cpu", exported="exported/tiny")

ONNX Runtime and TensorRT run the files of `livehead export`; when the export directory has no
manifest yet, the preset is exported there first (seconds for `tiny`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from livehead.engine.common.errors import InputError
from livehead.engine.model.config import ModelConfig
from livehead.engine.runtime.runners import resolve_device, torch_runners
from livehead.engine.weights.loading import load_model, seeded_note, weights_identity, weights_label
from livehead.export.onnx_export import EXPORT_FORMAT, MANIFEST, export_preset
from livehead.export.ort_runners import OrtRunners
from livehead.export.tensorrt import TrtRunners

BACKENDS = ("torch", "onnxruntime", "tensorrt")


def live_backend(cfg: ModelConfig, backend: str, device: str = "auto") -> str:
    """The backend `livehead serve` uses for `--backend auto`: ONNX Runtime for the motion tier on a CPU when the
    `export` extra is installed (its runs release the GIL, so the model threads do not hold up the event loop's
    codecs and pacing: in the live benchmark on 2 cores a 2-frame chunk took 65 ms inside the server against
    210 ms with eager torch), else torch. Any other value is returned as it is."""
    if backend != "auto":
        return backend
    if cfg.motion is None or resolve_device(device).type != "cpu":
        return "torch"
    try:
        import onnx  # noqa: F401  (probe: the export extra)
        import onnxruntime  # noqa: F401
    except ImportError:
        return "torch"
    return "onnxruntime"


def default_export_dir(cfg: ModelConfig) -> Path:
    return Path("exported") / cfg.name


def print_seeded_note(cfg: ModelConfig, weights: str | None) -> None:
    """Tell the user on stderr when a front end runs the seed-fixed random model (`seeded_note`)."""
    note = seeded_note(cfg, weights)
    if note:
        print(note, file=sys.stderr)


def ensure_exported(cfg: ModelConfig, weights: str | None, exported: Path, progress: bool = True) -> Path:
    """Export the preset to `exported` unless it already holds an export of these weights.

    An export of other weights (say, the seeded model before trained weights shipped) is redone in the
    default folder and refused in a folder the user named, which may hold work they want to keep."""
    wanted = weights_identity(cfg, weights)
    path = exported / MANIFEST
    if path.is_file():
        try:
            manifest = json.loads(path.read_text())
            found, fmt = manifest.get("weights"), manifest.get("format")
        except (json.JSONDecodeError, AttributeError):
            found, fmt = "unreadable", None
        if found == wanted and fmt == EXPORT_FORMAT:
            return exported
        if found == wanted:  # the same weights in an older graph format: redone in place
            print(f"livehead: note: {exported} holds an older export format; exporting again", file=sys.stderr)
        elif exported != default_export_dir(cfg):
            raise InputError(f"{exported} holds an ONNX export of other weights than those asked for "
                             f"({weights_label(cfg, weights)}); re-export it with `livehead export --out {exported}"
                             f"{'' if weights is None else ' --weights ' + str(weights)}` or choose another --exported")
        else:
            print(f"livehead: note: {exported} was exported from other weights; exporting again", file=sys.stderr)
    else:
        print(f"livehead: note: exporting preset {cfg.name} to ONNX in {exported} (once)", file=sys.stderr)
    export_preset(cfg, load_model(cfg, weights), exported, progress=progress, weights_id=wanted)
    return exported


def motion_controls(args) -> dict[str, float]:
    """The motion tier's user controls from parsed arguments (`--expression`, `--head-motion`)."""
    controls = {"expression": getattr(args, "expression", 1.0), "head_motion": getattr(args, "head_motion", 1.0)}
    for name, value in controls.items():
        if not 0.0 <= value <= 3.0:
            raise InputError(f"--{name.replace('_', '-')} must be between 0 and 3, got {value}")
    return controls


def make_runners(cfg: ModelConfig, backend: str, weights: str | None = None, device: str = "auto",
                 exported: str | Path | None = None, progress: bool = True, controls: dict | None = None):
    """Runners of `cfg` on a backend. controls: the motion tier's expression / head_motion (ignored by the
    pixel presets)."""
    controls = (controls or {}) if cfg.motion is not None else {}
    if backend not in BACKENDS:
        raise InputError(f"unknown backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
    dev = resolve_device(device)
    if backend == "torch":
        return torch_runners(load_model(cfg, weights, device=dev), **controls)
    directory = Path(exported) if exported else default_export_dir(cfg)
    try:
        if backend == "onnxruntime":
            return OrtRunners.from_dir(cfg, ensure_exported(cfg, weights, directory, progress), device=str(dev),
                                       **controls)

        if dev.type != "cuda":
            raise InputError("the tensorrt backend needs a CUDA GPU (--device cuda)")
        return TrtRunners(cfg, ensure_exported(cfg, weights, directory, progress))
    except ModuleNotFoundError as err:
        raise InputError(f"backend {backend} needs {err.name}: pip install 'livehead[export]'") from err

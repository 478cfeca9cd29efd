"""What several `livehead` commands share: the model options and the bad-input exit."""

from __future__ import annotations

import argparse

from livehead.engine.common.errors import InputError

DEFAULT_PRESET = "motion"  # the embedded default of every command


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """The model, weights, runtime and crop options that `animate` and `live` share."""
    p.add_argument("--preset", default=DEFAULT_PRESET, help="motion (embedded default: moves your photo), tiny "
                   "(embedded pixel model), echomimic-v1, echomimic-v1-acc")
    p.add_argument("--weights", default=None,
                   help="weights directory (required for the echomimic presets; tiny: its shipped weights, "
                        "or 'seeded' for the seed-fixed random model)")
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: the preset's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
    p.add_argument("--backend", default="torch", help="torch, onnxruntime or tensorrt")
    p.add_argument("--exported", default=None, help="ONNX export directory for onnxruntime/tensorrt "
                   "(default: exported/PRESET, exported on first use)")
    p.add_argument("--no-crop", action="store_true", help="pixel presets: use the whole image when no face is detected")
    add_motion_controls(p)


def add_motion_controls(p: argparse.ArgumentParser) -> None:
    """The motion tier's user controls (ignored by the pixel presets)."""
    p.add_argument("--expression", type=float, default=1.0, help="motion preset: expression intensity "
                   "(0 = still face, 1 = as generated, up to 3)")
    p.add_argument("--head-motion", type=float, default=1.0, help="motion preset: idle head motion speed and size "
                   "(0 = only the nods the voice drives, up to 3)")


def raise_input(message: str):
    raise InputError(message)

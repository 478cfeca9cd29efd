"""Parity of an exported backend against torch fp32 on the same inputs.

    livehead export --preset tiny --out exported/tiny --check

Per component: max / mean absolute error of every output on the export's example inputs (and on a
second shape, to exercise the dynamic axes). For the whole pipeline: the same audio through a
streaming `Session` on both backends, decoded frames compared as PSNR (uint8, dB).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from livehead.engine.model.avatar_model import AvatarModel
from livehead.engine.runtime.runners import TorchRunners
from livehead.engine.runtime.session import Session, prepare_avatar
from livehead.export.graphs import graph_specs
from livehead.export.ort_runners import OrtRunners


@dataclass
class OutputError:
    component: str
    output: str
    max_abs: float
    mean_abs: float
    scale: float  # max |reference|, to read the error relative to the values


def component_errors(model: AvatarModel, runners: OrtRunners, shapes: list[tuple[int, int]]) -> list[OutputError]:
    """Run each exported graph and its torch module on the same inputs; one row per output and shape."""
    cfg = runners.cfg
    rows: list[OutputError] = []
    for frames, batch in shapes:
        for spec in graph_specs(cfg, model, frames=frames, batch=batch):
            with torch.no_grad():
                expected = spec.module(*spec.inputs)
            expected = expected if isinstance(expected, tuple) else (expected,)
            got = runners.run_graph(spec.name, dict(zip(spec.input_names, spec.inputs)))
            diffs = [np.abs(e.float().numpy() - g.astype(np.float32)) for e, g in zip(expected, got)]
            label = f"{spec.name} (frames={frames}, batch={batch})"
            if len(diffs) > 2:  # the 32 reference K/V outputs: one row with the worst of them
                rows.append(OutputError(label, f"{len(diffs)} outputs", max(float(d.max()) for d in diffs),
                                        float(np.mean([d.mean() for d in diffs])),
                                        max(float(e.abs().max()) for e in expected)))
                continue
            for name, e, d in zip(spec.output_names, expected, diffs):
                rows.append(OutputError(label, name, float(d.max()), float(d.mean()), float(e.abs().max())))
    return rows


def pipeline_psnr(torch_runners: TorchRunners, other, image: np.ndarray, mask: np.ndarray, pcm: np.ndarray,
                  sample_rate: int, seed: int = 0) -> tuple[float, int]:
    """Frames of the same stream on both backends → (PSNR in dB over all frames, frame count)."""
    frames = []
    for r in (torch_runners, other):
        session = Session(r, prepare_avatar(r, image, mask), seed=seed)
        session.push_audio(pcm, sample_rate)
        session.flush()
        frames.append(np.stack([f.image for f in session.frames()]).astype(np.float64))
    mse = float(((frames[0] - frames[1]) ** 2).mean())
    return (float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)), len(frames[0])


def format_errors(rows: list[OutputError]) -> str:
    width = max(len(r.component) + len(r.output) + 1 for r in rows)
    lines = [f"{'component.output':<{width}}  {'max abs':>10}  {'mean abs':>10}  {'max |ref|':>10}"]
    for r in rows:
        lines.append(f"{r.component + '.' + r.output:<{width}}  {r.max_abs:10.3e}  {r.mean_abs:10.3e}  {r.scale:10.3e}")
    return "\n".join(lines)

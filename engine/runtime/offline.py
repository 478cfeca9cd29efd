"""EchoMimic's offline window schedule: all frames denoised jointly, window by window, every step.

    windows = context_windows(n_frames, size=12, overlap=3)   # starts 0, 9, 18, ... ; last wraps
    latents = sample_offline(runners, face, kv, tokens, sampler, size=12, overlap=3, seed=420)

Per step i: every window's indices are shifted by 2·i (mod N) (hides seams), the denoiser runs on each
window's latents with that window's audio tokens (motion modules see the window's order), predictions
are summed per frame and divided by each frame's window count, then one DDIM step updates all frames.
With N ≤ size there is a single window [0..N−1], still rotated every step. The initial noise is
`randn` from a CPU generator seeded with `seed`, clamped to ±1.5. This is not causal: the live path is
`engine.session.Session`; this schedule is the reference the streaming output is measured against.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from livehead.engine.model.sampler import DDIMSampler
from livehead.engine.runtime.runners import Runners, guided_denoise

WINDOW_SHIFT_PER_STEP = 2


def context_windows(n_frames: int, size: int, overlap: int) -> list[list[int]]:
    """EchoMimic's `uniform` context schedule (step 0, stride 1, closed loop)."""
    if n_frames <= size:
        return [list(range(n_frames))]
    stride = size - overlap
    return [[(start + k) % n_frames for k in range(size)] for start in range(0, n_frames, stride)]


def shifted(windows: list[list[int]], step_index: int, n_frames: int) -> list[list[int]]:
    shift = WINDOW_SHIFT_PER_STEP * step_index
    return [[(i + shift) % n_frames for i in w] for w in windows]


@dataclass
class OfflineTrace:
    """What the sampler did, for parity checks: per denoiser call and per step."""

    call_timesteps: list[int] = field(default_factory=list)
    call_contexts: list[list[int]] = field(default_factory=list)
    call_inputs: list[torch.Tensor] = field(default_factory=list)
    call_outputs: list[torch.Tensor] = field(default_factory=list)
    step_model_output: list[torch.Tensor] = field(default_factory=list)
    step_latents_after: list[torch.Tensor] = field(default_factory=list)
    latents_init: torch.Tensor | None = None


def sample_offline(runners: Runners, face: torch.Tensor, kv: tuple[torch.Tensor, ...], tokens: torch.Tensor,
                   sampler: DDIMSampler, size: int, overlap: int, latent_hw: tuple[int, int], seed: int = 420,
                   guidance: float = 1.0, trace: OfflineTrace | None = None, progress=None,
                   ref_latents: torch.Tensor | None = None) -> torch.Tensor:
    """tokens [N, Ta, Ca] (one entry per video frame) → final latents [1, 4, N, h, w] (CPU, fp32).

    ref_latents [1, 4, h, w]: needed when the sampler anchors its noise on the reference
    (`SamplerConfig.reference_mix` > 0); `trace.latents_init` records the Gaussian draw before that."""
    n = tokens.shape[0]
    gen = torch.Generator().manual_seed(seed)
    latents = sampler.initial_noise((1, 4, n, *latent_hw), gen)
    if trace is not None:
        trace.latents_init = latents.clone()
    latents = sampler.anchor(latents, None if ref_latents is None else ref_latents.cpu().float())
    windows = context_windows(n, size, overlap)
    for i, t in enumerate(sampler.timesteps):
        acc = torch.zeros_like(latents)
        count = torch.zeros(n)
        for w in shifted(windows, i, n):
            index = torch.tensor(w)
            x = latents[:, :, index]
            v = guided_denoise(runners, x, int(t), tokens[index][None], face, kv, guidance)
            acc.index_add_(2, index, v)
            count.index_add_(0, index, torch.ones(len(w)))
            if trace is not None:
                trace.call_timesteps.append(int(t))
                trace.call_contexts.append(list(w))
                trace.call_inputs.append(x.clone())
                trace.call_outputs.append(v.clone())
            if progress is not None:
                progress.update(1)
        model_output = acc / count.view(1, 1, n, 1, 1)
        latents = sampler.step(model_output, int(t), latents)
        if trace is not None:
            trace.step_model_output.append(model_output)
            trace.step_latents_after.append(latents.clone())
    return latents


def denoiser_calls(n_frames: int, size: int, overlap: int, steps: int) -> int:
    """How many denoiser calls (per CFG branch) the offline schedule makes: for progress bars."""
    return len(context_windows(n_frames, size, overlap)) * steps

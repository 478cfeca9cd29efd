"""DDIM sampler with v-prediction, zero-terminal-SNR betas and trailing timesteps.

Reproduces diffusers' `DDIMScheduler(beta_schedule="linear", prediction_type="v_prediction",
rescale_betas_zero_snr=True, timestep_spacing="trailing", clip_sample=False, set_alpha_to_one=True)`
with eta = 0, including its step semantics: the update from t lands on ᾱ[t − T // steps] (so the
first 6-step update from 999 lands on ᾱ[833], and the last one on ᾱ[0] = 0.99915, not 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from livehead.engine.common.constants import NUM_TRAIN_TIMESTEPS
from livehead.engine.model.config import SamplerConfig


def zero_snr_alphas_cumprod(cfg: SamplerConfig) -> np.ndarray:
    """[T] float64 ᾱ table: linear betas, √ᾱ shifted so the last is 0 and rescaled to keep the first."""
    betas = np.linspace(cfg.beta_start, cfg.beta_end, cfg.num_train_timesteps, dtype=np.float64)
    # diffusers builds the betas in float32; keep that rounding so the table matches to the last digit.
    betas = betas.astype(np.float32).astype(np.float64)
    sqrt_ab = np.sqrt(np.cumprod(1.0 - betas))
    first, last = sqrt_ab[0], sqrt_ab[-1]
    sqrt_ab = (sqrt_ab - last) * first / (first - last)
    alphas = (sqrt_ab[1:] / sqrt_ab[:-1]) ** 2
    alphas = np.concatenate([sqrt_ab[:1] ** 2, alphas])
    # diffusers recomputes betas = 1 - alphas and ᾱ = cumprod(alphas) in float32.
    return np.cumprod(alphas.astype(np.float32), dtype=np.float32).astype(np.float64)


def trailing_timesteps(steps: int, train_steps: int = NUM_TRAIN_TIMESTEPS) -> np.ndarray:
    """int64 [steps], e.g. 6 → [999, 832, 666, 499, 332, 166]."""
    ts = np.round(np.arange(train_steps, 0, -train_steps / steps)).astype(np.int64) - 1
    return ts


def anchored_noise(noise: torch.Tensor, ref_latents: torch.Tensor | None, mix: float) -> torch.Tensor:
    """√mix·ref + √(1−mix)·noise: noise [B, 4, F, s, s], ref_latents [B, 4, s, s] broadcast over F.

    A diffusion whose noise is centred on the reference latent instead of 0. The one-step model at
    t = 999 (ᾱ = 0) then sees the reference's layout in its input, not only through ReferenceNet's
    attention; the update rules are unchanged (they only use x, v and ᾱ), so training, distillation,
    the session and the offline sampler all stay consistent when they draw noise through here."""
    if mix == 0.0:
        return noise
    if ref_latents is None:
        raise ValueError("reference_mix > 0 needs the reference latents")
    ref = ref_latents.to(noise.dtype).unsqueeze(2)
    return mix**0.5 * ref + (1.0 - mix) ** 0.5 * noise


@dataclass
class DDIMSampler:
    """Stateless DDIM (eta 0) for v-prediction; `step` maps (v, t, x_t) → x_prev."""

    cfg: SamplerConfig

    def __post_init__(self):
        self.alphas_cumprod = zero_snr_alphas_cumprod(self.cfg)
        self.timesteps = trailing_timesteps(self.cfg.steps, self.cfg.num_train_timesteps)
        self.stride = self.cfg.num_train_timesteps // self.cfg.steps

    def alpha_bar(self, t: int) -> float:
        """ᾱ_t, with t < 0 meaning the clean end (ᾱ = 1, diffusers' set_alpha_to_one)."""
        return float(self.alphas_cumprod[t]) if t >= 0 else 1.0

    def prev_timestep(self, t: int) -> int:
        return int(t) - self.stride

    def predict_x0(self, v: torch.Tensor, t: int, x: torch.Tensor) -> torch.Tensor:
        """x0 = √ᾱ·x − √(1−ᾱ)·v."""
        ab = self.alpha_bar(int(t))
        return ab**0.5 * x - (1.0 - ab) ** 0.5 * v

    def step(self, v: torch.Tensor, t: int, x: torch.Tensor) -> torch.Tensor:
        """One DDIM update: v, x [..] at timestep t → x at prev_t = t − T//steps. Same shape."""
        ab = self.alpha_bar(int(t))
        ab_prev = self.alpha_bar(self.prev_timestep(t))
        x0 = ab**0.5 * x - (1.0 - ab) ** 0.5 * v
        eps = ab**0.5 * v + (1.0 - ab) ** 0.5 * x
        return ab_prev**0.5 * x0 + (1.0 - ab_prev) ** 0.5 * eps

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: int) -> torch.Tensor:
        """Forward process: √ᾱ_t·x0 + √(1−ᾱ_t)·noise."""
        ab = self.alpha_bar(int(t))
        return ab**0.5 * x0 + (1.0 - ab) ** 0.5 * noise

    def anchor(self, noise: torch.Tensor, ref_latents: torch.Tensor | None) -> torch.Tensor:
        """The process's noise from a Gaussian draw: √m·ref + √(1−m)·noise with m = cfg.reference_mix.

        noise [B, 4, F, s, s], ref_latents [B, 4, s, s] (every frame gets the same reference). With m = 0
        the draw is returned as it is (and the reference may be None)."""
        return anchored_noise(noise, ref_latents, self.cfg.reference_mix)

    def initial_noise(self, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
        """randn clamped to ±init_noise_clamp (EchoMimic's start; init_noise_sigma is 1)."""
        noise = torch.randn(shape, generator=generator, dtype=torch.float32)
        clamp = self.cfg.init_noise_clamp
        return noise.clamp(-clamp, clamp)

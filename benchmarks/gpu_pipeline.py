"""GPU pipeline benchmark at full size: a diffusers baseline and livehead's paths, in one run.

    pip install diffusers        # benchmark-only dependency (the baseline); livehead itself does not need it
    python benchmarks/gpu_pipeline.py                     # echomimic-v1-acc, 512² and 256², ~7 min on an H100
    python benchmarks/gpu_pipeline.py --sizes 512 --skip-baseline --quick
    python benchmarks/gpu_pipeline.py --device cpu --preset tiny --sizes 128 --quick   # smoke test, no GPU

Random weights (the preset's modules with the engine's seeded-init scheme, drawn on the device), the
preset's shapes: 12-frame windows (3 motion + 9 new frames), 6 sampler steps, no CFG.
Measured in the same run, each figure also as a ratio to the baseline where one exists:

- baseline: diffusers `UNetMotionModel` (SD1.5 `UNet2DConditionModel` + AnimateDiff `MotionAdapter`
  shaped like EchoMimic: 21 motion modules, 8 heads, audio-width cross-attention over the per-frame
  audio tokens) eager fp16 with SDPA, 12 frames, no reference attention; diffusers `AutoencoderKL` for
  VAE decode; a 1-frame `UNet2DConditionModel` for the ReferenceNet. torch defaults (cuDNN benchmark
  off), inputs already on the GPU.
- livehead, sdpa attention: eager fp16 (torch defaults, like the baseline, plus the reference attention
  the baseline lacks: ≈ 14.7 vs 13.3 TFLOP per step); CUDA graphs (cuDNN benchmark on, from here);
  compiled (inductor) + channels-last + CUDA graphs (`engine.cuda_runners.CudaRunners`, the fast path).
  livehead timings include the host→device copy of the noisy window, as a session's steps do.
- livehead, triton attention (`engine.attention.AttentionKernels.triton()`), eager and CUDA graphs;
  recorded as unavailable when that API or Triton is missing.
- FP8 linear layers (`engine.fp8`) on the graphs path: time and relative error of the denoiser output
  against an fp32 reference (recommended only at ≤ 1 %).

Figures per latent size: denoiser step ms (B=1, reference attention on), ReferenceNet ms, VAE decode
ms/frame (9-frame batch, as a session decodes), audio encoder ms per call and per second of streamed
audio, stream fps = 9 / (6·step + decode(9) + audio) and a measured clip (the session's sampler loop
with host round trips), first-frame compute (first window's audio + 6 steps + decode; the
ReferenceNet runs once per avatar before that and is reported apart), model FLOPs utilisation
(`torch.utils.flop_counter.FlopCounterMode` on the same call, against the GPU's dense bf16 peak), peak
memory, and how many concurrent sessions hold 25 fps (batched denoise with batch = sessions, each
session's decode and audio added). GPU timing: CUDA events, warm-up first, median of repeats.
Compiles start only while the time budget (--budget-s) allows; what was skipped is said in the JSON.
"""

from __future__ import annotations

import argparse
import copy
import gc
import importlib.util
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from livehead.engine.eval.bench import cpu_name
from livehead.engine.model.attention import AttentionKernels
from livehead.engine.model.avatar_model import COMPONENT_SEEDS, AvatarModel
from livehead.engine.model.config import ModelConfig
from livehead.engine.model.init_weights import NORM_TYPES
from livehead.engine.model.sampler import DDIMSampler
from livehead.engine.runtime.cuda_runners import CudaRunners, FastOptions, GraphCache
from livehead.engine.runtime.fp8 import relative_error

ROOT = Path(__file__).resolve().parents[1]

FPS_TARGET = 25.0
FP8_MAX_ERROR = 0.01  # FP8 is recommended only when the denoiser output stays within 1 % of fp32
NOMINAL_PEAK_TFLOPS = {"H100": 790.0, "H200": 790.0}  # dense bf16, as the project quotes it (measured ≈ 790-800)
COMPILE_GUESS_S = {"denoise": 110.0, "decode": 45.0}  # first-compile estimates before one is measured
BATCHES = (1, 2, 3, 4, 6, 8, 12, 16)


# ---------------------------------------------------------------------------------------------------
# Timing and bookkeeping
# ---------------------------------------------------------------------------------------------------


class Clock:
    """Median milliseconds of repeated calls: CUDA events on a GPU, perf_counter on the CPU."""

    def __init__(self, device: torch.device, warmup: int, repeats: int):
        self.device, self.warmup, self.repeats = device, warmup, repeats

    def sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def time(self, fn, repeats: int | None = None) -> float:
        repeats = repeats or self.repeats
        for _ in range(self.warmup):
            fn()
        self.sync()
        if self.device.type != "cuda":
            times = []
            for _ in range(repeats):
                t = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t) * 1000)
            return statistics.median(times)
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(repeats)]
        for start, end in events:
            start.record()
            fn()
            end.record()
        self.sync()
        return statistics.median(s.elapsed_time(e) for s, e in events)


class Report:
    """The JSON result, saved after every part so an interrupted run keeps what it measured."""

    def __init__(self, path: Path, budget_s: float):
        self.path, self.budget_s = path, budget_s
        self.t0 = time.perf_counter()
        self.data: dict = {"benchmark": "gpu_pipeline", "figures": {}, "notes": [], "errors": [], "skipped": [],
                           "timeline_s": {}}
        self.compile_s: dict[str, list[float]] = {}

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def mark(self, part: str):
        self.data["timeline_s"][part] = round(self.elapsed(), 1)
        print(f"[{self.elapsed():6.1f} s] {part}", flush=True)
        self.save()

    def fig(self, size, *keys, value):
        node = self.data["figures"].setdefault(str(size), {})
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = value
        self.save()

    def get(self, size, *keys, default=None):
        node = self.data["figures"].get(str(size), {})
        for k in keys:
            if not isinstance(node, dict) or k not in node:
                return default
            node = node[k]
        return node

    def error(self, part: str, err: BaseException):
        msg = f"{part}: {type(err).__name__}: {str(err).splitlines()[0][:300] if str(err) else ''}"
        self.data["errors"].append(msg)
        print("  FAILED " + msg, flush=True)
        self.save()

    def can_compile(self, kind: str, what: str) -> bool:
        seen = self.compile_s.get(kind)
        guess = 1.2 * max(seen) if seen else COMPILE_GUESS_S[kind]
        if self.elapsed() + guess > self.budget_s:
            self.data["skipped"].append(
                f"{what}: compile (~{guess:.0f} s) does not fit the {self.budget_s:.0f} s budget")
            print(f"  skipped {what}: budget", flush=True)
            return False
        return True

    def fits(self, seconds: float, what: str) -> bool:
        if self.elapsed() + seconds > self.budget_s:
            self.data["skipped"].append(f"{what}: ~{seconds:.0f} s does not fit the {self.budget_s:.0f} s budget")
            print(f"  skipped {what}: budget", flush=True)
            return False
        return True

    def compiled(self, kind: str, seconds: float):
        self.compile_s.setdefault(kind, []).append(seconds)

    def save(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.data, indent=1, default=str) + "\n")


def attempt(report: Report, part: str, fn, *args, **kwargs):
    """Run one part; a failure is recorded and the benchmark goes on with the next part."""
    try:
        return fn(*args, **kwargs)
    except Exception as err:
        report.error(part, err)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return None


def peak_extra_gib(device: torch.device, fn) -> dict:
    """Run fn once: peak allocated memory during it (GiB), total and above what was allocated before."""
    if device.type != "cuda":
        fn()
        return {}
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device)
    return {"peak_gib": round(peak / 2**30, 2), "extra_gib": round((peak - before) / 2**30, 2)}


def count_flops(fn) -> float:
    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


# ---------------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------------


@torch.no_grad()
def device_seeded_init_(module: torch.nn.Module, seed: int) -> None:
    """livehead.engine.model.init_weights' scheme (matrices N(0,1)/√fan_in, norm weights 1 + 0.1·N, norm biases 0.1·N,
    other vectors 0.05·N), drawn on the module's device: seconds instead of minutes at full size."""
    norms = {f"{m}.{p}" if m else p for m, mod in module.named_modules() if isinstance(mod, NORM_TYPES)
             for p, _ in mod.named_parameters(recurse=False)}
    params = dict(module.named_parameters())
    device = next(iter(params.values())).device
    gen = torch.Generator(device=device).manual_seed(seed)
    for name in sorted(params):
        p = params[name]
        noise = torch.randn(p.shape, generator=gen, device=device, dtype=torch.float32)
        if p.dim() >= 2:
            value = noise / math.sqrt(math.prod(p.shape[1:]))
        elif name in norms:
            value = 1.0 + 0.1 * noise if name.endswith("weight") else 0.1 * noise
        else:
            value = 0.05 * noise
        p.copy_(value)


def build_livehead(cfg: ModelConfig, device: torch.device) -> AvatarModel:
    with torch.device(device):
        model = AvatarModel(cfg)
    for name, module in model.components().items():
        device_seeded_init_(module, COMPONENT_SEEDS[name])
    return model.eval().requires_grad_(False)


def build_diffusers(cfg: ModelConfig, device: torch.device, dtype: torch.dtype):
    """Same-shape diffusers models: (UNetMotionModel, 1-frame UNet2DConditionModel, AutoencoderKL)."""
    from diffusers import AutoencoderKL, MotionAdapter, UNet2DConditionModel, UNetMotionModel

    u = cfg.unet
    n = len(u.block_out_channels)
    with torch.device(device):
        unet2d = UNet2DConditionModel(
            sample_size=cfg.latent_size, in_channels=u.in_channels, out_channels=u.out_channels,
            block_out_channels=u.block_out_channels, layers_per_block=u.layers_per_block,
            down_block_types=("CrossAttnDownBlock2D",) * (n - 1) + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (n - 1),
            cross_attention_dim=u.audio_dim, attention_head_dim=u.attention_heads,
            norm_num_groups=u.norm_num_groups, norm_eps=u.norm_eps)
        adapter = MotionAdapter(
            block_out_channels=u.block_out_channels, motion_layers_per_block=u.layers_per_block,
            motion_num_attention_heads=u.motion_heads, motion_norm_num_groups=u.motion_norm_groups,
            motion_max_seq_length=u.motion_max_len, use_motion_mid_block=True)
        unet = UNetMotionModel.from_unet2d(unet2d, adapter)
        v = cfg.vae
        vae = AutoencoderKL(
            in_channels=v.in_channels, out_channels=v.in_channels, latent_channels=v.latent_channels,
            down_block_types=("DownEncoderBlock2D",) * len(v.block_out_channels),
            up_block_types=("UpDecoderBlock2D",) * len(v.block_out_channels),
            block_out_channels=v.block_out_channels, layers_per_block=v.layers_per_block,
            norm_num_groups=v.norm_num_groups, sample_size=cfg.stream.image_size)
    del adapter
    out = []
    for m in (unet, unet2d, vae):
        out.append(m.to(device=device, dtype=dtype).eval().requires_grad_(False))
    return tuple(out)


# ---------------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------------


def make_inputs(cfg: ModelConfig, size: int, device: torch.device, model: AvatarModel) -> dict:
    """Fixed random inputs of one window at image size `size` (fp32; CPU copies of what a session passes)."""
    s = size // cfg.vae.downscale
    frames = cfg.stream.window_frames
    gen = torch.Generator().manual_seed(size)
    a = cfg.audio
    mask = torch.zeros(1, 1, size, size)
    mask[..., size // 4: 3 * size // 4, size // 4: 3 * size // 4] = 1
    with torch.inference_mode():
        face = model.face_locator(mask.to(device, next(model.face_locator.parameters()).dtype)).float().cpu()
    return {
        "size": size, "latent": s, "frames": frames,
        "sample": torch.randn(1, 4, frames, s, s, generator=gen),
        "timestep": torch.tensor([499]),
        "tokens": torch.randn(1, frames, a.tokens_per_frame, a.n_state, generator=gen),
        "face": face,
        "ref_latents": torch.randn(1, 4, s, s, generator=gen),
        "mel": torch.randn(1, a.n_mels, 2 * (a.n_ctx if a.pad_to_ctx else round(a.window_seconds * 50)), generator=gen),
        "latents9": torch.randn(cfg.stream.clip_frames, 4, s, s, generator=gen),
    }


def batched(inp: dict, b: int, runner) -> tuple:
    """Denoiser arguments for b sessions (B = b) on the runner's device."""
    dev, dt = runner.device, runner.dtype
    kv = tuple(t.expand(b, *t.shape[1:]).contiguous() for t in runner_kv(runner, inp))
    return (inp["sample"].expand(b, -1, -1, -1, -1).contiguous(), inp["timestep"].expand(b).contiguous(),
            inp["tokens"].expand(b, -1, -1, -1).to(dev, dt).contiguous(),
            inp["face"].expand(b, -1, -1, -1).to(dev, dt).contiguous(), kv)


_KV_CACHE: dict = {}


def runner_kv(runner, inp) -> tuple:
    """Reference K/V of the inputs' reference latents, cached per (runner model, size)."""
    key = (id(runner.model.reference_net), id(runner.model.denoiser), inp["size"], runner.dtype)
    if key not in _KV_CACHE:
        _KV_CACHE[key] = runner.reference_kv(inp["ref_latents"])
    return _KV_CACHE[key]


# ---------------------------------------------------------------------------------------------------
# Parts
# ---------------------------------------------------------------------------------------------------


def peak_tflops(device: torch.device, report: Report) -> float | None:
    if device.type != "cuda":
        return None
    n = 8192
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    clock = Clock(device, 3, 10)
    ms = clock.time(lambda: a @ b)
    measured = 2 * n**3 / (ms / 1e3) / 1e12
    name = torch.cuda.get_device_name(device)
    nominal = next((v for k, v in NOMINAL_PEAK_TFLOPS.items() if k in name), None)
    report.data["peak"] = {"bf16_matmul_8192_measured_tflops": round(measured, 1),
                           "nominal_dense_bf16_tflops": nominal,
                           "mfu_denominator_tflops": round(nominal or measured, 1)}
    return nominal or measured


def mfu(flops: float | None, ms: float | None, peak: float | None) -> float | None:
    if not flops or not ms or not peak:
        return None
    return round(flops / (ms / 1e3) / (peak * 1e12), 4)


def run_baseline(cfg, args, device, dtype, clock, report, sizes, peak):
    unet, unet2d, vae = build_diffusers(cfg, device, dtype)
    report.mark("diffusers models built")
    u = cfg.unet
    for size in sizes:
        s = size // cfg.vae.downscale
        frames = cfg.stream.window_frames
        gen = torch.Generator().manual_seed(size)
        sample = torch.randn(1, u.in_channels, frames, s, s, generator=gen).to(device, dtype)
        t = torch.tensor([499], device=device)
        # per-frame audio tokens [F, Ta, Ca] as cross-attention context (diffusers takes [B·F, L, C])
        ehs = torch.randn(frames, cfg.audio.tokens_per_frame, u.audio_dim, generator=gen).to(device, dtype)
        with torch.inference_mode():
            def step():
                return unet(sample, t, encoder_hidden_states=ehs, return_dict=False)[0]

            mem = peak_extra_gib(device, step)
            ms = clock.time(step)
            flops = count_flops(step)
            out = step()
            report.fig(size, "denoiser_step", "diffusers_eager", value={
                "ms": round(ms, 2), "tflop": round(flops / 1e12, 2), "mfu": mfu(flops, ms, peak),
                "finite": bool(torch.isfinite(out).all()), **mem})
            ref_sample = sample[:, :, 0]

            def refnet():
                return unet2d(ref_sample, t, encoder_hidden_states=ehs[:1], return_dict=False)[0]

            ms = clock.time(refnet)
            report.fig(size, "reference_net", "diffusers_unet2d_eager", value={
                "ms": round(ms, 2), "tflop": round(count_flops(refnet) / 1e12, 3)})
            z = torch.randn(cfg.stream.clip_frames, 4, s, s, generator=gen).to(device, dtype)

            def decode():
                return vae.decode(z / cfg.vae.scaling_factor, return_dict=False)[0]

            mem = peak_extra_gib(device, decode)
            ms = clock.time(decode)
            flops = count_flops(decode)
            report.fig(size, "vae_decode", "diffusers_eager", value={
                "ms_9_frames": round(ms, 2), "ms_per_frame": round(ms / cfg.stream.clip_frames, 2),
                "tflop_per_frame": round(flops / cfg.stream.clip_frames / 1e12, 3),
                "mfu": mfu(flops, ms, peak), **mem})
        report.mark(f"baseline {size}")


def time_denoise(runner, args_b, clock) -> float:
    sample, t, tokens, face, kv = args_b
    return clock.time(lambda: runner.denoise_device(sample, t, tokens, face, kv))


def denoise_once(runner, inp, b=1):
    sample, t, tokens, face, kv = batched(inp, b, runner)
    out = runner.denoise_device(sample, t, tokens, face, kv)
    return out.float().cpu()


def measure_denoiser(name, runner, inp, clock, report, peak, refs, count=False, label=None):
    """B=1 step of one runner path: ms, peak memory, error vs fp32, FLOPs (eager paths), MFU."""
    size = inp["size"]
    args_b = batched(inp, 1, runner)
    sample, t, tokens, face, kv = args_b
    t0 = time.perf_counter()
    mem = peak_extra_gib(runner.device, lambda: runner.denoise_device(sample, t, tokens, face, kv))
    first_s = time.perf_counter() - t0
    out = runner.denoise_device(sample, t, tokens, face, kv).float().cpu()
    ms = time_denoise(runner, args_b, clock)
    flops = report.get(size, "flops", "livehead_denoiser_step")
    if count:
        with torch.inference_mode():
            flops = count_flops(lambda: runner.model.denoiser(sample.to(runner.device, runner.dtype), t, tokens, face,
                                                              *kv))
        report.fig(size, "flops", "livehead_denoiser_step", value=flops)
    entry = {"ms": round(ms, 2), "mfu": mfu(flops, ms, peak), "first_call_s": round(first_s, 1),
             "rel_error_vs_fp32": _err(out, refs.get(size)), "finite": bool(torch.isfinite(out).all()), **mem,
             "runner": runner.describe()}
    if label:
        entry["label"] = label
    report.fig(size, "denoiser_step", name, value=entry)
    return entry


def _err(out, ref):
    return None if ref is None else round(relative_error(out, ref), 5)


def measure_reference_net(model, inp, clock, report, dtype):
    """ReferenceNet (+ nothing else) on one frame: eager and as a CUDA graph (it runs once per avatar)."""
    size = inp["size"]
    dev = next(model.parameters()).device
    with torch.inference_mode():
        lat = inp["ref_latents"].to(dev, dtype)
        ms = clock.time(lambda: model.reference_net(lat))
        report.fig(size, "reference_net", "livehead_eager", value={"ms": round(ms, 2)})
        if dev.type == "cuda":
            cache = GraphCache(lambda x: model.reference_net(x), dev, [dtype], enabled=True)
            ms = clock.time(lambda: cache(lat))
            report.fig(size, "reference_net", "livehead_graphs", value={"ms": round(ms, 2)})


def measure_decode(name, runner, inp, clock, report, cfg, peak=None, count=False):
    """VAE decode of the 9 new frames of a clip in one batch, through the runner."""
    size, z = inp["size"], inp["latents9"]
    mem = peak_extra_gib(runner.device, lambda: runner.decode(z))
    ms = clock.time(lambda: runner.decode(z))
    if count:
        with torch.inference_mode():
            zz = z.to(runner.device, runner.dtype)
            report.fig(size, "flops", "livehead_vae_decode_9", value=count_flops(lambda: runner.model.vae.decode(zz)))
    flops = report.get(size, "flops", "livehead_vae_decode_9")
    report.fig(size, "vae_decode", name, value={
        "ms_9_frames": round(ms, 2), "ms_per_frame": round(ms / cfg.stream.clip_frames, 2),
        "mfu": mfu(flops, ms, peak), **mem, "runner": runner.describe()})


def measure_audio(name, runner, inp, clock, report, cfg):
    mel = inp["mel"]
    ms = clock.time(lambda: runner.audio_stack(mel))
    clip_s = cfg.stream.clip_frames / cfg.stream.fps
    window_s = mel.shape[-1] / 100
    report.data.setdefault("audio_encoder", {})[name] = {
        "ms_per_call": round(ms, 2), "window_s": window_s,
        "ms_per_streamed_audio_second": round(ms / clip_s, 2),  # one call per 9-frame clip (0.36 s)
        "ms_per_audio_second_offline": round(ms / window_s, 3)}
    report.save()
    return ms


def sweep_sessions(name, runner, inp, clock, report, cfg, decode_ms, audio_ms, max_batch):
    """Batched denoise with B = sessions; fps per session = 9 / (6·step_B + B·(decode9 + audio))."""
    size = inp["size"]
    steps = cfg.sampler.steps
    rows, best = [], 0
    for b in [b for b in BATCHES if b <= max_batch]:
        try:
            args_b = batched(inp, b, runner)
            ms = time_denoise(runner, args_b, clock)
        except torch.cuda.OutOfMemoryError:
            rows.append({"sessions": b, "error": "out of memory"})
            break
        fps = cfg.stream.clip_frames / ((steps * ms + b * (decode_ms + audio_ms)) / 1e3)
        rows.append({"sessions": b, "step_ms": round(ms, 2), "fps_per_session": round(fps, 1)})
        report.fig(size, "sessions_at_25fps", name, value={"rows": rows, "max_sessions": best})
        if fps < FPS_TARGET:
            break
        best = b
    report.fig(size, "sessions_at_25fps", name, value={"rows": rows, "max_sessions": best,
                                                       "decode_ms_9": round(decode_ms, 2),
                                                       "audio_ms": round(audio_ms, 2)})
    return best


def clip_loop(runner, inp, cfg, sampler):
    """One clip as `engine.session.denoise_jobs` + `finish_clip` run it: audio window, 6 steps with the
    sampler on the host, decode of the 9 new frames."""
    n = cfg.stream.motion_frames
    runner.audio_stack(inp["mel"])
    tokens, face, kv = inp["tokens"], inp["face"], runner_kv(runner, inp)
    motion = inp["sample"][:, :, :n]
    prefix_noise = inp["sample"][:, :, :n].flip(2)
    x = inp["sample"][:, :, n:].clamp(-1.5, 1.5)
    for t in sampler.timesteps:
        window = torch.cat([sampler.add_noise(motion, prefix_noise, cfg.stream.prefix_timestep(int(t))), x], dim=2)
        v = runner.denoise(window, torch.tensor([int(t)]), tokens, face, kv)
        x = sampler.step(v[:, :, n:], int(t), x)
    return runner.decode(x[0].permute(1, 0, 2, 3))


def overlapped_clip(runner, inp, cfg, sampler):
    """Decode of the previous clip queued on the decode stream while this clip's steps run."""
    pending = runner.decode_async(inp["latents9"])
    n = cfg.stream.motion_frames
    kv = runner_kv(runner, inp)
    x = inp["sample"]
    for t in sampler.timesteps:
        v = runner.denoise(x, torch.tensor([int(t)]), inp["tokens"], inp["face"], kv)
        x = torch.cat([x[:, :, :n], sampler.step(v[:, :, n:], int(t), x[:, :, n:])], dim=2)
    return pending.result()


# ---------------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------------


def env_info(device: torch.device) -> tuple[dict, dict]:
    dev = {"cpu": cpu_name(), "logical_cores": os.cpu_count()}
    versions = {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__}
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        dev.update({"gpu": p.name, "capability": f"{p.major}.{p.minor}", "multiprocessors": p.multi_processor_count,
                    "memory_gib": round(p.total_memory / 2**30, 1), "cuda_runtime": torch.version.cuda,
                    "cudnn": torch.backends.cudnn.version()})
        try:
            import subprocess

            dev["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                           capture_output=True, text=True, timeout=20).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            dev["driver"] = None
    for mod in ("triton", "diffusers"):
        try:
            versions[mod] = __import__(mod).__version__
        except ImportError:
            versions[mod] = None
    return dev, versions


def _without_out(argv: list[str]) -> list[str]:
    """The command line as recorded in the JSON: no --out (a machine's path)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--out":
            skip = True
        elif not a.startswith("--out="):
            out.append(a)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="echomimic-v1-acc")
    p.add_argument("--device", default="cuda")
    p.add_argument("--precision", default="fp16", choices=("fp16", "bf16"))
    p.add_argument("--sizes", type=int, nargs="+", default=[512, 256], help="image sizes (latent = size / 8)")
    p.add_argument("--skip-baseline", action="store_true", help="no diffusers baseline (then no ratios)")
    p.add_argument("--skip-compile", action="store_true", help="no torch.compile paths")
    p.add_argument("--skip-triton", action="store_true")
    p.add_argument("--skip-fp8", action="store_true")
    p.add_argument("--skip-sessions", action="store_true", help="no concurrent-session sweep")
    p.add_argument("--max-sessions", type=int, default=16)
    p.add_argument("--fp8-min-features", type=int, default=320, help="narrowest linear layer that goes FP8")
    p.add_argument("--quick", action="store_true", help="fewer repeats")
    p.add_argument("--budget-s", type=float, default=450.0,
                   help="wall-time budget: an optional part (a compile, the triton path, FP8, a sweep) starts only "
                        "if it is expected to end within this many seconds of the start")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "gpu_pipeline.json"))
    args = p.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error("no CUDA GPU visible; use --device cpu --preset tiny for a smoke run")
    cfg = ModelConfig.from_name(args.preset)
    sizes = [s for s in args.sizes if s % (cfg.vae.downscale * 8) == 0]
    if not sizes:
        p.error("sizes must be multiples of 64")
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[args.precision] if device.type == "cuda" else torch.float32
    precision = args.precision if device.type == "cuda" else "fp32"
    clock = Clock(device, 2 if args.quick else 3, 5 if args.quick else 10)
    report = Report(Path(args.out), args.budget_s)
    dev_info, versions = env_info(device)
    report.data.update({
        "preset": cfg.name, "weights": "random (engine seeded-init scheme, drawn on the device)",
        "device": dev_info, "versions": versions,
        "settings": {"sizes": sizes, "precision": precision, "window_frames": cfg.stream.window_frames,
                     "clip_frames": cfg.stream.clip_frames, "steps": cfg.sampler.steps,
                     "guidance_scale": cfg.sampler.guidance_scale, "fps_target": FPS_TARGET,
                     "warmup": clock.warmup, "repeats": clock.repeats, "budget_s": args.budget_s,
                     "command": " ".join(["python", "benchmarks/gpu_pipeline.py",
                                          *_without_out(argv or sys.argv[1:])])},
    })
    report.mark("start")
    peak = attempt(report, "peak matmul", peak_tflops, device, report)
    cuda = device.type == "cuda"

    # (a) diffusers baseline ---------------------------------------------------------------------
    if not args.skip_baseline:
        if importlib.util.find_spec("diffusers") is None:
            report.data["skipped"].append("baseline: diffusers is not installed (pip install diffusers)")
        else:
            attempt(report, "baseline", run_baseline, cfg, args, device, dtype, clock, report, sizes, peak)
            gc.collect()  # the diffusers models go with run_baseline's frame
            if cuda:
                torch.cuda.empty_cache()

    # livehead model and fp32 references (TF32 off) --------------------------------------------------
    model = build_livehead(cfg, device)
    report.mark("livehead model built")
    inputs = {size: make_inputs(cfg, size, device, model) for size in sizes}
    tf32 = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    fp32_runner = CudaRunners(model, FastOptions(precision="fp32", compile=(), cuda_graphs=False, channels_last=False,
                                                 cudnn_benchmark=False))
    refs = {size: denoise_once(fp32_runner, inputs[size]) for size in sizes}
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    del fp32_runner
    _KV_CACHE.clear()
    report.mark("fp32 references")

    # (b) livehead sdpa: eager, then CUDA graphs (contiguous weights) -------------------------------
    # eager as a diffusers user runs it: torch defaults (cuDNN benchmark off), contiguous weights
    eager = CudaRunners(model, FastOptions(precision=precision, compile=(), cuda_graphs=False, channels_last=False,
                                           cudnn_benchmark=False))
    for size in sizes:
        attempt(report, f"eager {size}", measure_denoiser, "livehead_eager", eager, inputs[size], clock, report, peak,
                refs, count=True)
        attempt(report, f"eager decode {size}", measure_decode, "livehead_eager", eager, inputs[size], clock, report,
                cfg, peak, count=True)
        attempt(report, f"reference net {size}", measure_reference_net, model, inputs[size], clock, report, eager.dtype)
    audio_eager = attempt(report, "audio eager", measure_audio, "livehead_eager", eager, inputs[sizes[0]], clock,
                          report, cfg)
    report.mark("livehead eager")
    if cuda:
        graphs = CudaRunners(model, FastOptions(precision=precision, compile=(), channels_last=False))
        for size in sizes:
            attempt(report, f"graphs {size}", measure_denoiser, "livehead_graphs", graphs, inputs[size], clock, report,
                    peak, refs)
            attempt(report, f"graphs decode {size}", measure_decode, "livehead_graphs", graphs, inputs[size], clock,
                    report, cfg, peak)
        audio_graphs = attempt(report, "audio graphs", measure_audio, "livehead_graphs", graphs, inputs[sizes[0]],
                               clock, report, cfg)
        for size in sizes:
            dec = report.get(size, "vae_decode", "livehead_graphs", "ms_9_frames")
            if not args.skip_sessions and dec is not None and audio_graphs is not None and \
                    report.fits(25.0, f"graphs sessions {size}"):
                attempt(report, f"graphs sessions {size}", sweep_sessions, "livehead_graphs", graphs, inputs[size],
                        clock, report, cfg, dec, audio_graphs, args.max_sessions)
        del graphs  # its graphs point at the contiguous weights that channels-last replaces below
        report.mark("livehead graphs")
    del eager
    gc.collect()

    def denoiser_copy():
        """A contiguous copy of the half-precision denoiser with the other components shared."""
        holder = copy.copy(model)
        holder._modules = dict(model._modules)
        holder._modules["denoiser"] = copy.deepcopy(model.denoiser).to(memory_format=torch.contiguous_format)
        return holder

    # (b') the fast path: channels-last + compile + CUDA graphs ---------------------------------------
    compile_on = cuda and not args.skip_compile
    fast = CudaRunners(model, FastOptions(precision=precision, compile=("denoise", "decode") if compile_on else ()))
    fast_name = "livehead_compiled_graphs" if compile_on else "livehead_fast_no_compile"
    sampler = DDIMSampler(cfg.sampler)
    audio_fast = attempt(report, "audio fast", measure_audio, "livehead_fast", fast, inputs[sizes[0]], clock, report,
                         cfg)
    for i, size in enumerate(sizes):
        if i == 1:
            run_triton_and_fp8(args, report, denoiser_copy, precision, inputs, sizes, clock, peak, refs)
        inp = inputs[size]
        if compile_on and not report.can_compile("denoise", f"compiled denoiser {size}"):
            continue
        e = attempt(report, f"fast denoiser {size}", measure_denoiser, fast_name, fast, inp, clock, report, peak, refs)
        if e and compile_on:
            report.compiled("denoise", e["first_call_s"])
        if compile_on and not report.can_compile("decode", f"compiled decode {size}"):
            continue
        t0 = time.perf_counter()
        attempt(report, f"fast decode {size}", measure_decode, fast_name, fast, inp, clock, report, cfg, peak)
        if compile_on:
            report.compiled("decode", time.perf_counter() - t0)
        report.mark(f"fast path {size}")
        dec = report.get(size, "vae_decode", fast_name, "ms_9_frames")
        if e is None or dec is None:
            continue
        clip_ms = attempt(report, f"clip {size}", clock.time, lambda: clip_loop(fast, inp, cfg, sampler),
                          2 if args.quick else 5)
        if clip_ms:
            report.fig(size, "stream", "measured_clip_ms_fast", value=round(clip_ms, 1))
        ov = attempt(report, f"overlap {size}", clock.time, lambda: overlapped_clip(fast, inp, cfg, sampler),
                     2 if args.quick else 5)
        if ov:
            report.fig(size, "stream", "decode_overlapped_with_steps_ms_fast", value=round(ov, 1))
            report.fig(size, "stream", "serial_steps_plus_decode_ms_fast",
                       value=round(cfg.sampler.steps * e["ms"] + dec, 1))
    if len(sizes) == 1:
        run_triton_and_fp8(args, report, denoiser_copy, precision, inputs, sizes, clock, peak, refs)
    report.mark("fast path")

    if compile_on and not args.skip_sessions:
        for size in sizes:
            attempt(report, f"compiled sessions {size}", compiled_sessions, fast, fast_name, inputs[size], clock,
                    report, cfg, audio_fast, args.max_sessions)
        report.mark("compiled sessions")

    summarise(report, cfg, sizes, audio_eager, fast_name)
    report.mark("done")
    print_table(report, sizes, fast_name)
    print(f"saved {report.path}", file=sys.stderr)
    return 0


def run_triton_and_fp8(args, report, denoiser_copy, precision, inputs, sizes, clock, peak, refs):
    """(c) triton attention kernels and the FP8 option, each on its own contiguous denoiser copy."""
    cuda = torch.device(args.device).type == "cuda"
    if not args.skip_triton and report.fits(60.0, "triton path"):
        try:
            AttentionKernels.triton()
        except Exception as err:
            report.data["triton_path"] = f"unavailable: {type(err).__name__}: {err}"
            print(f"  triton path unavailable: {err}", flush=True)
        else:
            report.data["triton_path"] = "available"
            holder = denoiser_copy()
            for name, graphs_on in (("livehead_triton_eager", False), ("livehead_triton_graphs", True)):
                if graphs_on and not cuda:
                    continue
                tr = attempt(report, name, CudaRunners, holder, FastOptions(
                    precision=precision, compile=(), cuda_graphs=graphs_on, channels_last=False, attention="triton"))
                if tr is None:
                    break
                for size in sizes:
                    attempt(report, f"{name} {size}", measure_denoiser, name, tr, inputs[size], clock, report, peak,
                            refs)
                del tr
            del holder
            _KV_CACHE.clear()
            gc.collect()
        report.mark("triton path")

    if not args.skip_fp8 and report.fits(40.0, "fp8"):
        results = {}
        for scope in ("ff", "linear"):
            holder = denoiser_copy()
            runner = attempt(report, f"fp8 {scope}", CudaRunners, holder, FastOptions(
                precision=precision, compile=(), cuda_graphs=cuda, channels_last=False, fp8=scope,
                fp8_min_features=args.fp8_min_features))
            if runner is None:
                continue
            for size in sizes:
                e = attempt(report, f"fp8 {scope} {size}", measure_denoiser, f"livehead_fp8_{scope}_graphs", runner,
                            inputs[size], clock, report, peak, refs,
                            label=f"FP8 e4m3, {'rowwise' if runner.options.fp8_rowwise else 'per-tensor'} scales, "
                                  f"{runner.fp8_layers} linear layers")
                if not e:
                    continue
                ref_graphs = report.get(size, "denoiser_step", "livehead_graphs", "ms")
                err = e["rel_error_vs_fp32"]
                results[f"{scope}_{size}"] = {
                    "layers": runner.fp8_layers, "ms": e["ms"], "rel_error_vs_fp32": err,
                    "half_precision_rel_error_vs_fp32": report.get(size, "denoiser_step", "livehead_graphs",
                                                                   "rel_error_vs_fp32"),
                    "speedup_vs_half_graphs": round(ref_graphs / e["ms"], 3) if ref_graphs else None,
                    "within_1_percent": err is not None and err <= FP8_MAX_ERROR}
            del runner, holder
            _KV_CACHE.clear()
            gc.collect()
        ok = [k for k, v in results.items() if v["within_1_percent"] and (v["speedup_vs_half_graphs"] or 0) > 1.0]
        report.data["fp8"] = {"results": results, "max_rel_error": FP8_MAX_ERROR,
                              "recommended": sorted(ok) or "none: keep FP8 off (error above 1 % or no speed-up)"}
        report.mark("fp8")


def compiled_sessions(fast, fast_name, inp, clock, report, cfg, audio_fast, max_sessions):
    """Sessions at 25 fps on the compiled path: each batch size is one more compile, so only B=1, the
    graphs path's answer and the next batch size above it are measured."""
    size = inp["size"]
    dec = report.get(size, "vae_decode", fast_name, "ms_9_frames")
    step1 = report.get(size, "denoiser_step", fast_name, "ms")
    if dec is None or audio_fast is None or step1 is None:
        return
    graphs_best = report.get(size, "sessions_at_25fps", "livehead_graphs", "max_sessions", default=0)
    above = [b for b in BATCHES if b <= max_sessions and b > max(graphs_best, 1)][:1]
    rows, best = [], 0
    for b in [1, *([graphs_best] if graphs_best > 1 else []), *above]:
        if b == 1:
            ms = step1
        else:
            if not report.can_compile("denoise", f"compiled sessions {size} B={b}"):
                break
            t0 = time.perf_counter()
            ms = time_denoise(fast, batched(inp, b, fast), clock)
            report.compiled("denoise", time.perf_counter() - t0)
        fps = cfg.stream.clip_frames / ((cfg.sampler.steps * ms + b * (dec + audio_fast)) / 1e3)
        rows.append({"sessions": b, "step_ms": round(ms, 2), "fps_per_session": round(fps, 1)})
        if fps < FPS_TARGET:
            break
        best = b
    report.fig(size, "sessions_at_25fps", fast_name, value={
        "rows": rows, "max_sessions": best, "decode_ms_9": round(dec, 2), "audio_ms": round(audio_fast, 2),
        "note": "each compiled batch size is a compile: measured at 1, at the graphs path's answer and one above"})


# ---------------------------------------------------------------------------------------------------
# Summary
# ---------------------------------------------------------------------------------------------------


def summarise(report: Report, cfg: ModelConfig, sizes, audio_eager, fast_name):
    """Stream fps, first-frame compute and ratios to the baseline for every size."""
    steps, clip = cfg.sampler.steps, cfg.stream.clip_frames
    audio = report.data.get("audio_encoder", {})
    audio_fast = audio.get("livehead_fast", audio.get("livehead_graphs", {})).get("ms_per_call")
    for size in sizes:
        den = report.get(size, "denoiser_step", default={})
        vae = report.get(size, "vae_decode", default={})
        base_step = den.get("diffusers_eager", {}).get("ms")
        for entry in den.values():
            if base_step and entry.get("ms"):
                entry["speedup_vs_baseline"] = round(base_step / entry["ms"], 2)
        base_vae = vae.get("diffusers_eager", {}).get("ms_per_frame")
        for entry in vae.values():
            if base_vae and entry.get("ms_per_frame"):
                entry["speedup_vs_baseline"] = round(base_vae / entry["ms_per_frame"], 2)
        refnet = report.get(size, "reference_net", default={})
        base_ref = refnet.get("diffusers_unet2d_eager", {}).get("ms")
        for entry in refnet.values():
            if base_ref and entry.get("ms"):
                entry["speedup_vs_baseline"] = round(base_ref / entry["ms"], 2)

        def stream(step_key, vae_key, audio_ms):
            st = den.get(step_key, {}).get("ms")
            dec = vae.get(vae_key, {}).get("ms_9_frames")
            if st is None or dec is None or audio_ms is None:
                return None
            compute = steps * st + dec + audio_ms
            return {"fps": round(clip / (compute / 1e3), 1), "first_frame_compute_ms": round(compute, 1),
                    "parts_ms": {f"denoise_{steps}_steps": round(steps * st, 1), f"decode_{clip}_frames": round(dec, 1),
                                 "audio_window": round(audio_ms, 1)}}

        out = {
            "formula": "fps = 9 / (6·step + decode(9) + audio); first-frame compute = first window's audio + "
                       "6 steps + decode(9); ReferenceNet + K/V (once per avatar) not counted",
            "baseline": stream("diffusers_eager", "diffusers_eager", audio_eager),
            "livehead_eager": stream("livehead_eager", "livehead_eager", audio_eager),
            "livehead_graphs": stream("livehead_graphs", "livehead_graphs",
                                      audio.get("livehead_graphs", {}).get("ms_per_call")),
            "livehead_fast": stream(fast_name, fast_name, audio_fast),
        }
        if out["baseline"]:
            for k in ("livehead_eager", "livehead_graphs", "livehead_fast"):
                if out[k]:
                    out[k]["fps_vs_baseline"] = round(out[k]["fps"] / out["baseline"]["fps"], 2)
                    out[k]["first_frame_compute_vs_baseline"] = round(
                        out["baseline"]["first_frame_compute_ms"] / out[k]["first_frame_compute_ms"], 2)
        measured = report.get(size, "stream", "measured_clip_ms_fast")
        if measured:
            out["livehead_fast_measured"] = {"clip_ms": measured, "fps": round(clip / (measured / 1e3), 1)}
        ov = report.get(size, "stream", "decode_overlapped_with_steps_ms_fast")
        if ov and audio_fast:
            out["livehead_fast_decode_overlapped"] = {
                "fps": round(clip / ((ov + audio_fast) / 1e3), 1),
                "note": "previous clip's decode on its own stream, during the steps"}
        report.fig(size, "stream_summary", value=out)


def _fmt(v, nd=1):
    return "-" if v is None else (f"{v:.{nd}f}" if isinstance(v, float) else str(v))


def print_table(report: Report, sizes, fast_name):
    d = report.data
    print()
    print(f"gpu_pipeline  {d['device'].get('gpu', d['device'].get('cpu'))}  torch {d['versions']['torch']}  "
          f"triton {d['versions'].get('triton')}  diffusers {d['versions'].get('diffusers')}  preset {d['preset']}")
    rows = [("path", "ms", "x base", "MFU", "err fp32", "peak GiB")]
    for size in sizes:
        rows.append((f"-- {size}x{size}: denoiser step (12 frames, B=1)", "", "", "", "", ""))
        for name, e in report.get(size, "denoiser_step", default={}).items():
            rows.append((f"  {name}", _fmt(e.get("ms"), 2), _fmt(e.get("speedup_vs_baseline"), 2),
                         _fmt(e.get("mfu"), 3), _fmt(e.get("rel_error_vs_fp32"), 5), _fmt(e.get("peak_gib"), 2)))
        rows.append((f"-- {size}: ReferenceNet (1 frame)", "", "", "", "", ""))
        for name, e in report.get(size, "reference_net", default={}).items():
            rows.append((f"  {name}", _fmt(e.get("ms"), 2), _fmt(e.get("speedup_vs_baseline"), 2), "", "", ""))
        rows.append((f"-- {size}: VAE decode, ms per frame (9-frame batch)", "", "", "", "", ""))
        for name, e in report.get(size, "vae_decode", default={}).items():
            rows.append((f"  {name}", _fmt(e.get("ms_per_frame"), 2), _fmt(e.get("speedup_vs_baseline"), 2),
                         _fmt(e.get("mfu"), 3), "", _fmt(e.get("peak_gib"), 2)))
        st = report.get(size, "stream_summary", default={})
        rows.append((f"-- {size}: stream fps | first-frame compute ms", "", "", "", "", ""))
        for name in ("baseline", "livehead_eager", "livehead_graphs", "livehead_fast", "livehead_fast_measured",
                     "livehead_fast_decode_overlapped"):
            e = st.get(name)
            if e:
                rows.append((f"  {name}", f"{_fmt(e.get('fps'))} fps", _fmt(e.get("fps_vs_baseline"), 2), "",
                             "", _fmt(e.get("first_frame_compute_ms", e.get("clip_ms")))))
        for name, e in report.get(size, "sessions_at_25fps", default={}).items():
            steps_ms = ", ".join(f"B{r['sessions']}:{r.get('step_ms')}ms/{r.get('fps_per_session')}fps"
                                 for r in e.get("rows", []))
            rows.append((f"  sessions@25fps {name}: {e.get('max_sessions')}", steps_ms, "", "", "", ""))
    for name, e in d.get("audio_encoder", {}).items():
        rows.append((f"audio encoder {name} (30 s window)", _fmt(e["ms_per_call"], 2),
                     f"{e['ms_per_streamed_audio_second']} ms/s streamed", "", "", ""))
    def plain(r):
        return not (r[0].startswith("--") or r[0].startswith("  sessions"))

    widths = [max(len(r[i]) for r in rows if plain(r)) for i in range(6)]
    for r in rows:
        if not plain(r):
            print(r[0] + ("  " + r[1] if r[1] else ""))
        else:
            print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
    fp8 = d.get("fp8")
    if fp8:
        for k, v in fp8["results"].items():
            print(f"fp8 {k}: {v['layers']} layers, {v['ms']} ms, err {v['rel_error_vs_fp32']} "
                  f"(half {v['half_precision_rel_error_vs_fp32']}), "
                  f"x{v['speedup_vs_half_graphs']} vs half-precision graphs")
        print(f"fp8 recommended: {fp8['recommended']}")
    if d.get("triton_path"):
        print(f"triton path: {d['triton_path']}")
    for line in d["skipped"] + d["errors"]:
        print(f"note: {line}")


if __name__ == "__main__":
    sys.exit(main())

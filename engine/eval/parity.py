"""Parity with EchoMimic's own code on a fixture set (tiny random models, outputs of the reference run).

    livehead parity --fixtures ../shared/reference/echomimic/fixtures [--json OUT]

A fixture set is a folder with `config.json` (every hyperparameter), the tiny models' weights in the
real key format (`*.safetensors`), `audio.wav`, the Whisper arrays, `step.npz` and `sampler.npz`. The
models are built from `config.json` alone, so other seeds, frame counts and non-square latents work
unchanged. Every stage runs livehead's own code end to end in float32 and is compared with the recorded
arrays; tolerances follow the fixture README (1e-4 on single modules and Whisper features, 1e-3 on
backbone outputs, sampler latents and video).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from livehead.engine.common.constants import NUM_TRAIN_TIMESTEPS
from livehead.engine.common.errors import InputError
from livehead.engine.media.audio_video import load_audio
from livehead.engine.model.audio_encoder import (
    encode_file_features,
    frame_audio_tokens,
    frame_token_index,
    log_mel,
    normalise_log_mel,
    offline_frame_count,
)
from livehead.engine.model.avatar_model import AvatarModel
from livehead.engine.model.config import (
    AudioConfig,
    FaceLocatorConfig,
    ModelConfig,
    SamplerConfig,
    StreamConfig,
    UNetConfig,
    VAEConfig,
)
from livehead.engine.model.sampler import DDIMSampler
from livehead.engine.runtime.offline import OfflineTrace, sample_offline
from livehead.engine.runtime.runners import TorchRunners
from livehead.engine.weights.files import check_state_dict, read_state_dict, shapes_of

MODULE_TOL = 1e-4
NETWORK_TOL = 1e-3
FILES = {
    "reference_net": ("reference_unet.safetensors", ""),
    "denoiser": ("denoising_unet.safetensors", "motion_module.safetensors"),
    "face_locator": ("face_locator.safetensors", ""),
    "audio_encoder": ("whisper_tiny.safetensors", ""),
    "vae": ("vae.safetensors", ""),
}


@dataclass
class FixtureSet:
    root: Path
    config: dict
    model_config: ModelConfig
    fps: float
    frames: int
    latent_hw: tuple[int, int]
    context_frames: int
    context_overlap: int
    seed: int


def load_fixture_config(root: Path) -> FixtureSet:
    """Read `config.json` and turn it into livehead configs (no name mapping beyond the diffusers fields)."""
    path = root / "config.json"
    if not path.is_file():
        raise InputError(f"{root} is not a fixture set: config.json is missing")
    c = json.loads(path.read_text())
    try:
        base = c["unet_base_config"]
        extra = c["denoising_unet"]["unet_additional_kwargs"]
        mm = extra["motion_module_kwargs"]
        derived = c["denoising_unet"].get("derived", {})
        unet = UNetConfig(
            in_channels=base["in_channels"], out_channels=base["out_channels"],
            block_out_channels=tuple(base["block_out_channels"]), layers_per_block=base["layers_per_block"],
            attention_heads=base["attention_head_dim"], norm_num_groups=base["norm_num_groups"],
            norm_eps=base["norm_eps"], audio_dim=extra["cross_attention_dim"],
            audio_scale=derived.get("audio_feature_ratio", 3.0), motion_heads=mm["num_attention_heads"],
            motion_norm_groups=derived.get("motion_groupnorm_groups", 32),
            motion_max_len=mm["temporal_position_encoding_max_len"],
            flip_sin_to_cos=base["flip_sin_to_cos"], freq_shift=base["freq_shift"],
        )
        w = c["whisper_dims"]
        pipe = c["pipeline"]
        audio = AudioConfig(sample_rate=pipe["audio_sample_rate"], n_mels=w["n_mels"], n_ctx=w["n_audio_ctx"],
                            n_state=w["n_audio_state"], n_head=w["n_audio_head"], n_layer=w["n_audio_layer"])
        v = c["vae_config"]
        vae = VAEConfig(in_channels=v["in_channels"], latent_channels=v["latent_channels"],
                        block_out_channels=tuple(v["block_out_channels"]), layers_per_block=v["layers_per_block"],
                        norm_num_groups=v["norm_num_groups"], scaling_factor=pipe["latent_scale"])
        fl = c["face_locator"]
        locator = FaceLocatorConfig(conditioning_channels=fl["conditioning_channels"],
                                    block_out_channels=tuple(fl["block_out_channels"]))
        sk = c["scheduler"]["kwargs"]
        sampler = SamplerConfig(num_train_timesteps=c["scheduler"].get("defaults_in_effect", {}).get(
                                    "num_train_timesteps", NUM_TRAIN_TIMESTEPS),
                                beta_start=sk["beta_start"], beta_end=sk["beta_end"], steps=pipe["steps"],
                                guidance_scale=pipe["guidance_scale"], init_noise_clamp=pipe["init_noise_clamp"])
        if fl["conditioning_embedding_channels"] != unet.block_out_channels[0]:
            raise InputError("config.json: face locator width differs from the UNet's first block width")
        down = 2 ** (len(vae.block_out_channels) - 1)
        model_config = ModelConfig(
            name=f"fixture:{root.name}", unet=unet, vae=vae, audio=audio, face_locator=locator, sampler=sampler,
            stream=StreamConfig(image_size=pipe["height"], fps=pipe["fps"], clip_frames=pipe["context_frames"]
                                - pipe["context_overlap"], motion_frames=pipe["context_overlap"]),
        )
        return FixtureSet(root=root, config=c, model_config=model_config, fps=pipe["fps"],
                          frames=pipe["video_length"], latent_hw=(pipe["height"] // down, pipe["width"] // down),
                          context_frames=pipe["context_frames"], context_overlap=pipe["context_overlap"],
                          seed=c.get("seeds", {}).get("sampler_noise", 420))
    except KeyError as err:
        raise InputError(f"{path}: missing field {err}; is this an EchoMimic fixture set?") from err


def load_fixture_model(fx: FixtureSet) -> AvatarModel:
    """Build the tiny models from config and load the fixture weights strictly (upcast to fp32)."""
    model = AvatarModel(fx.model_config)
    for component, files in FILES.items():
        module = getattr(model, component)
        state: dict[str, torch.Tensor] = {}
        for name in filter(None, files):
            path = fx.root / name
            if not path.is_file():
                raise InputError(f"fixture set {fx.root} is missing {name}")
            raw = read_state_dict(path)
            if component == "audio_encoder":
                raw = {k[len("encoder."):]: v for k, v in raw.items() if k.startswith("encoder.")}
            state.update(raw)
        check_state_dict(state, shapes_of(module), fx.root / files[0])
        module.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    return model.eval().requires_grad_(False)


@dataclass
class StageResult:
    stage: str
    max_abs: float
    mean_abs: float
    tolerance: float

    @property
    def ok(self) -> bool:
        return bool(np.isfinite(self.max_abs)) and self.max_abs <= self.tolerance


def compare(stage: str, got, expected, tolerance: float) -> StageResult:
    got = torch.as_tensor(got).detach().float().cpu().numpy()
    expected = np.asarray(expected, dtype=np.float32)
    if got.shape != expected.shape:
        return StageResult(f"{stage} (shape {list(got.shape)} vs {list(expected.shape)})", float("inf"),
                           float("inf"), tolerance)
    diff = np.abs(got - expected)
    return StageResult(stage, float(diff.max()) if diff.size else 0.0, float(diff.mean()) if diff.size else 0.0,
                       tolerance)


def bank_paths(model: AvatarModel) -> list[str]:
    """Module paths of the ReferenceNet's 16 transformer blocks, in bank order."""
    names = {id(m): n for n, m in model.reference_net.named_modules()}
    return [names[id(t)] + ".transformer_blocks.0" for t in model.reference_net.transformers()]


@torch.no_grad()
def run_parity(root: Path, progress: bool = True) -> list[StageResult]:
    """Run every stage on the fixture set at `root`; returns one result per compared tensor."""
    from tqdm import tqdm

    root = Path(root)
    if not root.is_dir():
        raise InputError(f"fixture directory {root} does not exist")
    fx = load_fixture_config(root)
    model = load_fixture_model(fx)
    runners = TorchRunners(model)
    acfg = fx.model_config.audio
    step = dict(np.load(root / "step.npz"))
    samp = dict(np.load(root / "sampler.npz"))
    results: list[StageResult] = []
    bar = tqdm(total=6, desc="parity", unit="stage", disable=not progress)

    # 1. Whisper front-end: log-mel, encoder stack, per-frame tokens (whole-file reference behaviour)
    pcm = load_audio(root / "audio.wav", sample_rate=acfg.sample_rate)
    logmel = log_mel(pcm, acfg)
    results.append(compare("whisper log-mel", normalise_log_mel(logmel, logmel.max()),
                           np.load(root / "whisper_mel.npy"), MODULE_TOL))
    stack = encode_file_features(pcm, acfg, model.audio_encoder)
    results.append(compare("whisper encoder stack", stack, np.load(root / "whisper_stack.npy"), MODULE_TOL))
    n_chunks = offline_frame_count(stack.shape[0], fx.fps)
    index = frame_token_index(n_chunks, fx.fps, stack.shape[0], acfg)
    expected_index = np.load(root / "whisper_chunk_index.npy")
    results.append(StageResult("whisper frame index", float(np.abs(index - expected_index).max())
                               if index.shape == expected_index.shape else float("inf"), 0.0, 0.0))
    tokens = frame_audio_tokens(stack, index)
    results.append(compare("whisper per-frame tokens", tokens, np.load(root / "whisper_chunks.npy"), MODULE_TOL))
    bar.update(1)

    # 2. Reference image → VAE latents, face locator, ReferenceNet bank
    ref_latents = model.vae.encode_mean(torch.from_numpy(step["ref_pixels"]))
    results.append(compare("vae encode (reference latents)", ref_latents, step["ref_latents"], MODULE_TOL))
    face = model.face_locator(torch.from_numpy(step["face_mask"])[:, :, 0])
    results.append(compare("face locator", face, step["face_locator_out"][:, :, 0], MODULE_TOL))
    bank = model.reference_net(ref_latents)
    for b, path in zip(bank, bank_paths(model)):
        results.append(compare(f"reference bank {path}", b, step[f"bank/{path}"], MODULE_TOL))
    bar.update(1)

    # 3. One denoiser step at each recorded timestep (EchoMimic rounds the bank to fp16 on update())
    kv = model.denoiser.reference_kv(*(b.half().float() for b in bank))
    video_length = min(fx.frames, n_chunks)
    audio = tokens[:video_length][None]
    for t in step["timesteps"].tolist():
        out = model.denoiser(torch.from_numpy(step["noisy_latents"]), torch.tensor(t), audio, face, *kv)
        results.append(compare(f"denoiser step t={t}", out, step[f"model_output_t{t}"], NETWORK_TOL))
    bar.update(1)

    # 4. The whole accelerated sampler with the offline window schedule
    sampler = DDIMSampler(fx.model_config.sampler)
    results.append(StageResult("sampler timesteps", float(np.abs(sampler.timesteps - samp["timesteps"]).max()),
                               0.0, 0.0))
    trace = OfflineTrace()
    latents = sample_offline(runners, face, kv, tokens[:video_length], sampler, fx.context_frames,
                             fx.context_overlap, fx.latent_hw, seed=fx.seed,
                             guidance=fx.model_config.sampler.guidance_scale, trace=trace)
    results.append(compare("initial noise (clamped)", trace.latents_init, samp["latents_init"], 0.0))
    contexts = np.array(trace.call_contexts)
    recorded = samp["unet_call_contexts"][:, 1:]  # column 0 is the step index
    same_schedule = contexts.shape == recorded.shape and np.array_equal(contexts, recorded)
    results.append(StageResult("window schedule (frame indices per call)", 0.0 if same_schedule else float("inf"),
                               0.0, 0.0))
    if len(trace.call_outputs) == len(samp["unet_call_outputs"]):
        results.append(compare("denoiser outputs per call", torch.stack(trace.call_outputs),
                               samp["unet_call_outputs"], NETWORK_TOL))
    results.append(compare("latents after each step", torch.stack(trace.step_latents_after),
                           samp["step_latents_after"], NETWORK_TOL))
    results.append(compare("final latents", latents, samp["final_latents"], NETWORK_TOL))
    bar.update(1)

    # 5. VAE decode, frame by frame
    frames = torch.stack([model.vae.decode(latents[:, :, f])[0] for f in range(latents.shape[2])])
    results.append(compare("vae decode (raw)", frames, samp["decoded_raw"], NETWORK_TOL))
    video = (frames / 2 + 0.5).clamp(0, 1).permute(1, 0, 2, 3)[None]
    results.append(compare("video [0, 1]", video, samp["video"], NETWORK_TOL))
    bar.update(2)
    bar.close()
    return results


def format_report(results: list[StageResult]) -> str:
    width = max(len(r.stage) for r in results)
    lines = [f"{'stage':<{width}}  {'max abs':>10}  {'mean abs':>10}  {'tol':>8}  ok"]
    for r in results:
        lines.append(f"{r.stage:<{width}}  {r.max_abs:10.3e}  {r.mean_abs:10.3e}  {r.tolerance:8.0e}  "
                     f"{'yes' if r.ok else 'NO'}")
    failed = [r.stage for r in results if not r.ok]
    lines.append("parity: PASS" if not failed else f"parity: FAIL ({len(failed)} stages over tolerance)")
    return "\n".join(lines)


def results_json(root: Path, results: list[StageResult]) -> dict:
    return {
        "fixtures": str(root),
        "passed": all(r.ok for r in results),
        "stages": [{"stage": r.stage, "max_abs": r.max_abs, "mean_abs": r.mean_abs, "tolerance": r.tolerance,
                    "ok": r.ok} for r in results],
        "torch": torch.__version__,
    }

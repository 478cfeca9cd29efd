"""TensorRT engines built from the exported ONNX files, cached, and a runner over them.

    livehead export --preset echomimic-v1-acc --weights DIR --out exported/acc --precision fp16 --tensorrt

NOT VERIFIED BY CI: TensorRT cannot be installed on this project's CI or GPU machines (its libraries
come from NVIDIA's own index). This module is written against the documented TensorRT >= 10 Python API
(tensor-name APIs: `set_input_shape`, `set_tensor_address`, `execute_async_v3`; no binding indices).
Everything that does not need the TensorRT runtime — optimisation profiles, cache keys, ONNX preparation
— is plain Python and unit-tested; the build and runtime tests skip when `tensorrt` is absent.

Engine cache key = sha256 of (ONNX sha256, TensorRT version, GPU compute capability, precision flags,
optimisation profiles): engines are not portable across TensorRT versions or GPU architectures.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from livehead.engine.common.errors import InputError
from livehead.engine.model.config import ModelConfig
from livehead.export.graphs import KV_NAMES, decoder_feeds
from livehead.export.onnx_export import exported_sampling, read_manifest, sha256_of

Shape = tuple[int, ...]
TRT_PRECISIONS = ("fp32", "fp16", "bf16", "fp8")


def tensorrt_available() -> bool:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False
    return True


def _require_tensorrt():
    try:
        import tensorrt as trt
    except ImportError as err:
        raise InputError("TensorRT is not installed: `pip install tensorrt` (>= 10, from NVIDIA's index) on a "
                         "machine with an NVIDIA GPU, or use --backend onnxruntime") from err
    if int(trt.__version__.split(".")[0]) < 10:
        raise InputError(f"TensorRT {trt.__version__} is too old: livehead needs >= 10 (tensor-name APIs)")
    return trt


@dataclass(frozen=True)
class Profile:
    """min / opt / max shape of every dynamic input of one engine."""

    shapes: dict[str, tuple[Shape, Shape, Shape]]

    def validate(self) -> None:
        for name, (lo, opt, hi) in self.shapes.items():
            if not (len(lo) == len(opt) == len(hi)):
                raise ValueError(f"profile for {name}: min/opt/max ranks differ")
            if any(not a <= b <= c for a, b, c in zip(lo, opt, hi)):
                raise ValueError(f"profile for {name}: need min <= opt <= max per axis, got {lo} {opt} {hi}")


def optimisation_profiles(cfg: ModelConfig, max_batch: int = 4) -> dict[str, Profile]:
    """Profiles per component for the preset's window and decode sizes and a session batch of 1..max_batch.

    The denoiser covers windows of the first clip and later clips (both `window_frames` frames) and
    batches of live sessions; the decoder covers 1..max_batch clips of `clip_frames` frames.
    """
    s, a = cfg.stream, cfg.audio
    h = w = cfg.latent_size
    c0 = cfg.unet.block_out_channels[0]
    frames = s.window_frames
    per_frame = a.tokens_per_frame

    def batched(*shape: int) -> tuple[Shape, Shape, Shape]:
        return (1, *shape), (1, *shape), (max_batch, *shape)

    # reference K/V token counts and widths per spatial transformer (bank order)
    ch = cfg.unet.block_out_channels
    levels = [0, 0, 1, 1, 2, 2, 3, 2, 2, 2, 1, 1, 1, 0, 0, 0]
    widths = [ch[0], ch[0], ch[1], ch[1], ch[2], ch[2], ch[3], ch[2], ch[2], ch[2], ch[1], ch[1], ch[1], ch[0],
              ch[0], ch[0]]
    kv = {}
    for i, (lvl, c) in enumerate(zip(levels, widths)):
        tokens = (h >> lvl) * (w >> lvl)
        for kind in ("k", "v"):
            kv[f"ref_{kind}_{i}"] = batched(tokens, c)
    denoiser = {"sample": batched(4, frames, h, w), "timestep": ((1,), (1,), (max_batch,)),
                "audio_tokens": batched(frames, per_frame, a.n_state), "face_features": batched(c0, h, w), **kv}
    n_dec = s.clip_frames
    mel = (a.n_mels, 2 * round(a.window_seconds * a.positions_per_second))
    profiles = {
        "denoiser": Profile(denoiser),
        "denoiser_uncond": Profile({k: v for k, v in denoiser.items() if k not in kv}),
        "vae_decoder": Profile({"latents": ((1, 4, h, w), (n_dec, 4, h, w), (n_dec * max_batch, 4, h, w)),
                                **({"reference": ((1, 3, s.image_size, s.image_size),) * 3}
                                   if cfg.vae.reference_decoder else {})}),
        "audio_encoder": Profile({"mel": ((1, a.n_mels, 2 * (a.tokens_before + a.tokens_after + 1)),
                                          (1, *mel), (1, a.n_mels, 2 * a.n_ctx))}),
        "reference": Profile({"ref_latents": ((1, 4, h, w),) * 3}),
        "vae_encoder": Profile({"pixels": ((1, 3, s.image_size, s.image_size),) * 3}),
        "face_locator": Profile({"mask": ((1, 1, s.image_size, s.image_size),) * 3}),
    }
    for p in profiles.values():
        p.validate()
    return profiles


def dynamic_inputs(manifest_entry: dict) -> list[str]:
    """Inputs with at least one symbolic dimension (they need a profile)."""
    return [i["name"] for i in manifest_entry["inputs"] if any(isinstance(d, str) for d in i["shape"])]


def check_profile_covers(manifest_entry: dict, profile: Profile) -> None:
    """Every dynamic input has a profile of the right rank, and static dims agree with it."""
    for spec in manifest_entry["inputs"]:
        name = spec["name"]
        if name not in profile.shapes:
            if any(isinstance(d, str) for d in spec["shape"]):
                raise InputError(f"optimisation profile has no shapes for dynamic input {name!r}")
            continue
        for shape in profile.shapes[name]:
            if len(shape) != len(spec["shape"]):
                raise InputError(f"profile shape {shape} for {name!r} has the wrong rank ({spec['shape']})")
            for dim, fixed in zip(shape, spec["shape"]):
                if isinstance(fixed, int) and fixed > 0 and dim != fixed:
                    raise InputError(f"profile shape {shape} for {name!r} contradicts the static dims {spec['shape']}")


@dataclass(frozen=True)
class EngineKey:
    onnx_sha256: str
    tensorrt_version: str
    compute_capability: str
    precision: str
    profile: str  # canonical JSON of the profile

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:24]


def engine_key(onnx_path: Path, tensorrt_version: str, compute_capability: str, precision: str,
               profile: Profile) -> EngineKey:
    if precision not in TRT_PRECISIONS:
        raise InputError(f"TensorRT precision must be one of {', '.join(TRT_PRECISIONS)}, got {precision!r}")
    return EngineKey(sha256_of(onnx_path), tensorrt_version, compute_capability, precision,
                     json.dumps({k: list(map(list, v)) for k, v in sorted(profile.shapes.items())}))


def prepare_onnx(onnx_path: Path) -> Path:
    """ONNX preparation for the parser: shape inference written next to the file (`.prepared.onnx`).

    TensorRT handles int64 inputs by casting to int32; the timestep values (< 1000) are exact either way.
    """
    import onnx

    out = onnx_path.with_suffix(".prepared.onnx")
    if not out.exists() or out.stat().st_mtime < onnx_path.stat().st_mtime:
        onnx.shape_inference.infer_shapes_path(str(onnx_path), str(out))
    return out


def build_engine(onnx_path: Path, profile: Profile, precision: str, cache_dir: Path,
                 timing_cache: Path | None = None) -> Path:
    """Build (or reuse from the cache) a serialized engine for one ONNX file; returns its path."""
    trt = _require_tensorrt()
    major, minor = torch.cuda.get_device_capability()
    key = engine_key(onnx_path, trt.__version__, f"{major}.{minor}", precision, profile)
    cache_dir.mkdir(parents=True, exist_ok=True)
    engine_path = cache_dir / f"{onnx_path.stem}-{key.digest()}.engine"
    if engine_path.exists():
        return engine_path
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(prepare_onnx(onnx_path))):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise InputError(f"TensorRT could not parse {onnx_path.name}: {errors}")
    config = builder.create_builder_config()
    flags = {"fp16": [trt.BuilderFlag.FP16], "bf16": [trt.BuilderFlag.BF16],
             "fp8": [trt.BuilderFlag.FP8, trt.BuilderFlag.FP16], "fp32": []}[precision]
    for flag in flags:
        config.set_flag(flag)
    opt = builder.create_optimization_profile()
    for name, (lo, mid, hi) in profile.shapes.items():
        opt.set_shape(name, lo, mid, hi)
    config.add_optimization_profile(opt)
    cache = None
    if timing_cache is not None:
        blob = timing_cache.read_bytes() if timing_cache.exists() else b""
        cache = config.create_timing_cache(blob)
        config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise InputError(f"TensorRT failed to build an engine for {onnx_path.name} ({precision})")
    engine_path.write_bytes(bytes(serialized))
    if cache is not None:
        timing_cache.write_bytes(bytes(cache.serialize()))
    return engine_path


class TrtEngine:
    """One deserialized engine with its execution context; torch CUDA tensors in and out."""

    def __init__(self, path: Path):
        trt = _require_tensorrt()
        self.runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = self.runtime.deserialize_cuda_engine(path.read_bytes())
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self.dtypes = {n: _torch_dtype(trt, self.engine.get_tensor_dtype(n)) for n in names}

    def __call__(self, feeds: dict[str, torch.Tensor], stream: torch.cuda.Stream) -> list[torch.Tensor]:
        for name in self.inputs:
            t = feeds[name].to("cuda", self.dtypes[name]).contiguous()
            feeds[name] = t  # keep alive until the launch completes
            self.context.set_input_shape(name, tuple(t.shape))
            self.context.set_tensor_address(name, t.data_ptr())
        outs = []
        for name in self.outputs:
            out = torch.empty(tuple(self.context.get_tensor_shape(name)), dtype=self.dtypes[name], device="cuda")
            self.context.set_tensor_address(name, out.data_ptr())
            outs.append(out)
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT execution failed")
        stream.synchronize()
        return outs


def _torch_dtype(trt, dtype) -> torch.dtype:
    table = {trt.float32: torch.float32, trt.float16: torch.float16, trt.int32: torch.int32,
             trt.int64: torch.int64, trt.bool: torch.bool}
    if hasattr(trt, "bfloat16"):
        table[trt.bfloat16] = torch.bfloat16
    return table[dtype]


class TrtRunners:
    """`engine.model.Runners` over TensorRT engines built from an export directory."""

    def __init__(self, cfg: ModelConfig, directory: Path, precision: str = "fp16", max_batch: int = 4,
                 cache_dir: Path | None = None):
        manifest = read_manifest(directory)
        profiles = optimisation_profiles(cfg, max_batch)
        cache_dir = cache_dir or directory / "tensorrt"
        self.cfg = exported_sampling(cfg, manifest)
        self.device = torch.device("cuda")
        self.dtype = torch.float32
        self.stream = torch.cuda.Stream()
        self.engines = {}
        for name, entry in manifest["components"].items():
            check_profile_covers(entry, profiles[name])
            path = build_engine(directory / entry["file"], profiles[name], precision, cache_dir,
                                timing_cache=cache_dir / "timing.cache")
            self.engines[name] = TrtEngine(path)

    def _run(self, name: str, feeds: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        return [o.float() for o in self.engines[name](dict(feeds), self.stream)]

    def audio_stack(self, mel):
        return self._run("audio_encoder", {"mel": mel})[0]

    def encode_image(self, pixels):
        return self._run("vae_encoder", {"pixels": pixels})[0]

    def face_features(self, mask):
        return self._run("face_locator", {"mask": mask})[0]

    def reference_kv(self, ref_latents):
        return tuple(self._run("reference", {"ref_latents": ref_latents}))

    def denoise(self, sample, timestep, audio, face, kv):
        feeds = {"sample": sample, "timestep": timestep.long().reshape(-1).expand(sample.shape[0]),
                 "audio_tokens": audio, "face_features": face}
        if not kv:
            return self._run("denoiser_uncond", feeds)[0]
        return self._run("denoiser", {**feeds, **dict(zip(KV_NAMES, kv))})[0]

    def decode(self, latents, reference=None):
        return self._run("vae_decoder", decoder_feeds(self.cfg, latents, reference))[0]

"""Fast CUDA backend: half precision, channels-last, `torch.compile` and one CUDA graph per shape.

    model = load_model(cfg, weights_dir, device="cuda", dtype=torch.float16)
    runners = CudaRunners(model)                                    # fp16, compiled, CUDA graphs
    runners = CudaRunners(model, FastOptions(precision="bf16", fp8="ff", attention="triton"))

It implements the same `Runners` interface as `TorchRunners`, so the session, batching across
sessions (`denoise_jobs`) and the server use it unchanged. On top of the eager backend:

- The denoiser step, the VAE decode and the audio encoder each run as a captured CUDA graph, one per
  input-shape key (batch, frames, latent size, token shapes, with or without reference K/V), with
  static input and output buffers. Inputs are copied into the static buffers (the reference K/V and
  face features only when the caller passes other tensors than last time: they are per avatar).
- `torch.compile` (inductor, static shapes) of those three functions before capture; the graph then
  replays the fused kernels with no launch overhead.
- Channels-last convolution weights (cuDNN's native layout for tensor cores); then the transformer's
  `[N, C, H, W] → [N, H·W, C]` token views cost no copy.
- Each component has its own CUDA stream and lock: a worker that decodes clip k in one thread while
  another thread denoises clip k+1 (or encodes audio) overlaps them on the GPU. `decode_async` gives
  the same overlap to a single thread.
- Denoiser outputs come back to the host through pinned (page-locked) buffers.
- Optional FP8 linear layers (`engine.fp8`) for the token-stream projections; `fp8_error` measures
  what they cost in accuracy, and the benchmark only recommends them under 1 % relative error.

On a CPU model every fast path falls back: no graphs, no pinned memory, no FP8 matrix units (FP8 is
then emulated), compile only if asked with a CPU-capable backend. The runner takes ownership of
`model`: it casts it to the chosen precision and changes its weights' memory format in place.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from livehead.engine.common.errors import InputError
from livehead.engine.model.attention import AttentionKernels, use_attention_kernels
from livehead.engine.model.avatar_model import AvatarModel
from livehead.engine.runtime.fp8 import FP8_SCOPES, convert_linears_to_fp8, fp8_supported, probe_scaled_mm

PRECISIONS = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
ATTENTIONS = ("sdpa", "triton")
COMPONENTS = ("denoise", "decode", "audio")
GRAPH_WARMUP_CALLS = 2  # eager (or compiled) calls on a side stream before capture: compile, cuDNN plans
DYNAMO_RECOMPILE_LIMIT = 64  # one static compile per graph key (batch sizes × latent sizes × kv or not)


@dataclass(frozen=True)
class FastOptions:
    """Switches of the fast backend; each can be turned off to measure what it brings."""

    precision: str = "fp16"  # fp16 | bf16 | fp32
    compile: tuple[str, ...] = ("denoise", "decode")  # components to torch.compile (subset of COMPONENTS)
    compile_mode: str | None = None  # torch.compile mode; None: default ("max-autotune-no-cudagraphs": slow to build)
    compile_backend: str = "inductor"  # "eager" / "aot_eager" only trace (tests, CPU)
    cuda_graphs: bool = True
    channels_last: bool = True
    fp8: str | None = None  # None | "ff" | "linear": FP8 linear layers in the denoiser (see engine.fp8)
    fp8_rowwise: bool = True  # per-row (token / output channel) scales; False: one scale per tensor
    fp8_min_features: int = 320  # only linear layers at least this wide on both sides go FP8
    attention: str = "sdpa"  # sdpa | triton (needs engine.attention.AttentionKernels)
    cudnn_benchmark: bool = True  # let cuDNN time its convolution algorithms per shape (a global torch switch)

    def validate(self) -> None:
        if self.precision not in PRECISIONS:
            raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        unknown = set(self.compile) - set(COMPONENTS)
        if unknown:
            raise InputError(f"compile takes components from {', '.join(COMPONENTS)}, got {sorted(unknown)}")
        if self.fp8 is not None and self.fp8 not in FP8_SCOPES:
            raise InputError(f"fp8 must be None or one of {', '.join(FP8_SCOPES)}, got {self.fp8!r}")
        if self.attention not in ATTENTIONS:
            raise InputError(f"attention must be one of {', '.join(ATTENTIONS)}, got {self.attention!r}")
        if self.fp8 is not None and self.attention != "sdpa":
            raise InputError("fp8 linear layers are not combined with the triton attention kernels yet "
                             "(the audio kernel reads to_out's half-precision weight); use attention='sdpa'")


def parse_precision(name: str) -> torch.dtype:
    """"fp16" / "bf16" / "fp32" → torch dtype, with an error naming the choices."""
    if name not in PRECISIONS:
        raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got {name!r}")
    return PRECISIONS[name]


def shape_key(tensors: Sequence[torch.Tensor], dtypes: Sequence[torch.dtype | None]) -> tuple:
    """Graph-cache key of one call: every input's shape and the dtype its static buffer holds."""
    return tuple((tuple(t.shape), dt or t.dtype) for t, dt in zip(tensors, dtypes))


def use_attention(module: torch.nn.Module, name: str) -> None:
    """Route the spatial attention of `module` through the named kernels ("sdpa" or "triton")."""
    kernels = AttentionKernels.triton() if name == "triton" else AttentionKernels.sdpa()
    use_attention_kernels(module, kernels)


@dataclass
class _Graph:
    graph: torch.cuda.CUDAGraph
    inputs: list[torch.Tensor]
    output: torch.Tensor
    sources: list[tuple[torch.Tensor, int | None] | None] = field(default_factory=list)  # see source_token


class GraphCache:
    """Run `fn(*inputs)` through one captured CUDA graph per input-shape key.

    `dtypes[i]` is the dtype input i is converted to (None: keep its dtype); inputs may live on any
    device. With `enabled=False` (CPU, or graphs off) it converts the inputs and calls `fn` directly.
    The returned tensor is the graph's static output: valid until the next call with the same key.
    `reuse[i]`: input i is copied only when the caller passes another tensor (or modified it) since
    the last call with this key (reference K/V and face features are per avatar).
    """

    def __init__(self, fn: Callable[..., torch.Tensor], device: torch.device, dtypes: Sequence[torch.dtype | None],
                 enabled: bool, pool=None, reuse: Sequence[bool] | None = None):
        self.fn, self.device, self.dtypes = fn, device, list(dtypes)
        self.enabled = enabled and device.type == "cuda"
        self.pool = pool
        self.reuse = list(reuse) if reuse is not None else [False] * len(self.dtypes)
        self.graphs: dict[tuple, _Graph] = {}

    def _dtypes_for(self, n: int) -> list[torch.dtype | None]:
        # variadic tail (the reference K/V) takes the last dtype / reuse flag
        return [self.dtypes[min(i, len(self.dtypes) - 1)] for i in range(n)]

    def _reuse_for(self, n: int) -> list[bool]:
        return [self.reuse[min(i, len(self.reuse) - 1)] for i in range(n)]

    def key(self, inputs: Sequence[torch.Tensor]) -> tuple:
        return shape_key(inputs, self._dtypes_for(len(inputs)))

    def _convert(self, inputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        return [t.to(self.device, dt) if dt is not None else t.to(self.device)
                for t, dt in zip(inputs, self._dtypes_for(len(inputs)))]

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return self.fn(*self._convert(inputs))
        key = self.key(inputs)
        entry = self.graphs.get(key)
        if entry is None:
            entry = self.graphs[key] = self._capture(inputs)
        reuse = self._reuse_for(len(inputs))
        for i, (dst, src) in enumerate(zip(entry.inputs, inputs)):
            if reuse[i] and self.unchanged(entry.sources[i], src):
                continue
            dst.copy_(src, non_blocking=True)
            entry.sources[i] = self.source_token(src) if reuse[i] else None
        entry.graph.replay()
        return entry.output

    @staticmethod
    def source_token(t: torch.Tensor) -> tuple[torch.Tensor, int | None]:
        """What a static input remembers of its last source: the tensor itself (kept alive, so its
        identity cannot be reused) and its version counter. Inference tensors (made under
        `torch.inference_mode`, like every runner output) have no version counter: for them the
        identity alone counts, so per-avatar tensors must not be edited in place."""
        return t, (None if t.is_inference() else t._version)

    @staticmethod
    def unchanged(last: tuple[torch.Tensor, int | None] | None, src: torch.Tensor) -> bool:
        """True when `src` is the tensor copied last time and was not modified since."""
        return last is not None and last[0] is src and last[1] == GraphCache.source_token(src)[1]

    def _capture(self, inputs: Sequence[torch.Tensor]) -> _Graph:
        static = [torch.empty(t.shape, dtype=dt or t.dtype, device=self.device)
                  for t, dt in zip(inputs, self._dtypes_for(len(inputs)))]
        for dst, src in zip(static, inputs):
            dst.copy_(src)
        graph, output = self._record(static)
        return _Graph(graph=graph, inputs=static, output=output, sources=[None] * len(static))

    def _record(self, static: list[torch.Tensor]):
        """Warm up on a side stream (compiles, cuDNN plans), then capture fn(*static): (graph, output)."""
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(GRAPH_WARMUP_CALLS):
                self.fn(*static)
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            output = self.fn(*static)
        return graph, output


class PendingOutput:
    """A device result being computed on a component stream; `result()` orders the caller after it."""

    def __init__(self, tensor: torch.Tensor, event: torch.cuda.Event | None):
        self.tensor, self.event = tensor, event

    def ready(self) -> bool:
        return self.event is None or self.event.query()

    def result(self) -> torch.Tensor:
        if self.event is not None:
            stream = torch.cuda.current_stream(self.tensor.device)
            stream.wait_event(self.event)
            self.tensor.record_stream(stream)  # the allocator keeps it until the caller's work is done
            self.event = None
        return self.tensor


class CudaRunners:
    """Fast `Runners` over an `AvatarModel`; see the module docstring. Thread-safe per component."""

    def __init__(self, model: AvatarModel, options: FastOptions | None = None):
        self.options = opts = options or FastOptions()
        opts.validate()
        self.model = model
        self.cfg = model.cfg
        self.device = next(model.parameters()).device
        self.cuda = self.device.type == "cuda"
        self.dtype = PRECISIONS[opts.precision]
        if not self.cuda and self.dtype == torch.float16:
            self.dtype = torch.float32  # CPU kernels for fp16 convolutions are slow or missing
        model.to(dtype=self.dtype).eval().requires_grad_(False)
        if opts.channels_last:
            for name in ("denoiser", "reference_net", "vae", "face_locator"):
                getattr(model, name).to(memory_format=torch.channels_last)
        if opts.attention != "sdpa":
            use_attention(model.denoiser, opts.attention)
        self.fp8_layers = 0
        if opts.fp8 is not None:
            self.fp8_layers = self._convert_fp8(opts.fp8, opts.fp8_rowwise, opts.fp8_min_features)
        if self.cuda:
            if opts.cudnn_benchmark:
                torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick the fastest convolutions
            if opts.compile:
                _raise_recompile_limit()
        self.graphs_enabled = self.cuda and opts.cuda_graphs
        self.compiled = tuple(opts.compile) if (self.cuda or opts.compile_backend != "inductor") else ()
        # One memory pool per component: graphs of one component replay one at a time (same stream,
        # same lock) and may share memory; graphs of different components may run concurrently.
        def pool():
            return torch.cuda.graph_pool_handle() if self.graphs_enabled else None

        d, f = self.dtype, None
        self._caches = {
            # sample, timestep, audio tokens, face features, *reference K/V
            "denoise": GraphCache(self._maybe_compile("denoise", self._denoise_impl), self.device,
                                  [d, f, d, d, d], self.graphs_enabled, pool(),
                                  reuse=[False, False, False, True, True]),
            # latents[, the avatar's decoder reference]
            "decode": GraphCache(self._maybe_compile("decode", self._decode_impl), self.device, [d, d],
                                 self.graphs_enabled, pool(), reuse=[False, True]),
            "audio": GraphCache(self._maybe_compile("audio", self._audio_impl), self.device, [d],
                                self.graphs_enabled, pool()),
        }
        self._locks = {name: threading.Lock() for name in COMPONENTS}
        self._streams = {name: torch.cuda.Stream(self.device) for name in COMPONENTS} if self.cuda else {}

    # ---- setup helpers ---------------------------------------------------------------------
    def _convert_fp8(self, scope: str, rowwise: bool, min_features: int) -> int:
        emulate = not fp8_supported(self.device)
        mm_dtype = None
        if not emulate and not probe_scaled_mm(self.device, self.dtype, rowwise):
            if probe_scaled_mm(self.device, torch.bfloat16, rowwise):
                mm_dtype = torch.bfloat16  # this torch only gives bf16 out for these scales: multiply, then cast
            else:
                emulate = True
        return convert_linears_to_fp8(self.model.denoiser, scope=scope, rowwise=rowwise, emulate=emulate,
                                      mm_dtype=mm_dtype, min_features=min_features)

    def _maybe_compile(self, name: str, fn: Callable) -> Callable:
        if name not in self.compiled:
            return fn
        return torch.compile(fn, dynamic=False, mode=self.options.compile_mode, backend=self.options.compile_backend)

    # ---- traced functions (fixed shapes; no host synchronisation inside) ------------------------
    def _denoise_impl(self, sample, timestep, audio, face, *kv):
        return self.model.denoiser(sample, timestep, audio, face, *kv).float()

    def _decode_impl(self, latents, *reference):
        ref = reference[0] if reference else None
        if self.options.channels_last:
            latents = latents.contiguous(memory_format=torch.channels_last)
            ref = None if ref is None else ref.contiguous(memory_format=torch.channels_last)
        return self.model.vae.decode_to_unit(latents, ref).float()

    def _audio_impl(self, mel):
        return self.model.audio_encoder(mel).float()

    # ---- running on a component stream --------------------------------------------------------
    def _launch(self, name: str, *inputs: torch.Tensor) -> tuple[torch.Tensor, torch.cuda.Event | None]:
        """Run component `name` on its stream; returns (static or fresh output, event marking its end)."""
        cache = self._caches[name]
        if not self.cuda:
            return cache(*inputs), None
        caller = torch.cuda.current_stream(self.device)
        stream = self._streams[name]
        stream.wait_stream(caller)  # inputs made on the caller's stream; earlier readers of the static outputs
        with torch.cuda.stream(stream):
            out = cache(*inputs)
            event = torch.cuda.Event()
            event.record(stream)
        return out, event

    def _device_result(self, name: str, *inputs: torch.Tensor) -> PendingOutput:
        """A private copy of the component's output on the device (the static buffer is reused)."""
        with self._locks[name]:
            out, event = self._launch(name, *inputs)
            if event is None:
                return PendingOutput(out, None)
            with torch.cuda.stream(self._streams[name]):
                out = out.clone()
                event = torch.cuda.Event()
                event.record(self._streams[name])
            return PendingOutput(out, event)

    # ---- Runners interface ---------------------------------------------------------------------
    @torch.inference_mode()
    def audio_stack(self, mel: torch.Tensor) -> torch.Tensor:
        """mel [1, n_mels, T] → [1, T/2, n_layer+1, n_state] fp32 on the device."""
        return self._device_result("audio", mel).result()

    @torch.inference_mode()
    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        x = pixels.to(self.device, self.dtype)
        if self.options.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.model.vae.encode_mean(x).float().contiguous()

    @torch.inference_mode()
    def face_features(self, mask: torch.Tensor) -> torch.Tensor:
        return self.model.face_locator(mask.to(self.device, self.dtype)).contiguous()

    @torch.inference_mode()
    def reference_kv(self, ref_latents: torch.Tensor) -> tuple[torch.Tensor, ...]:
        bank = self.model.reference_net(ref_latents.to(self.device, self.dtype))
        return tuple(t.contiguous() for t in self.model.denoiser.reference_kv(*bank))

    @torch.inference_mode()
    def denoise(self, sample, timestep, audio, face, kv) -> torch.Tensor:
        """One denoiser pass; returns v [B, 4, F, s, s] fp32 on the host (pinned memory on CUDA)."""
        if not self.cuda:
            return self._caches["denoise"](sample, timestep.reshape(-1), audio, face, *kv)
        with self._locks["denoise"]:
            out, event = self._launch("denoise", sample, timestep.reshape(-1), audio, face, *kv)
            host = torch.empty(out.shape, dtype=out.dtype, pin_memory=True)
            with torch.cuda.stream(self._streams["denoise"]):
                host.copy_(out, non_blocking=True)
                event = torch.cuda.Event()
                event.record(self._streams["denoise"])
        event.synchronize()
        return host

    @torch.inference_mode()
    def denoise_device(self, sample, timestep, audio, face, kv) -> torch.Tensor:
        """`denoise` with the output left on the device: the graph's static buffer on CUDA (valid until
        the next call with the same shapes), for GPU-side samplers and benchmarks. Caller's stream order."""
        with self._locks["denoise"]:
            out, event = self._launch("denoise", sample, timestep.reshape(-1), audio, face, *kv)
            if event is not None:
                torch.cuda.current_stream(self.device).wait_event(event)
            return out

    @torch.inference_mode()
    def decode(self, latents: torch.Tensor, reference: torch.Tensor | None = None) -> torch.Tensor:
        """latents [N, 4, s, s] (+ the avatar's decoder reference [1, 3, S, S]) → frames [N, 3, S, S] in
        [0, 1], fp32 on the device (caller's stream order)."""
        return self.decode_async(latents, reference).result()

    @torch.inference_mode()
    def decode_async(self, latents: torch.Tensor, reference: torch.Tensor | None = None) -> PendingOutput:
        """Queue a decode on the decode stream and return at once; `.result()` gives the frames.

        Work queued meanwhile on other components (the next clip's denoiser steps) overlaps with it."""
        return self._device_result("decode", latents, *(() if reference is None else (reference,)))

    # ---- introspection ---------------------------------------------------------------------------
    def graph_keys(self, name: str) -> list[tuple]:
        """Shape keys of the CUDA graphs captured so far for one component."""
        return list(self._caches[name].graphs)

    def describe(self) -> dict:
        """What is on, for logs and benchmark reports."""
        return {"device": str(self.device), "precision": str(self.dtype).replace("torch.", ""),
                "cuda_graphs": self.graphs_enabled, "compiled": list(self.compiled),
                "compile_mode": self.options.compile_mode or "default", "channels_last": self.options.channels_last,
                "attention": self.options.attention, "fp8": self.options.fp8, "fp8_layers": self.fp8_layers}


def _raise_recompile_limit() -> None:
    """Each graph key compiles once with static shapes; the default dynamo limit (8) is too low for
    several batch sizes × latent sizes and would silently fall back to eager."""
    import torch._dynamo as dynamo

    for attr in ("recompile_limit", "cache_size_limit"):
        if hasattr(dynamo.config, attr):
            setattr(dynamo.config, attr, max(getattr(dynamo.config, attr), DYNAMO_RECOMPILE_LIMIT))
    if hasattr(dynamo.config, "accumulated_cache_size_limit"):
        dynamo.config.accumulated_cache_size_limit = max(dynamo.config.accumulated_cache_size_limit,
                                                         4 * DYNAMO_RECOMPILE_LIMIT)

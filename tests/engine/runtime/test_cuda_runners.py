"""The fast CUDA backend (`engine.cuda_runners`) and the FP8 helpers (`engine.fp8`).

On CPU: option checks, the fallback to eager (same results as `TorchRunners`), the CUDA-graph cache
keying, FP8 quantisation math with the emulated matmul. With `-m gpu` on a CUDA machine: CUDA graphs
and compiled graphs against eager at the tiny preset, static-buffer reuse, async decode, real FP8.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from livehead.engine.common.errors import InputError
from livehead.engine.model.attention import MotionModule, SpatialTransformerBlock
from livehead.engine.model.config import ModelConfig
from livehead.engine.runtime.cuda_runners import CudaRunners, FastOptions, GraphCache, parse_precision, shape_key
from livehead.engine.runtime.fp8 import (
    FP8_MAX,
    Fp8Linear,
    convert_linears_to_fp8,
    dequantize_fp8,
    fp8_candidates,
    fp8_supported,
    probe_scaled_mm,
    quantize_fp8,
    relative_error,
)
from livehead.engine.runtime.runners import TorchRunners
from livehead.engine.runtime.session import Session, prepare_avatar
from livehead.engine.weights.loading import load_model

TINY = ModelConfig.from_name("tiny").with_steps(1)
E4M3_HALF_ULP = 2.0**-4  # relative rounding bound of e4m3 (3 mantissa bits) for normal values
E4M3_SUBNORMAL_STEP = 2.0**-9  # spacing of e4m3 subnormals, in units of the scale


def window_inputs(cfg: ModelConfig, batch: int = 1, seed: int = 0):
    """Random denoiser inputs of one window: sample, timestep, audio tokens, face features (CPU fp32)."""
    g = torch.Generator().manual_seed(seed)
    s, f = cfg.latent_size, cfg.stream.window_frames
    return (torch.randn(batch, 4, f, s, s, generator=g), torch.full((batch,), 499),
            torch.randn(batch, f, cfg.audio.tokens_per_frame, cfg.audio.n_state, generator=g),
            torch.randn(batch, cfg.unet.block_out_channels[0], s, s, generator=g))


# ---- options ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("opts", [
    FastOptions(precision="fp64"),
    FastOptions(compile=("denoise", "vae")),
    FastOptions(fp8="all"),
    FastOptions(attention="flash"),
    FastOptions(fp8="ff", attention="triton"),
])
def test_bad_options_raise_input_error(opts):
    with pytest.raises(InputError):
        opts.validate()


def test_parse_precision():
    assert parse_precision("bf16") is torch.bfloat16
    with pytest.raises(InputError, match="fp16"):
        parse_precision("half")


# ---- CPU fallback ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cpu_pair():
    return TorchRunners(load_model(TINY)), CudaRunners(load_model(TINY))


def test_cpu_fallback_is_plain_eager(cpu_pair):
    _, fast = cpu_pair
    info = fast.describe()
    assert info["cuda_graphs"] is False and info["compiled"] == [] and info["precision"] == "float32"
    assert fast.graph_keys("denoise") == []


def test_cpu_fallback_matches_torch_runners(cpu_pair):
    ref, fast = cpu_pair
    lat = torch.randn(1, 4, TINY.latent_size, TINY.latent_size, generator=torch.Generator().manual_seed(1))
    kv_ref, kv_fast = ref.reference_kv(lat), fast.reference_kv(lat)
    assert len(kv_fast) == 32
    assert max(relative_error(a, b) for a, b in zip(kv_fast, kv_ref)) < 1e-5
    sample, t, tokens, face = window_inputs(TINY)
    v_ref = ref.denoise(sample, t, tokens, face, kv_ref)
    v_fast = fast.denoise(sample, t, tokens, face, kv_fast)
    assert v_fast.device.type == "cpu" and v_fast.dtype == torch.float32 and v_fast.shape == sample.shape
    assert relative_error(v_fast, v_ref) < 1e-5
    z = torch.randn(3, 4, TINY.latent_size, TINY.latent_size)
    assert relative_error(fast.decode(z), ref.decode(z)) < 1e-5
    mel = torch.randn(1, TINY.audio.n_mels, 200)
    assert relative_error(fast.audio_stack(mel), ref.audio_stack(mel)) < 1e-5


def test_half_precision_runner_keeps_one_dtype():
    """bf16 on the CPU stands in for the GPU's half precision: no fp32 tensor may meet a bf16 weight."""
    fast = CudaRunners(load_model(TINY), FastOptions(precision="bf16"))
    assert fast.dtype == torch.bfloat16
    size, s = TINY.stream.image_size, TINY.latent_size
    face = fast.face_features(torch.rand(1, 1, size, size))
    kv = fast.reference_kv(fast.encode_image(torch.rand(1, 3, size, size) * 2 - 1))
    sample, t, tokens, _ = window_inputs(TINY)
    v = fast.denoise(sample, t, tokens, face, kv)
    assert v.dtype == torch.float32 and torch.isfinite(v).all()
    assert fast.decode(torch.randn(2, 4, s, s)).dtype == torch.float32
    assert fast.audio_stack(torch.randn(1, TINY.audio.n_mels, 200)).dtype == torch.float32


def test_cpu_fp8_option_is_emulated():
    fast = CudaRunners(load_model(TINY), FastOptions(fp8="ff", fp8_min_features=32))
    layers = [m for m in fast.model.denoiser.modules() if isinstance(m, Fp8Linear)]
    assert fast.fp8_layers == len(layers) > 0 and all(m.emulate for m in layers)
    sample, t, tokens, face = window_inputs(TINY)
    v = fast.denoise(sample, t, tokens, face, fast.reference_kv(torch.randn(1, 4, TINY.latent_size, TINY.latent_size)))
    assert torch.isfinite(v).all()


# ---- graph cache keying ----------------------------------------------------------------------------


def test_shape_key_separates_batch_frames_size_and_kv():
    d = torch.float16
    base = [torch.zeros(1, 4, 12, 8, 8), torch.zeros(1), torch.zeros(1, 12, 50, 384)]
    key = shape_key(base, [d, None, d])
    assert key == shape_key([t.clone() for t in base], [d, None, d])  # same shapes: same graph
    assert key != shape_key([torch.zeros(2, 4, 12, 8, 8), *base[1:]], [d, None, d])  # batch
    assert key != shape_key([torch.zeros(1, 4, 12, 16, 16), *base[1:]], [d, None, d])  # latent size
    assert key != shape_key([torch.zeros(1, 4, 10, 8, 8), *base[1:]], [d, None, d])  # frames
    assert key != shape_key([*base, torch.zeros(1, 64, 32)], [d, None, d, d])  # with reference K/V
    assert key != shape_key(base, [torch.bfloat16, None, d])  # precision of the static buffers


def test_graph_cache_variadic_tail_and_conversion():
    seen = []

    def fn(*xs):
        seen.append([(x.dtype, x.device.type) for x in xs])
        return xs[0]

    cache = GraphCache(fn, torch.device("cpu"), [torch.float16, None, torch.float16], enabled=True)
    assert not cache.enabled  # CPU: no graphs, direct calls
    x, t = torch.randn(2, 3), torch.tensor([7, 7])
    kv = [torch.randn(2, 5) for _ in range(3)]
    cache(x, t, *kv)
    assert seen[-1] == [(torch.float16, "cpu"), (torch.int64, "cpu")] + [(torch.float16, "cpu")] * 3
    k1 = cache.key([x, t, *kv])
    assert k1 != cache.key([x, t])  # the K/V tail belongs to the key
    assert k1[-1] == ((2, 5), torch.float16)  # tail takes the last dtype
    assert cache._reuse_for(5) == [False] * 5


def test_graph_cache_reuse_decision():
    """Static inputs marked `reuse` are re-copied only for another tensor or an in-place edit; inference
    tensors (every runner output) have no version counter, so their identity alone counts."""
    x = torch.randn(4)
    token = GraphCache.source_token(x)
    assert GraphCache.unchanged(token, x)
    assert not GraphCache.unchanged(token, x.clone())  # another tensor, same values: copy again
    x.mul_(2.0)
    assert not GraphCache.unchanged(token, x)  # edited in place
    assert not GraphCache.unchanged(None, x)  # first call
    with torch.inference_mode():
        kv = torch.randn(4)
    token = GraphCache.source_token(kv)
    assert token[1] is None and GraphCache.unchanged(token, kv)
    with torch.inference_mode():
        assert not GraphCache.unchanged(token, kv + 0)


class _ReplayOnCpu:
    """Stands in for a CUDA graph on the CPU: replay recomputes fn into the captured output buffer."""

    def __init__(self, fn, static, output):
        self.fn, self.static, self.output = fn, static, output

    def replay(self):
        self.output.copy_(self.fn(*self.static))


class CpuGraphCache(GraphCache):
    """GraphCache with its static-buffer logic live on the CPU (only the recording is faked)."""

    def __init__(self, cache: GraphCache):
        super().__init__(cache.fn, cache.device, cache.dtypes, enabled=False, reuse=cache.reuse)
        self.enabled = True
        self.recorded = 0

    def _record(self, static):
        self.recorded += 1
        output = self.fn(*static).clone()
        return _ReplayOnCpu(self.fn, static, output), output


def test_static_buffers_follow_inputs_through_replays():
    """The graph path's copy / reuse logic, run on the CPU: every replay sees the caller's current inputs,
    the per-avatar K/V (inference tensors from the runner) included."""
    fast = CudaRunners(load_model(TINY))
    eager = CudaRunners(load_model(TINY))
    cache = fast._caches["denoise"] = CpuGraphCache(fast._caches["denoise"])
    lat_a, lat_b = (torch.randn(1, 4, TINY.latent_size, TINY.latent_size, generator=torch.Generator().manual_seed(i))
                    for i in (1, 2))
    kv_a, kv_b = fast.reference_kv(lat_a), fast.reference_kv(lat_b)
    assert kv_a[0].is_inference()
    sample, t, tokens, face = window_inputs(TINY)
    outs = []
    for kv, x in ((kv_a, sample), (kv_b, sample), (kv_a, sample * 0.5), (kv_a, sample)):
        outs.append(fast.denoise(x, t, tokens, face, kv).clone())
        expected = eager.denoise(x, t, tokens, face, eager.reference_kv(lat_a if kv is kv_a else lat_b))
        assert relative_error(outs[-1], expected) < 1e-5
    assert cache.recorded == 1 and len(cache.graphs) == 1  # one shape key: one graph, replayed 4 times
    assert relative_error(outs[3], outs[0]) == 0.0 and relative_error(outs[1], outs[0]) > 1e-3


# ---- FP8 math --------------------------------------------------------------------------------------


@pytest.mark.parametrize("rowwise", [True, False])
def test_quantize_fp8_roundtrip_bound(rowwise):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 96, generator=g) * torch.logspace(-3, 2, 64)[:, None]  # rows of very different range
    q, scale = quantize_fp8(x, rowwise)
    assert q.dtype == torch.float8_e4m3fn and scale.dtype == torch.float32
    assert scale.shape == ((64, 1) if rowwise else ())
    amax = x.abs().amax(dim=-1, keepdim=True) if rowwise else x.abs().amax()
    assert torch.allclose(scale * FP8_MAX, amax, rtol=1e-6)  # the max maps to 448
    dq = dequantize_fp8(q, scale)
    bound = E4M3_HALF_ULP * x.abs() + E4M3_SUBNORMAL_STEP * scale + 1e-12
    assert ((dq - x).abs() <= bound).all()


def test_quantize_fp8_zero_rows_stay_zero():
    x = torch.zeros(4, 32)
    x[1] = torch.linspace(-1, 1, 32)
    q, scale = quantize_fp8(x, rowwise=True)
    dq = dequantize_fp8(q, scale)
    assert torch.isfinite(dq).all() and (dq[0] == 0).all() and (dq[2:] == 0).all()


def test_relative_error_math():
    ref = torch.tensor([3.0, 4.0])
    assert relative_error(ref * 1.01, ref) == pytest.approx(0.01)
    assert relative_error(torch.tensor([3.0, 4.1]), ref) == pytest.approx(0.1 / 5.0)
    assert relative_error(torch.tensor([float("nan"), 4.0]), ref) == float("inf")
    assert relative_error(torch.zeros(2), torch.zeros(2)) == 0.0


def test_fp8_linear_emulated_close_to_linear():
    torch.manual_seed(0)
    lin = nn.Linear(320, 640)
    f8 = Fp8Linear(lin, rowwise=True, emulate=True)
    x = torch.randn(2, 50, 320)
    out = f8(x)
    assert out.shape == (2, 50, 640) and out.dtype == x.dtype
    err = relative_error(out, lin(x))
    assert 1e-3 < err < 0.06  # quantised (not exact), within e4m3's few percent
    per_tensor = relative_error(Fp8Linear(lin, rowwise=False, emulate=True)(x), lin(x))
    assert per_tensor < 0.08


def test_fp8_emulation_matches_scaled_mm_where_available():
    """The emulated path and torch._scaled_mm compute the same function (checks operand layout and scales)."""
    for rowwise in (True, False):
        if not probe_scaled_mm("cpu", torch.float32, rowwise):
            pytest.skip("this torch has no CPU torch._scaled_mm")
        torch.manual_seed(1)
        lin = nn.Linear(64, 48)
        x = torch.randn(33, 64)
        real = Fp8Linear(lin, rowwise=rowwise, emulate=False, mm_dtype=torch.float32)(x)
        emulated = Fp8Linear(lin, rowwise=rowwise, emulate=True)(x)
        assert relative_error(real, emulated) < 1e-5


def test_fp8_candidates_skip_few_row_layers():
    block = nn.ModuleDict({"spatial": SpatialTransformerBlock(64, 2, 384, 3.0, 1e-5),
                           "motion": MotionModule(64, 2, 32, 32, 1e-5)})
    names = fp8_candidates(block, "linear", min_features=64)
    assert "spatial.attn1.to_q" in names and "spatial.ff.net.2" in names and "spatial.attn2.to_q" in names
    assert "spatial.attn2.to_k" not in names and "spatial.attn2.to_v" not in names  # 50 audio tokens: stays half
    assert any(n.startswith("motion.") for n in names)
    ff = fp8_candidates(block, "ff", min_features=64)
    assert ff and all(".ff.net." in f".{n}" for n in ff)
    assert fp8_candidates(block, "linear", min_features=65) == []  # 64-wide layers are under the limit
    with pytest.raises(InputError):
        fp8_candidates(block, "convs")
    x = torch.randn(4, 16, 64)
    before = block["spatial"](x, 4, torch.randn(4, 50, 384), None, None)
    assert convert_linears_to_fp8(block, "ff", emulate=True, min_features=64) == len(ff)
    assert isinstance(block["spatial"].ff.net[2], Fp8Linear) and isinstance(block["spatial"].attn1.to_q, nn.Linear)
    assert fp8_supported("cpu") is False
    after = block["spatial"](x, 4, torch.randn(4, 50, 384), None, None)
    assert after.shape == before.shape and torch.isfinite(after).all()


def test_cpu_runner_in_a_session():
    """The runner drops into the streaming session unchanged (CPU fallback, one clip)."""
    size = TINY.stream.image_size
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
    mask = np.zeros((size, size), np.float32)
    mask[size // 4: 3 * size // 4, size // 4: 3 * size // 4] = 1
    pcm = (0.1 * np.sin(np.arange(16000) / 16000 * 2 * np.pi * 220)).astype(np.float32)
    latents = []
    for runners in (TorchRunners(load_model(TINY)), CudaRunners(load_model(TINY))):
        session = Session(runners, prepare_avatar(runners, image, mask), seed=3)
        session.push_audio(pcm, 16000)
        frames = session.run_clip()
        assert frames and frames[0].image.shape == (size, size, 3)
        latents.append(torch.stack([f.latent for f in frames]))
    assert relative_error(latents[1], latents[0]) < 1e-4


# ---- GPU -------------------------------------------------------------------------------------------

gpu = pytest.mark.gpu
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
HALF_TOL = 2e-3  # fp16 relative error between two runs of the same computation (kernel choices may differ)


def _cuda_model():
    return load_model(TINY, device="cuda", dtype=torch.float16)


@pytest.fixture(scope="module")
def cuda_eager_and_graphs():
    model = _cuda_model()
    eager = CudaRunners(model, FastOptions(compile=(), cuda_graphs=False, channels_last=False))
    graphs = CudaRunners(_share_weights(model), FastOptions(compile=(), channels_last=False))
    return eager, graphs


def _share_weights(model):
    """A second bundle with the same (fp16) weights, so two runners can be compared."""
    other = load_model(TINY, device="cuda", dtype=torch.float16)
    other.load_state_dict(model.state_dict())
    return other


@gpu
@needs_cuda
def test_cuda_graphs_match_eager_per_batch_and_kv(cuda_eager_and_graphs):
    eager, graphs = cuda_eager_and_graphs
    lat = torch.randn(1, 4, TINY.latent_size, TINY.latent_size)
    kv_e, kv_g = eager.reference_kv(lat), graphs.reference_kv(lat)
    for batch in (1, 2):
        sample, t, tokens, face = window_inputs(TINY, batch, seed=batch)
        kv_b = [tuple(k.expand(batch, *k.shape[1:]).contiguous() for k in kv) for kv in (kv_e, kv_g)]
        v_e = eager.denoise(sample, t, tokens, face, kv_b[0])
        v_g = graphs.denoise(sample, t, tokens, face, kv_b[1])
        assert v_g.device.type == "cpu" and v_g.is_pinned()
        assert relative_error(v_g, v_e) < HALF_TOL
    # CFG's unconditional pass (no reference K/V) is its own graph
    v_e = eager.denoise(sample, t, torch.zeros_like(tokens), torch.zeros_like(face), ())
    v_g = graphs.denoise(sample, t, torch.zeros_like(tokens), torch.zeros_like(face), ())
    assert relative_error(v_g, v_e) < HALF_TOL
    assert len(graphs.graph_keys("denoise")) == 3


@gpu
@needs_cuda
def test_cuda_graph_static_inputs_follow_new_tensors(cuda_eager_and_graphs):
    """Reference K/V are copied only when they change: another tensor or an in-place edit."""
    eager, graphs = cuda_eager_and_graphs
    sample, t, tokens, face = window_inputs(TINY, 1, seed=5)
    # clones made outside inference mode: ordinary tensors, with version counters (runner outputs have none)
    kv_a = tuple(k.clone() for k in graphs.reference_kv(torch.randn(1, 4, TINY.latent_size, TINY.latent_size)))
    kv_b = graphs.reference_kv(torch.randn(1, 4, TINY.latent_size, TINY.latent_size))
    a1 = graphs.denoise(sample, t, tokens, face, kv_a)
    b1 = graphs.denoise(sample, t, tokens, face, kv_b)
    a2 = graphs.denoise(sample, t, tokens, face, kv_a)
    assert relative_error(a2, a1) == 0.0 and relative_error(b1, a1) > 1e-3
    kv_a[0].mul_(2.0)  # in place: the version counter tells the cache to copy again
    a3 = graphs.denoise(sample, t, tokens, face, kv_a)
    assert relative_error(a3, eager.denoise(sample, t, tokens, face, kv_a)) < HALF_TOL
    assert relative_error(a3, a1) > 1e-4


@gpu
@needs_cuda
def test_cuda_decode_and_audio_graphs_match_eager(cuda_eager_and_graphs):
    eager, graphs = cuda_eager_and_graphs
    z = torch.randn(9, 4, TINY.latent_size, TINY.latent_size)
    frames = graphs.decode(z)
    assert frames.shape == (9, 3, TINY.stream.image_size, TINY.stream.image_size) and frames.dtype == torch.float32
    assert relative_error(frames, eager.decode(z)) < HALF_TOL
    pending = graphs.decode_async(z * 0.5)  # overlaps with the denoiser step queued next
    sample, t, tokens, face = window_inputs(TINY)
    graphs.denoise(sample, t, tokens, face, graphs.reference_kv(torch.randn(1, 4, TINY.latent_size, TINY.latent_size)))
    assert relative_error(pending.result(), eager.decode(z * 0.5)) < HALF_TOL
    mel = torch.randn(1, TINY.audio.n_mels, 200)
    assert relative_error(graphs.audio_stack(mel), eager.audio_stack(mel)) < HALF_TOL


@gpu
@needs_cuda
def test_compiled_graphs_match_eager():
    """inductor for the VAE decode (small graph); the denoiser through dynamo tracing only (aot_eager)."""
    model = _cuda_model()
    eager = CudaRunners(_share_weights(model), FastOptions(compile=(), cuda_graphs=False, channels_last=False))
    compiled = CudaRunners(model, FastOptions(compile=("decode",)))
    z = torch.randn(9, 4, TINY.latent_size, TINY.latent_size)
    assert relative_error(compiled.decode(z), eager.decode(z)) < HALF_TOL
    traced = CudaRunners(_share_weights(model), FastOptions(compile=("denoise",), compile_backend="aot_eager"))
    sample, t, tokens, face = window_inputs(TINY)
    lat = torch.randn(1, 4, TINY.latent_size, TINY.latent_size)
    v = traced.denoise(sample, t, tokens, face, traced.reference_kv(lat))
    assert relative_error(v, eager.denoise(sample, t, tokens, face, eager.reference_kv(lat))) < HALF_TOL


@gpu
@needs_cuda
def test_fp8_scaled_mm_matches_emulation_on_gpu():
    if not fp8_supported("cuda"):
        pytest.skip("this GPU has no FP8 matrix units")
    torch.manual_seed(2)
    lin = nn.Linear(640, 1280).cuda().half()
    x = torch.randn(4096, 640, device="cuda", dtype=torch.float16)
    for rowwise in (True, False):
        mm_dtype = None if probe_scaled_mm("cuda", torch.float16, rowwise) else torch.bfloat16
        real = Fp8Linear(lin, rowwise=rowwise, mm_dtype=mm_dtype)(x)
        emulated = Fp8Linear(lin, rowwise=rowwise, emulate=True)(x)
        assert real.dtype == torch.float16
        assert relative_error(real, emulated) < 5e-3
        assert relative_error(real, lin(x)) < 0.06

"""Triton attention kernels (`kernels/`) against plain torch, and the engine's `sdpa` / `triton` switch.

Tolerance (DESIGN §5): max |kernel − fp32 truth| ≤ 2 × max |torch in the same precision − fp32 truth|
plus a tiny absolute floor. Without CUDA the kernels run under the Triton interpreter
(`TRITON_INTERPRET=1`, set by tests/conftest.py) on small shapes that still exercise head-dim padding
(D = 40, 80), ragged sequence lengths and multi-block key loops. The interpreter's `tl.dot` mis-reads
bf16 (it multiplies the raw 16-bit patterns), so bf16 runs only in the `gpu` tests; fp32 and fp16 run
everywhere. Outputs are poisoned with NaN (with margins) to prove every element, and nothing else, is
written.
"""

from __future__ import annotations

import zlib

import pytest
import torch

from livehead.engine.common.errors import InputError
from livehead.engine.model.attention import (
    AttentionKernels,
    SpatialTransformerBlock,
    TemporalTransformerBlock,
    use_attention_kernels,
)
from livehead.engine.model.config import ModelConfig
from livehead.engine.model.init_weights import seeded_init_
from livehead.engine.model.unet import Denoiser
from livehead.kernels.audio_attention import audio_attention, audio_attention_torch
from livehead.kernels.reference_attention import reference_attention, reference_attention_torch
from livehead.kernels.temporal_attention import temporal_attention, temporal_attention_torch

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
FLOOR = {torch.float32: 1e-5, torch.float16: 1e-4, torch.bfloat16: 1e-4}
CPU_DTYPES = [torch.float32, torch.float16]
GPU_DTYPES = [torch.float16, torch.bfloat16]


def _seed(case) -> int:
    return zlib.crc32(repr(case).encode())


def _rand(*shape, dtype, device=DEVICE, gen=None):
    return torch.randn(*shape, generator=gen, device="cpu").to(device=device, dtype=dtype)


def _assert_within_torch_error(out, truth, torch_out, dtype, what=""):
    """Kernel error vs the fp32 truth ≤ 2 × torch's own error in `dtype` + floor; no NaN/inf anywhere."""
    assert torch.isfinite(out).all(), f"{what}: non-finite values in the kernel output"
    err = (out.float() - truth.float()).abs().max().item()
    base = (torch_out.float() - truth.float()).abs().max().item()
    assert err <= 2 * base + FLOOR[dtype], f"{what}: kernel error {err:.3e} > 2 x torch error {base:.3e} + floor"


def _poisoned(shape_nlhd, device=DEVICE, dtype=torch.float32):
    """A NaN [N+1, L, H, D+8] buffer and the [N, H, L, D] view a kernel should fill (margins stay NaN)."""
    n, length, heads, d = shape_nlhd
    big = torch.full((n + 1, length, heads, d + 8), float("nan"), device=device, dtype=dtype)
    return big, big[:n, :, :, :d].transpose(1, 2)


def _assert_margins_untouched(big, n, d):
    assert big[n].isnan().all(), "kernel wrote past the last row"
    assert big[..., d:].isnan().all(), "kernel wrote into the padded head dims"


# ---- reference attention ------------------------------------------------------------------------

REF_CASES = [  # batch, frames, heads, L, Lr, D, block (None: wrapper default)
    (2, 3, 2, 37, 29, 40, (16, 16)),  # ragged L and Lr, D=40 → 64, several key blocks in both loops
    (1, 2, 2, 50, 64, 80, (32, 16)),  # D=80 → 128
    (1, 2, 1, 64, 64, 16, None),  # even blocks: the EVEN_N (no key mask) path
]


@pytest.mark.parametrize("dtype", CPU_DTYPES, ids=str)
@pytest.mark.parametrize("case", REF_CASES, ids=lambda c: f"L{c[3]}-Lr{c[4]}-D{c[5]}")
def test_reference_attention_matches_torch(case, dtype):
    b, f, h, length, n_ref, d, block = case
    gen = torch.Generator().manual_seed(_seed(case))
    q, k, v = (_rand(b * f, h, length, d, dtype=dtype, gen=gen) for _ in range(3))
    rk, rv = (_rand(b, h, n_ref, d, dtype=dtype, gen=gen) for _ in range(2))
    big, out = _poisoned((b * f, length, h, d), dtype=dtype)
    reference_attention(q, k, v, rk, rv, f, out=out, block=block)
    _assert_margins_untouched(big, b * f, d)
    truth = reference_attention_torch(q.float(), k.float(), v.float(), rk.float(), rv.float(), f)
    _assert_within_torch_error(out, truth, reference_attention_torch(q, k, v, rk, rv, f), dtype, str(case))


def test_reference_attention_without_reference_is_self_attention():
    gen = torch.Generator().manual_seed(1)
    q, k, v = (_rand(3, 2, 33, 40, dtype=torch.float32, gen=gen) for _ in range(3))
    out = reference_attention(q, k, v, None, None, frames=3, block=(16, 32))
    assert out.shape == q.shape and out.transpose(1, 2).is_contiguous()  # merging heads is a view
    _assert_within_torch_error(out, torch.nn.functional.scaled_dot_product_attention(q, k, v),
                               torch.nn.functional.scaled_dot_product_attention(q, k, v), torch.float32)


def test_reference_attention_rejects_bad_shapes():
    q = torch.zeros(4, 2, 8, 16)
    with pytest.raises(ValueError, match="frames"):
        reference_attention(q, q, q, torch.zeros(1, 2, 8, 16), torch.zeros(1, 2, 8, 16), frames=3)
    with pytest.raises(ValueError, match="dtype"):
        reference_attention(q, q, q.half(), None, None, frames=4)


# ---- temporal attention -------------------------------------------------------------------------

TEMPORAL_CASES = [  # S, heads, F, D, block_m
    (13, 2, 12, 40, 32),  # 2 sequences of 12 per 32-row block, a ragged last block, D=40 → 64
    (13, 2, 14, 80, None),  # F=14, D=80 → 128, default block
    (6, 3, 1, 40, 16),  # a single frame: out = v
]


@pytest.mark.parametrize("dtype", CPU_DTYPES, ids=str)
@pytest.mark.parametrize("case", TEMPORAL_CASES, ids=lambda c: f"S{c[0]}-F{c[2]}-D{c[3]}")
def test_temporal_attention_matches_torch(case, dtype):
    s, h, f, d, block_m = case
    gen = torch.Generator().manual_seed(_seed(case))
    q, k, v = (_rand(s, f, h * d, dtype=dtype, gen=gen).view(s, f, h, d).transpose(1, 2) for _ in range(3))
    big, out = _poisoned((s, f, h, d), dtype=dtype)  # [S+1, F, H, D+8]: the [S, F, C] layout plus margins
    temporal_attention(q, k, v, out=out, block_m=block_m)
    _assert_margins_untouched(big, s, d)
    truth = temporal_attention_torch(q.float(), k.float(), v.float())
    _assert_within_torch_error(out, truth, temporal_attention_torch(q, k, v), dtype, str(case))


@pytest.mark.parametrize("dtype", CPU_DTYPES, ids=str)
def test_temporal_attention_reads_video_token_layout(dtype):
    """5-D views of [B·F, L, C] tokens: no regrouping copy, and the output merges back as a view."""
    b, f, length, h, d = 2, 12, 11, 2, 40
    gen = torch.Generator().manual_seed(2)
    q, k, v = (_rand(b * f, length, h * d, dtype=dtype, gen=gen).view(b, f, length, h, d).permute(0, 2, 3, 1, 4)
               for _ in range(3))
    out = temporal_attention(q, k, v, block_m=64)
    merged = out.permute(0, 3, 1, 2, 4).reshape(b * f, length, h * d)
    assert merged.data_ptr() == out.data_ptr()
    truth = temporal_attention_torch(q.float(), k.float(), v.float())
    _assert_within_torch_error(out, truth, temporal_attention_torch(q, k, v), dtype)


# ---- audio attention ----------------------------------------------------------------------------

AUDIO_CASES = [  # N, heads, L, Ta, D, block_m
    (3, 2, 37, 50, 40, 16),  # EchoMimic's 50 audio tokens → one masked 64-key block
    (2, 2, 20, 150, 80, 16),  # more tokens than one key block: the online softmax loop
]


@pytest.mark.parametrize("dtype", CPU_DTYPES, ids=str)
@pytest.mark.parametrize("case", AUDIO_CASES, ids=lambda c: f"L{c[2]}-Ta{c[3]}-D{c[4]}")
def test_audio_attention_matches_torch(case, dtype):
    n, h, length, ta, d, block_m = case
    scale = 3.0
    gen = torch.Generator().manual_seed(_seed(case))
    q = _rand(n, length, h * d, dtype=dtype, gen=gen).view(n, length, h, d).transpose(1, 2)
    k, v = (_rand(n, ta, h * d, dtype=dtype, gen=gen).view(n, ta, h, d).transpose(1, 2) for _ in range(2))
    big, out = _poisoned((n, length, h, d), dtype=dtype)
    audio_attention(q, k, v, scale, out=out, block_m=block_m)
    _assert_margins_untouched(big, n, d)
    truth = audio_attention_torch(q.float(), k.float(), v.float(), scale)
    _assert_within_torch_error(out, truth, audio_attention_torch(q, k, v, scale), dtype, str(case))


# ---- engine switch ------------------------------------------------------------------------------

def test_attention_kernels_presets_and_validation():
    assert AttentionKernels() == AttentionKernels.sdpa() == AttentionKernels.from_name("sdpa")
    assert AttentionKernels.from_name("triton") == AttentionKernels("triton", "triton", "triton")
    assert not AttentionKernels.sdpa().uses_triton and AttentionKernels(audio="triton").uses_triton
    with pytest.raises(InputError, match="sdpa, triton"):
        AttentionKernels(reference="flash")
    with pytest.raises(InputError, match="unknown attention kernels"):
        AttentionKernels.from_name("fast")


def test_use_attention_kernels_sets_every_attention_and_keeps_weights():
    den = Denoiser(ModelConfig.from_name("tiny").unet)
    keys = set(den.state_dict())
    blocks = [m for m in den.modules() if isinstance(m, SpatialTransformerBlock)]
    temporal = [a for m in den.modules() if isinstance(m, TemporalTransformerBlock) for a in m.attention_blocks]
    assert len(blocks) == 16 and len(temporal) == 42
    assert all(b.reference_kernel == b.audio_kernel == "sdpa" for b in blocks)  # the default
    assert use_attention_kernels(den, AttentionKernels(temporal="triton", audio="triton")) is den
    assert all(b.reference_kernel == "sdpa" and b.audio_kernel == "triton" for b in blocks)
    assert all(a.kernel == "triton" for a in temporal)
    use_attention_kernels(den, "sdpa")
    assert all(a.kernel == "sdpa" for a in temporal) and all(b.audio_kernel == "sdpa" for b in blocks)
    assert set(den.state_dict()) == keys


def test_spatial_and_temporal_blocks_match_sdpa():
    """Block level, fp32, D=40: triton path (no cat, fused audio scale, token layout) == sdpa path."""
    torch.manual_seed(3)
    dim, heads, b, f, length, ta = 80, 2, 1, 3, 37, 50
    block = seeded_init_(SpatialTransformerBlock(dim, heads, audio_dim=24, audio_scale=3.0, eps=1e-5), 0).to(DEVICE)
    tblock = seeded_init_(TemporalTransformerBlock(dim, heads, max_len=32, eps=1e-5), 1).to(DEVICE)
    h = torch.randn(b * f, length, dim, device=DEVICE)
    audio = torch.randn(b * f, ta, 24, device=DEVICE)
    ref_k, ref_v = block.reference_kv(torch.randn(b, 29, dim, device=DEVICE))
    with torch.no_grad():
        expected = [block(h, f, audio, ref_k, ref_v), block(h, f, None, None, None), tblock(h, f)]
        use_attention_kernels(block, "triton")
        use_attention_kernels(tblock, "triton")
        got = [block(h, f, audio, ref_k, ref_v), block(h, f, None, None, None), tblock(h, f)]
    for e, g, what in zip(expected, got, ["reference+audio", "self only", "temporal"]):
        torch.testing.assert_close(g, e, atol=2e-5, rtol=1e-5, msg=what)


def _tiny_denoiser_inputs(device, dtype, batch, frames, seed=0):
    """A seeded tiny Denoiser and its inputs: sample, timestep, audio, face features, 32 reference K/V."""
    cfg = ModelConfig.from_name("tiny")
    s, c = cfg.latent_size, cfg.unet.block_out_channels
    den = seeded_init_(Denoiser(cfg.unet), seed).eval().to(device=device, dtype=dtype)
    gen = torch.Generator().manual_seed(seed)
    r = lambda *shape: torch.randn(*shape, generator=gen).to(device=device, dtype=dtype)
    bank_widths = [c[0]] * 2 + [c[1]] * 2 + [c[2]] * 2 + [c[3]] + [c[2]] * 3 + [c[1]] * 3 + [c[0]] * 3
    sides = [s] * 2 + [s // 2] * 2 + [s // 4] * 2 + [s // 8] + [s // 4] * 3 + [s // 2] * 3 + [s] * 3
    with torch.no_grad():
        kv = den.reference_kv(*(r(batch, side * side, w) for side, w in zip(sides, bank_widths)))
    args = (r(batch, 4, frames, s, s), torch.tensor([500, 250][:batch], device=device),
            r(batch, frames, cfg.audio.tokens_per_frame, cfg.audio.n_state), r(batch, c[0], s, s), *kv)
    return den, args


@pytest.mark.slow  # ≈ 10–25 s on 2 busy CPU cores: the interpreter costs ≈ 0.1 s per kernel launch, 74 per pass
def test_tiny_denoiser_triton_matches_sdpa():
    """End to end (tiny preset, fp32, 2 batch items × 3 frames so each frame must find its own
    item's reference K/V): every attention through the kernels == the sdpa path. Frame counts of
    12–16 are covered per kernel above; the pass without reference K/V (CFG's unconditional branch)
    in the block test above and in the GPU version."""
    den, args = _tiny_denoiser_inputs(DEVICE, torch.float32, batch=2, frames=3)
    with torch.no_grad():
        expected = den(*args)
        use_attention_kernels(den, AttentionKernels.triton())
        got = den(*args)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


# ---- custom ops: torch.compile traces each kernel as one node ------------------------------------


def test_custom_ops_pass_opcheck():
    """Schema, fake (meta) layout == the launcher's real layout, and the autograd registration rules."""
    from livehead.kernels import ops

    gen = torch.Generator().manual_seed(7)
    r = lambda *shape: _rand(*shape, dtype=torch.float32, gen=gen)
    n, heads, length, d = 4, 2, 24, 40
    q, k, v = r(n, heads, length, d), r(n, heads, length, d), r(n, heads, length, d)
    video = lambda: r(2, 3, 12, heads, d).permute(0, 2, 3, 1, 4)
    cases = [
        (ops.reference_attention, (q, k, v, r(2, heads, 20, d), r(2, heads, 20, d), 2)),
        (ops.reference_attention, (q, k, v, None, None, 2)),
        (ops.temporal_attention, (r(6, heads, 12, d), r(6, heads, 12, d), r(6, heads, 12, d))),
        (ops.temporal_attention, (video(), video(), video())),
        (ops.audio_attention, (q, r(n, heads, 10, d), r(n, heads, 10, d), 3.0)),
    ]
    tests = ("test_schema", "test_faketensor", "test_aot_dispatch_static")
    for op, args in cases:
        torch.library.opcheck(op, args, test_utils=tests)


@pytest.mark.slow  # two interpreter passes of the tiny denoiser plus one trace
def test_tiny_denoiser_triton_compiles_fullgraph():
    """The triton path traces with fullgraph=True (no graph break into a launcher) and matches eager."""
    den, args = _tiny_denoiser_inputs(DEVICE, torch.float32, batch=1, frames=3)
    use_attention_kernels(den, AttentionKernels.triton())
    torch._dynamo.reset()
    compiled = torch.compile(den, fullgraph=True, dynamic=False, backend="aot_eager")
    with torch.no_grad():
        expected = den(*args)
        got = compiled(*args)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


# ---- GPU: EchoMimic shapes, fp16 / bf16, compiled kernels with autotuning -------------------------

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
GPU_LEVELS = [(4096, 320), (1024, 640), (256, 1280), (64, 1280)]  # (L = h·w, C) at 512², heads 8


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("dtype", GPU_DTYPES, ids=str)
@pytest.mark.parametrize("level", GPU_LEVELS, ids=lambda x: f"L{x[0]}-C{x[1]}")
def test_gpu_reference_attention_echomimic_shapes(level, dtype):
    length, c = level
    b, f, h, d = 1, 12, 8, c // 8
    q, k, v = (_rand(b * f, length, c, dtype=dtype).view(b * f, length, h, d).transpose(1, 2) for _ in range(3))
    rk, rv = (_rand(b, length, c, dtype=dtype).view(b, length, h, d).transpose(1, 2) for _ in range(2))
    big, out = _poisoned((b * f, length, h, d), dtype=dtype)
    reference_attention(q, k, v, rk, rv, f, out=out)
    _assert_margins_untouched(big, b * f, d)
    truth = reference_attention_torch(q.float(), k.float(), v.float(), rk.float(), rv.float(), f)
    _assert_within_torch_error(out, truth, reference_attention_torch(q, k, v, rk, rv, f), dtype, str(level))


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("dtype", GPU_DTYPES, ids=str)
@pytest.mark.parametrize("frames", [12, 16])
@pytest.mark.parametrize("level", GPU_LEVELS, ids=lambda x: f"S{x[0]}-C{x[1]}")
def test_gpu_temporal_attention_echomimic_shapes(level, frames, dtype):
    length, c = level
    h, d = 8, c // 8
    # the engine's layout: [B·F, L, C] tokens read through 5-D views (B = 2: CFG-sized batch)
    b = 2
    q, k, v = (_rand(b * frames, length, c, dtype=dtype).view(b, frames, length, h, d).permute(0, 2, 3, 1, 4)
               for _ in range(3))
    out = temporal_attention(q, k, v)
    truth = temporal_attention_torch(q.float(), k.float(), v.float())
    _assert_within_torch_error(out, truth, temporal_attention_torch(q, k, v), dtype, str(level))
    # and the [S, H, F, D] form, poisoned
    q4, k4, v4 = (t.reshape(b * length, h, frames, d) for t in (q, k, v))
    big, out4 = _poisoned((b * length, frames, h, d), dtype=dtype)
    temporal_attention(q4, k4, v4, out=out4)
    _assert_margins_untouched(big, b * length, d)
    _assert_within_torch_error(out4, truth.reshape(b * length, h, frames, d),
                               temporal_attention_torch(q4, k4, v4), dtype, str(level))


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("dtype", GPU_DTYPES, ids=str)
@pytest.mark.parametrize("level", GPU_LEVELS, ids=lambda x: f"L{x[0]}-C{x[1]}")
def test_gpu_audio_attention_echomimic_shapes(level, dtype):
    length, c = level
    n, h, d, ta, scale = 12, 8, c // 8, 50, 3.0
    q = _rand(n, length, c, dtype=dtype).view(n, length, h, d).transpose(1, 2)
    k, v = (_rand(n, ta, c, dtype=dtype).view(n, ta, h, d).transpose(1, 2) for _ in range(2))
    big, out = _poisoned((n, length, h, d), dtype=dtype)
    audio_attention(q, k, v, scale, out=out)
    _assert_margins_untouched(big, n, d)
    truth = audio_attention_torch(q.float(), k.float(), v.float(), scale)
    _assert_within_torch_error(out, truth, audio_attention_torch(q, k, v, scale), dtype, str(level))


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("dtype", GPU_DTYPES, ids=str)
def test_gpu_tiny_denoiser_triton_matches_sdpa(dtype):
    """Tiny denoiser (2 items × 12 frames) in half precision on CUDA, with and without reference K/V:
    the triton path's error vs fp32 is within 2× the sdpa path's."""
    den, args = _tiny_denoiser_inputs("cuda", torch.float32, batch=2, frames=12)
    with torch.no_grad():
        truth, truth_uncond = den(*args), den(*args[:4])
        den = den.to(dtype)
        half_args = tuple(a.to(dtype) if a.is_floating_point() else a for a in args)
        sdpa_out, sdpa_uncond = den(*half_args), den(*half_args[:4])
        use_attention_kernels(den, AttentionKernels.triton())
        triton_out, triton_uncond = den(*half_args), den(*half_args[:4])
    _assert_within_torch_error(triton_out, truth, sdpa_out, dtype, "tiny denoiser")
    _assert_within_torch_error(triton_uncond, truth_uncond, sdpa_uncond, dtype, "tiny denoiser, no reference")


@pytest.mark.gpu
@needs_cuda
def test_gpu_tiny_denoiser_triton_inductor_and_cuda_graph():
    """The triton custom ops inside inductor (fullgraph) and replayed from a CUDA graph == eager triton."""
    den, args = _tiny_denoiser_inputs("cuda", torch.float16, batch=2, frames=12)
    use_attention_kernels(den, AttentionKernels.triton())
    torch._dynamo.reset()
    compiled = torch.compile(den, fullgraph=True, dynamic=False)
    with torch.no_grad():
        expected = den(*args)
        torch.testing.assert_close(compiled(*args), expected, atol=2e-2, rtol=2e-2)
        static = tuple(a.clone() for a in args)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            compiled(*static)  # warm-up off the capture
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = compiled(*static)
        graph.replay()
        torch.cuda.synchronize()
    torch.testing.assert_close(out, expected, atol=2e-2, rtol=2e-2)

"""FP8 (e4m3) linear layers for GPUs with FP8 matrix units (Hopper: H100 / H200).

    n = convert_linears_to_fp8(model.denoiser, scope="ff")     # returns how many layers were swapped
    err = relative_error(v_fp8, v_fp32)                          # gate: keep FP8 only if err <= 1 %

Weights are quantised once (per output channel, "rowwise", or one scale per tensor); activations are
quantised on every call with the same granularity (per token or per tensor), then multiplied with
`torch._scaled_mm`, which accumulates in fp32 and applies both scales. Only large linear layers are
swapped: the ones fed by the `[B·F·L, C]` token stream of the spatial and temporal transformers.
Layers fed by few rows (audio cross-attention K/V over the 50 audio tokens, time embeddings) stay in
half precision, where FP8 would cost accuracy and save no time.

On a device without FP8 matrix support (the CPU, tests) `Fp8Linear(emulate=True)` computes the same
function with de-quantised fp32 matrices, so the quantisation error can be measured anywhere.
"""

from __future__ import annotations

import torch
from torch import nn

from livehead.engine.common.errors import InputError

FP8_DTYPE = torch.float8_e4m3fn
FP8_MAX = 448.0  # largest finite e4m3fn value
MIN_SCALE = 1e-12  # an all-zero row gets this scale: it quantises to zeros, not NaN
FP8_SCOPES = ("ff", "linear")  # feed-forward layers only, or every large linear layer

# Linear layers that stay in half precision whatever the scope: few rows (audio tokens, time embedding).
_SKIP_SUFFIXES = ("attn2.to_k", "attn2.to_v", "time_emb_proj", "time_embedding.linear_1", "time_embedding.linear_2")
_MATMUL_ALIGN = 16  # torch._scaled_mm needs K and N divisible by 16


def quantize_fp8(x: torch.Tensor, rowwise: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """x [M, K] → (q [M, K] e4m3fn, scale fp32 [M, 1] rowwise or [] per tensor), x ≈ q · scale.

    The scale maps each row's (or the tensor's) absolute maximum to 448, the largest e4m3 value.
    """
    x32 = x.float()
    amax = x32.abs().amax(dim=-1, keepdim=True) if rowwise else x32.abs().amax()
    scale = (amax / FP8_MAX).clamp_min(MIN_SCALE)
    q = (x32 / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8_DTYPE)
    return q, scale


def dequantize_fp8(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Inverse of `quantize_fp8` (fp32)."""
    return q.float() * scale


def relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    """‖out − ref‖ / ‖ref‖ over every element, in float64; NaN or Inf anywhere gives inf."""
    out64, ref64 = out.detach().double().cpu(), ref.detach().double().cpu()
    if not (torch.isfinite(out64).all() and torch.isfinite(ref64).all()):
        return float("inf")
    denom = ref64.norm().item()
    diff = (out64 - ref64).norm().item()
    return diff / denom if denom > 0 else (0.0 if diff == 0 else float("inf"))


def fp8_supported(device: torch.device | str) -> bool:
    """True on CUDA devices with FP8 matrix units (compute capability 8.9 or newer)."""
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return False
    return torch.cuda.get_device_capability(device) >= (8, 9)


def _scaled_mm(xq, xs, wq, ws, out_dtype: torch.dtype) -> torch.Tensor:
    """xq [M, K] e4m3 row-major, wq [N, K] e4m3 → [M, N] = (xq·xs) @ (wq·ws)ᵀ, fp32 accumulation."""
    return torch._scaled_mm(xq, wq.t(), scale_a=xs, scale_b=ws.reshape(1, -1) if ws.dim() else ws,
                            out_dtype=out_dtype)


def probe_scaled_mm(device: torch.device | str, out_dtype: torch.dtype, rowwise: bool) -> bool:
    """Whether `torch._scaled_mm` runs here with this output dtype and scale granularity.

    Call it outside CUDA-graph capture (it synchronises). Some torch builds only take bf16 output
    for rowwise scales; `Fp8Linear` then multiplies to bf16 and casts.
    """
    try:
        x = torch.randn(32, 64, device=device)
        w = torch.randn(48, 64, device=device)
        xq, xs = quantize_fp8(x, rowwise)
        wq, ws = quantize_fp8(w, rowwise)
        out = _scaled_mm(xq, xs, wq, ws, out_dtype)
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize(device)
        return out.shape == (32, 48) and bool(torch.isfinite(out).all())
    except (RuntimeError, NotImplementedError, TypeError):
        return False


class Fp8Linear(nn.Module):
    """Drop-in for `nn.Linear` (same `in_features` / `out_features`, same function up to FP8 rounding).

    Holds `weight_fp8` [N, K] e4m3fn, `weight_scale` fp32 ([N, 1] rowwise or []), `bias` [N] or None.
    forward(x [..., K]) → [..., N] in x's dtype. `emulate`: de-quantise and multiply in fp32 instead
    of `torch._scaled_mm` (CPU, tests). `mm_dtype`: output dtype asked of `_scaled_mm` (None: x's).
    """

    def __init__(self, linear: nn.Linear, rowwise: bool = True, emulate: bool = False,
                 mm_dtype: torch.dtype | None = None):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.rowwise = rowwise
        self.emulate = emulate
        self.mm_dtype = mm_dtype
        wq, ws = quantize_fp8(linear.weight.detach(), rowwise)
        self.register_buffer("weight_fp8", wq)
        self.register_buffer("weight_scale", ws)
        bias = linear.bias.detach().clone() if linear.bias is not None else None
        self.register_buffer("bias", bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x2 = x.reshape(-1, self.in_features)
        xq, xs = quantize_fp8(x2, self.rowwise)
        if self.emulate:
            out = dequantize_fp8(xq, xs) @ dequantize_fp8(self.weight_fp8, self.weight_scale).t()
        else:
            out = _scaled_mm(xq, xs, self.weight_fp8, self.weight_scale, self.mm_dtype or x.dtype)
        out = out.to(x.dtype)
        if self.bias is not None:
            out = out + self.bias.to(x.dtype)
        return out.reshape(*shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        kind = "rowwise" if self.rowwise else "per-tensor"
        return f"in_features={self.in_features}, out_features={self.out_features}, {kind}" + (
            ", emulated" if self.emulate else "")


def fp8_candidates(module: nn.Module, scope: str = "linear", min_features: int = 320) -> list[str]:
    """Names of the `nn.Linear` layers of `module` that `convert_linears_to_fp8` would swap.

    scope "ff": feed-forward layers only (`...ff.net.0.proj`, `...ff.net.2`); "linear": every linear
    layer with in and out features ≥ `min_features` (multiples of 16), except the few-row ones.
    """
    if scope not in FP8_SCOPES:
        raise InputError(f"fp8 scope must be one of {', '.join(FP8_SCOPES)}, got {scope!r}")
    names = []
    for name, child in module.named_modules():
        if not isinstance(child, nn.Linear) or name.endswith(_SKIP_SUFFIXES):
            continue
        if min(child.in_features, child.out_features) < min_features:
            continue
        if child.in_features % _MATMUL_ALIGN or child.out_features % _MATMUL_ALIGN:
            continue
        if scope == "ff" and ".ff.net." not in f".{name}":
            continue
        names.append(name)
    return names


def convert_linears_to_fp8(module: nn.Module, scope: str = "linear", rowwise: bool = True,
                           emulate: bool = False, mm_dtype: torch.dtype | None = None,
                           min_features: int = 320) -> int:
    """Swap the chosen `nn.Linear` layers of `module` for `Fp8Linear`, in place; returns the count.

    The half-precision weights of the swapped layers are released (the FP8 copy replaces them).
    """
    names = fp8_candidates(module, scope, min_features)
    for name in names:
        parent_name, _, leaf = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        setattr(parent, leaf, Fp8Linear(getattr(parent, leaf), rowwise=rowwise, emulate=emulate,
                                        mm_dtype=mm_dtype))
    return len(names)

"""Deterministic parameter initialisation for presets that have no trained weights (`tiny`).

The scheme is the one the EchoMimic fixtures use (fixtures/README.md, "Weights: dtype and init"):

- weights with ndim >= 2 (matrices, conv kernels): N(0, 1) / sqrt(fan_in), fan_in = prod(shape[1:])
- GroupNorm / LayerNorm weight: 1 + 0.1 * N(0, 1); their bias: 0.1 * N(0, 1)
- every other parameter with ndim <= 1 (biases, scalars): 0.05 * N(0, 1)

Draws come from one CPU `torch.Generator(seed)`, in float32, and are then copied into each parameter
(any device / dtype). By default parameters are visited in sorted-name order, so the result does not
depend on where the module lives or on the order its submodules were registered. Buffers are left
untouched.

`order="module"` visits parameters in `named_parameters()` order instead. That is how the EchoMimic
fixtures were drawn: with it, `seeded_init_(FaceLocator(...), 3)` and `seeded_init_(AutoencoderKL(...), 5)`
reproduce `face_locator.safetensors` / `vae.safetensors` exactly after rounding to float16 (our modules
register their children in the reference order).
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["NORM_TYPES", "count_parameters", "seeded_init_"]

NORM_TYPES: tuple[type[nn.Module], ...] = (nn.GroupNorm, nn.LayerNorm)


def _norm_param_names(module: nn.Module) -> set[str]:
    names: set[str] = set()
    for mod_name, mod in module.named_modules():
        if isinstance(mod, NORM_TYPES):
            prefix = f"{mod_name}." if mod_name else ""
            for p_name, _ in mod.named_parameters(recurse=False):
                names.add(prefix + p_name)
    return names


@torch.no_grad()
def seeded_init_(module: nn.Module, seed: int, order: str = "sorted") -> nn.Module:
    """Re-initialise every parameter of `module` in place from `seed`; returns `module`.

    order: "sorted" (default, sorted parameter names) or "module" (`named_parameters()` order).
    """
    if order not in ("sorted", "module"):
        raise ValueError(f"order must be 'sorted' or 'module', got {order!r}")
    gen = torch.Generator(device="cpu")
    gen.manual_seed(int(seed))
    norm_params = _norm_param_names(module)
    params = dict(module.named_parameters())  # de-duplicates shared parameters
    names = sorted(params) if order == "sorted" else list(params)
    for name in names:
        p = params[name]
        shape = tuple(p.shape)
        noise = torch.randn(shape, generator=gen, dtype=torch.float32)
        if len(shape) >= 2:
            fan_in = math.prod(shape[1:])
            value = noise / math.sqrt(fan_in) if fan_in > 0 else noise
        elif name in norm_params:
            if name.rsplit(".", 1)[-1] == "weight":
                value = 1.0 + 0.1 * noise
            else:
                value = 0.1 * noise
        else:
            value = 0.05 * noise
        p.copy_(value.to(device=p.device, dtype=p.dtype))
    return module


def count_parameters(module: nn.Module) -> int:
    """Number of parameter values (shared parameters counted once; buffers excluded)."""
    return sum(p.numel() for p in module.parameters())

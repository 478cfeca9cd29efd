"""Checkpoint files of a preset: manifest, safe loading, strict checks with one-line errors.

Files follow EchoMimic v1's release layout, one group per file (group names as in the EchoMimic
key catalogue), so the public files load as they are. Each file may also be stored as
`.safetensors` next to (or instead of) the `.pth`:

    reference_unet.pth               ReferenceNet
    denoising_unet{_acc}.pth         denoiser minus motion modules
    motion_module{_acc}.pth          the 21 motion modules
    face_locator.pth                 face locator
    audio_processor/whisper_tiny.pt  {"dims", "model_state_dict"}: Whisper; only encoder.* is used
    sd-vae-ft-mse/diffusion_pytorch_model.safetensors   VAE (diffusers layout)

`.pth` files are read with `torch.load(weights_only=True, mmap=True)`: never unpickles objects.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from engine.config import ModelConfig
from engine.errors import InputError

WHISPER_GROUP = "whisper_tiny.pt:model_state_dict"
VAE_GROUP = "sd-vae-ft-mse/diffusion_pytorch_model.safetensors"


@dataclass(frozen=True)
class WeightGroup:
    """One checkpoint file: which module it fills and how its keys map to the module's keys."""

    name: str  # group name in the manifest (EchoMimic's file name)
    component: str  # attribute of the model bundle it loads into
    file_stem: str  # path inside the weights directory, without suffix
    suffixes: tuple[str, ...]
    key_prefix: str = ""  # prefix the file adds to the module's keys (whisper: "encoder.")
    selects: Callable[[str], bool] = staticmethod(lambda key: True)  # which module keys it holds

    def file_candidates(self, root: Path) -> list[Path]:
        return [root / f"{self.file_stem}{s}" for s in self.suffixes]


def weight_groups(cfg: ModelConfig) -> list[WeightGroup]:
    v = cfg.weights_variant
    motion = lambda key: ".motion_modules." in key  # noqa: E731
    return [
        WeightGroup("reference_unet.pth", "reference_net", "reference_unet", (".safetensors", ".pth")),
        WeightGroup("denoising_unet.pth", "denoiser", f"denoising_unet{v}", (".safetensors", ".pth"),
                    selects=lambda key: not motion(key)),
        WeightGroup("motion_module.pth", "denoiser", f"motion_module{v}", (".safetensors", ".pth"),
                    selects=motion),
        WeightGroup("face_locator.pth", "face_locator", "face_locator", (".safetensors", ".pth")),
        WeightGroup(WHISPER_GROUP, "audio_encoder", "audio_processor/whisper_tiny", (".safetensors", ".pt"),
                    key_prefix="encoder."),
        WeightGroup(VAE_GROUP, "vae", "sd-vae-ft-mse/diffusion_pytorch_model", (".safetensors", ".bin")),
    ]


def shapes_of(module: torch.nn.Module) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in module.state_dict().items()}


def manifest(cfg: ModelConfig, modules: dict[str, torch.nn.Module]) -> dict:
    """{group name: {key: shape}} for the preset, keys as stored in the files."""
    out: dict = {
        "_about": f"livehead preset {cfg.name}: state-dict keys and shapes per checkpoint file "
                  f"(denoiser/motion files carry the suffix {cfg.weights_variant!r} on disk)",
    }
    for g in weight_groups(cfg):
        shapes = shapes_of(modules[g.component])
        out[g.name] = {g.key_prefix + k: s for k, s in shapes.items() if g.selects(k)}
    return out


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of one checkpoint file; `.pth/.pt/.bin` through the safe loader, memory-mapped."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        obj = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # noqa: BLE001 - any reader failure is a bad file for the user
        raise InputError(f"cannot read weights file {path}: {type(err).__name__}: {err}".splitlines()[0]) from err
    if isinstance(obj, dict) and "model_state_dict" in obj:
        obj = obj["model_state_dict"]
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise InputError(f"weights file {path} holds no state dict")
    return obj


def check_state_dict(found: dict[str, torch.Tensor], expected: dict[str, list[int]], where: Path) -> None:
    """Raise InputError naming the first missing, unexpected or mis-shaped key."""
    for key, shape in expected.items():
        if key not in found:
            raise InputError(f"{where}: missing key {key!r} (expected shape {shape})")
        if list(found[key].shape) != shape:
            raise InputError(
                f"{where}: key {key!r} has shape {list(found[key].shape)}, expected {shape}"
            )
    for key in found:
        if key not in expected:
            raise InputError(f"{where}: unexpected key {key!r}; is this file from another model or preset?")


def find_file(group: WeightGroup, root: Path) -> Path:
    for path in group.file_candidates(root):
        if path.is_file():
            return path
    names = " or ".join(str(p.relative_to(root)) for p in group.file_candidates(root))
    raise InputError(f"weights directory {root} is missing {names}")


def load_weights(cfg: ModelConfig, modules: dict[str, torch.nn.Module], root: Path,
                 dtype: torch.dtype = torch.float32) -> None:
    """Fill `modules` (built on any device, `meta` included) strictly from the files under `root`.

    Tensors are assigned (no second copy of the weights), cast to `dtype`.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"weights directory {root} does not exist")
    per_component: dict[str, dict[str, torch.Tensor]] = {}
    for g in weight_groups(cfg):
        path = find_file(g, root)
        raw = read_state_dict(path)
        module_shapes = shapes_of(modules[g.component])
        expected = {g.key_prefix + k: s for k, s in module_shapes.items() if g.selects(k)}
        if g.key_prefix:
            raw = {k: v for k, v in raw.items() if k.startswith(g.key_prefix)}
        check_state_dict(raw, expected, path)
        sd = per_component.setdefault(g.component, {})
        for k, v in raw.items():
            sd[k[len(g.key_prefix):]] = v.to(dtype) if v.is_floating_point() else v
    for component, sd in per_component.items():
        modules[component].load_state_dict(sd, strict=True, assign=True)

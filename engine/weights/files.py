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

`.pth` files are read with `torch.load(weights_only=True, mmap=True)`: never unpickles objects (legacy
non-zip files are read without mmap). A truncated or damaged file is an InputError naming it. VAE files
with diffusers' pre-0.14 attention names (`query/key/value/proj_attn`) load as `to_q/to_k/to_v/to_out.0`.
`convert_to_safetensors` rewrites a directory as checked fp16 `.safetensors` files (`livehead weights
convert`), which `find_file` then prefers.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from livehead.engine.common.errors import InputError
from livehead.engine.model.avatar_model import AvatarModel
from livehead.engine.model.config import ModelConfig

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
    selects: Callable[[str], bool] = staticmethod(lambda key: True)  # noqa: RUF009 - which module keys it holds; staticmethod keeps it unbound

    def file_candidates(self, root: Path) -> list[Path]:
        return [root / f"{self.file_stem}{s}" for s in self.suffixes]


MOTION_GENERATOR_GROUP = "motion_generator"


def weight_groups(cfg: ModelConfig) -> list[WeightGroup]:
    whisper = WeightGroup(WHISPER_GROUP, "audio_encoder", "audio_processor/whisper_tiny", (".safetensors", ".pt"),
                          key_prefix="encoder.")
    if cfg.motion is not None:  # the motion tier: its generator; Whisper-tiny may come from the tiny weights
        return [WeightGroup(MOTION_GENERATOR_GROUP, "generator", "motion_generator", (".safetensors",)), whisper]
    v = cfg.weights_variant
    motion = lambda key: ".motion_modules." in key
    return [
        WeightGroup("reference_unet.pth", "reference_net", "reference_unet", (".safetensors", ".pth")),
        WeightGroup("denoising_unet.pth", "denoiser", f"denoising_unet{v}", (".safetensors", ".pth"),
                    selects=lambda key: not motion(key)),
        WeightGroup("motion_module.pth", "denoiser", f"motion_module{v}", (".safetensors", ".pth"),
                    selects=motion),
        WeightGroup("face_locator.pth", "face_locator", "face_locator", (".safetensors", ".pth")),
        whisper,
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


_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's default (zip) format; older files are plain pickles


def _first_line(err: BaseException, limit: int = 160) -> str:
    """`Type: first sentence of the message`, one line, at most ~`limit` characters."""
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    if lines and lines[0].startswith("Weights only load failed"):
        # torch's weights_only refusal: the boilerplate is about trusting files; keep the actual reason
        lines = [line for line in lines[1:] if not line.startswith(("Please file", "Check the documentation"))] \
            or ["not a valid torch checkpoint"]
    text = lines[0] if lines else ""
    if len(text) > limit and ". " in text:
        text = text[: text.index(". ") + 1]
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def read_state_dict(path: Path, fix: str | None = None) -> dict[str, torch.Tensor]:
    """Tensors of one checkpoint file; `.pth/.pt/.bin` through the safe loader, memory-mapped.

    Legacy (pre-zip) torch files cannot be memory-mapped and are read whole. A truncated or damaged
    file raises InputError naming it; `fix` is the remedy appended to that message.
    """
    path = Path(path)
    fix = fix or "delete it and fetch it again (`livehead weights download PRESET --dir DIR`)"
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj = load_file(str(path))
        else:
            with open(path, "rb") as f:
                is_zip = f.read(4) == _ZIP_MAGIC
            obj = torch.load(str(path), map_location="cpu", weights_only=True, mmap=is_zip)
    except (PermissionError, IsADirectoryError) as err:
        raise InputError(f"cannot read weights file {path}: {_first_line(err)}") from err
    except Exception as err:
        if "Unsupported global" in str(err):
            raise InputError(f"weights file {path} holds pickled Python objects besides tensors, which the safe "
                             f"loader refuses ({_first_line(err)}); convert it to a plain state dict") from err
        why = "the file is empty" if path.is_file() and path.stat().st_size == 0 else _first_line(err)
        raise InputError(f"weights file {path} is corrupted or incomplete ({why}); {fix}") from err
    if isinstance(obj, dict) and "model_state_dict" in obj:
        obj = obj["model_state_dict"]
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise InputError(f"weights file {path} holds no state dict")
    for key, value in obj.items():
        if not isinstance(value, torch.Tensor):
            raise InputError(f"weights file {path}: entry {key!r} is a {type(value).__name__}, not a tensor")
    return obj


# Attention names of diffusers' old VAE `AttentionBlock` (checkpoints saved before diffusers 0.14,
# e.g. most `vae/diffusion_pytorch_model.*` files on the hub) -> the names this engine uses.
_LEGACY_VAE_ATTENTION = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


def _legacy_vae_keys(raw: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename old-style VAE attention keys (`...attentions.0.query.weight`) in place of new ones."""
    if not any(".attentions." in k and k.rsplit(".", 2)[-2] in _LEGACY_VAE_ATTENTION for k in raw):
        return raw
    out: dict[str, torch.Tensor] = {}
    for k, v in raw.items():
        parts = k.rsplit(".", 2)
        if ".attentions." in k and len(parts) == 3 and parts[1] in _LEGACY_VAE_ATTENTION:
            k = f"{parts[0]}.{_LEGACY_VAE_ATTENTION[parts[1]]}.{parts[2]}"
            if v.dim() == 4 and v.shape[2:] == (1, 1):  # 1x1 conv form -> linear
                v = v[:, :, 0, 0]
        out[k] = v
    return out


def group_state_dict(g: WeightGroup, path: Path, expected: dict[str, list[int]],
                     fix: str | None = None) -> dict[str, torch.Tensor]:
    """The checked tensors of group `g` read from `path`, keys as stored (whisper: with `encoder.`)."""
    raw = read_state_dict(path, fix)
    if g.key_prefix:
        raw = {k: v for k, v in raw.items() if k.startswith(g.key_prefix)}
    if g.name == VAE_GROUP:
        raw = _legacy_vae_keys(raw)
    check_state_dict(raw, expected, path)
    return raw


def _redownload_hint(cfg: ModelConfig, root: Path) -> str:
    if cfg.seeded_weights:
        return "delete it and save or copy it again"
    return f"delete it and run `livehead weights download {cfg.name} --dir {root}` again"


def _expected(g: WeightGroup, modules: dict[str, torch.nn.Module]) -> dict[str, list[int]]:
    return {g.key_prefix + k: s for k, s in shapes_of(modules[g.component]).items() if g.selects(k)}


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


def existing_file(group: WeightGroup, root: Path) -> Path | None:
    """The first of the group's candidate files present under root, or None."""
    return next((path for path in group.file_candidates(root) if path.is_file()), None)


def find_file(group: WeightGroup, root: Path) -> Path:
    path = existing_file(group, root)
    if path is not None:
        return path
    names = " or ".join(str(p.relative_to(root)) for p in group.file_candidates(root))
    raise InputError(f"weights directory {root} is missing {names}")


def load_weights(cfg: ModelConfig, modules: dict[str, torch.nn.Module], root: Path,
                 dtype: torch.dtype = torch.float32, groups: list[WeightGroup] | None = None) -> None:
    """Fill `modules` (built on any device, `meta` included) strictly from the files under `root`: every
    weight group of the preset, or only `groups`.

    Tensors are assigned (no second copy of the weights), cast to `dtype`.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"weights directory {root} does not exist")
    per_component: dict[str, dict[str, torch.Tensor]] = {}
    fix = _redownload_hint(cfg, root)
    for g in weight_groups(cfg) if groups is None else groups:
        path = find_file(g, root)
        raw = group_state_dict(g, path, _expected(g, modules), fix)
        sd = per_component.setdefault(g.component, {})
        for k, v in raw.items():
            sd[k[len(g.key_prefix):]] = v.to(dtype) if v.is_floating_point() else v
        del raw
    for component, sd in per_component.items():
        modules[component].load_state_dict(sd, strict=True, assign=True)


def convert_to_safetensors(cfg: ModelConfig, src: Path, dst: Path | None = None,
                           dtype: torch.dtype = torch.float16, progress: bool = True) -> list[Path]:
    """Rewrite every checkpoint file of `cfg` found under `src` as `<stem>.safetensors` (in `dst`, else in `src`).

    Each file keeps exactly the keys its group loads (whisper: `encoder.*` only, prefix kept), is checked
    against the preset's shapes and has its floating tensors cast to `dtype`. Files are processed one at a
    time and written atomically (temporary name, then rename), so an interruption never leaves a partial
    `.safetensors` that `find_file` would prefer over the original. Returns the written paths.
    """
    from safetensors.torch import save_file
    from tqdm import tqdm

    src = Path(src)
    dst = Path(dst) if dst is not None else src
    if not src.is_dir():
        raise InputError(f"weights directory {src} does not exist")
    if dst.exists() and not dst.is_dir():
        raise InputError(f"output {dst} exists and is not a directory")
    if not dtype.is_floating_point:
        raise InputError(f"convert needs a floating dtype, got {dtype}")
    with torch.device("meta"):
        modules = AvatarModel(cfg).components()
    groups = weight_groups(cfg)
    sources = [(g, find_file(g, src)) for g in groups]  # fail on a missing file before writing anything
    fix = _redownload_hint(cfg, src)
    written: list[Path] = []
    for g, path in tqdm(sources, desc="convert", unit="file", disable=not progress):
        raw = group_state_dict(g, path, _expected(g, modules), fix)
        tensors = {k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in raw.items()}
        del raw
        out = dst / f"{g.file_stem}.safetensors"
        tmp = out.with_name(f".{out.name}.partial")
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            save_file(tensors, str(tmp), metadata={"format": "pt", "livehead_group": g.name,
                                                   "livehead_preset": cfg.name, "source": path.name})
            os.replace(tmp, out)
        except OSError as err:
            tmp.unlink(missing_ok=True)
            raise InputError(f"cannot write {out}: {_first_line(err)}") from err
        finally:
            del tensors
        written.append(out)
    return written

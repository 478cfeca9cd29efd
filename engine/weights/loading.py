"""Where a preset's weights come from and how they fill its model (bundled, a folder, or seeded).

    model = load_model(ModelConfig.from_name("tiny"))                    # the shipped tiny weights
    model = load_model(ModelConfig.from_name("tiny"), weights_dir=SEEDED)  # seed-fixed random tiny
    model = load_model(cfg, weights_dir="weights/echomimic", device="cuda", dtype=torch.float16)
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import torch

from livehead.engine.common.errors import InputError
from livehead.engine.model.avatar_model import COMPONENT_SEEDS, AvatarModel, MotionModel, build_model
from livehead.engine.model.config import ModelConfig
from livehead.engine.model.init_weights import seeded_init_
from livehead.engine.model.vae import AutoencoderKL
from livehead.engine.weights.files import (
    VAE_GROUP,
    existing_file,
    load_weights,
    manifest,
    read_state_dict,
    weight_groups,
)

ENGINE_DIR = Path(__file__).resolve().parents[1]  # presets name their bundled weights relative to it
SEEDED = "seeded"  # --weights seeded: the seed-fixed random model, even where trained weights ship
BUNDLED_MARKER = "livehead.json"


def bundled_weights_dir(cfg: ModelConfig) -> Path | None:
    """The preset's weights shipped inside the package, or None when it ships none."""
    if not cfg.bundled_weights:
        return None
    path = ENGINE_DIR / cfg.bundled_weights
    return path if (path / BUNDLED_MARKER).is_file() else None


def resolve_weights(cfg: ModelConfig, weights_dir: str | Path | None) -> Path | None:
    """Where a preset's weights come from: `weights_dir`, else the shipped ones; None = seeded."""
    if weights_dir is not None and str(weights_dir) == SEEDED:
        if not cfg.seeded_weights:
            raise InputError(f"preset {cfg.name} has no seeded weights; pass --weights DIR")
        return None
    if weights_dir is not None:
        return Path(weights_dir)
    bundled = bundled_weights_dir(cfg)
    if bundled is not None or cfg.seeded_weights:
        return bundled
    raise InputError(f"preset {cfg.name} needs its weights: pass --weights DIR "
                     f"(EchoMimic v1 release layout; see the README)")


def with_reference_mix(cfg: ModelConfig, mix: float) -> ModelConfig:
    """cfg sampling with noise anchored on the reference by `mix` (`SamplerConfig.reference_mix`)."""
    if not isinstance(mix, (int, float)) or not 0.0 <= mix < 1.0:
        raise InputError(f"the reference mix must be a number in [0, 1), got {mix!r}")
    return replace(cfg, sampler=replace(cfg.sampler, reference_mix=float(mix)))


def weights_info(weights_dir: str | Path) -> dict:
    """The `livehead.json` object of a weights folder (what run made them, how to sample them); {} when the
    folder has none. InputError when it is not a JSON object."""
    info = Path(weights_dir) / BUNDLED_MARKER
    if not info.is_file():
        return {}
    try:
        data = json.loads(info.read_text())
    except ValueError as err:
        raise InputError(f"{info} is not a livehead.json object: {err}") from err
    if not isinstance(data, dict):
        raise InputError(f"{info} is not a livehead.json object: it holds a {type(data).__name__}")
    return data


def trained_sampling(cfg: ModelConfig, weights_dir: str | Path | None) -> ModelConfig:
    """cfg with the sampling its weights were trained for: the `reference_mix` their livehead.json records
    (weights without one, and the seeded model, were trained with plain noise: 0)."""
    path = resolve_weights(cfg, weights_dir)
    mix = weights_info(path).get("reference_mix", 0.0) if path is not None else 0.0
    try:
        return with_reference_mix(cfg, mix)
    except InputError as err:
        raise InputError(f"{Path(path) / BUNDLED_MARKER}: {err}") from err


def weights_label(cfg: ModelConfig, weights_dir: str | Path | None) -> str:
    """"seeded", "bundled" or the folder given: what a report says it ran."""
    path = resolve_weights(cfg, weights_dir)
    if path is None:
        return SEEDED
    return "bundled" if weights_dir is None else str(path)


def seeded_note(cfg: ModelConfig, weights_dir: str | Path | None) -> str | None:
    """The note front ends print when the run uses the seed-fixed random model, else None."""
    if resolve_weights(cfg, weights_dir) is not None:
        return None
    return (f"livehead: note: preset {cfg.name} runs its seeded weights (a seed-fixed random model): "
            f"the video shows the pipeline, not a talking face")


def weights_identity(cfg: ModelConfig, weights_dir: str | Path | None) -> str:
    """A cheap identity of the weights a run loads (an ONNX export records it to notice stale files):
    "seeded:PRESET", or sha256 over each file's relative path, size and modification time."""
    import hashlib

    path = resolve_weights(cfg, weights_dir)
    if path is None:
        return f"seeded:{cfg.name}"
    h = hashlib.sha256()
    for f in sorted(p for p in Path(path).rglob("*") if p.is_file()):
        st = f.stat()
        h.update(f"{f.relative_to(path)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def build_manifest(cfg: ModelConfig) -> dict:
    """The preset's checkpoint manifest, built on the `meta` device (no memory)."""
    with torch.device("meta"):
        model = build_model(cfg)
    return manifest(cfg, model.components())


def load_model(cfg: ModelConfig, weights_dir: str | Path | None = None, device: str | torch.device = "cpu",
               dtype: torch.dtype = torch.float32) -> AvatarModel:
    """Build the bundle and fill it (strictly) from `weights_dir`, else the preset's shipped weights, else
    seeded where the preset allows it; `weights_dir="seeded"` asks for the seeded model."""
    device = torch.device(device)
    cfg = trained_sampling(cfg, weights_dir)
    weights_dir = resolve_weights(cfg, weights_dir)
    if cfg.motion is not None:
        model = load_motion_model(cfg, weights_dir, dtype)
    elif weights_dir is None:
        model = AvatarModel(cfg)
        for name, module in model.components().items():
            seeded_init_(module, COMPONENT_SEEDS[name])
    else:
        with torch.device("meta"):
            model = AvatarModel(cfg)
        load_avatar_weights(cfg, model, Path(weights_dir), dtype=dtype)  # cast while loading: one copy
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)


def load_motion_model(cfg: ModelConfig, weights_dir: Path | None, dtype: torch.dtype) -> MotionModel:
    """The motion tier's generator from `weights_dir` (seeded when None) and its Whisper-tiny encoder from the
    same folder when it holds one, else from the tiny preset's shipped weights (one copy of Whisper on disk)."""
    if weights_dir is None:
        model = MotionModel(cfg)
        for name, module in model.components().items():
            seeded_init_(module, COMPONENT_SEEDS[name])
        return model
    generator, whisper = weight_groups(cfg)
    with torch.device("meta"):
        model = MotionModel(cfg)
    load_weights(cfg, {"generator": model.generator}, Path(weights_dir), dtype=dtype, groups=[generator])
    whisper_dir = Path(weights_dir) if existing_file(whisper, Path(weights_dir)) else shared_whisper_dir()
    load_weights(cfg, {"audio_encoder": model.audio_encoder}, whisper_dir, dtype=dtype, groups=[whisper])
    # buffers derived from the config (the sampler's ᾱ) are not in the file: rebuild them off the meta device
    model.generator.alphas_cumprod = MotionModel(cfg).generator.alphas_cumprod.to(dtype)
    return model


def shared_whisper_dir() -> Path:
    """The shipped weights folder that holds Whisper-tiny (the tiny preset's)."""
    path = bundled_weights_dir(ModelConfig.from_name("tiny"))
    if path is None:
        raise InputError("the shipped tiny weights (which hold Whisper-tiny) are missing: reinstall livehead")
    return path


def load_avatar_weights(cfg: ModelConfig, model: AvatarModel, root: Path, dtype: torch.dtype = torch.float32) -> None:
    """`engine.weights.load_weights` into `model`'s components, strictly, with one allowance: a VAE file
    saved before the preset's decoder took a reference image (tiny weights trained before it) loads into
    the plain layout. Its reference layers then keep their init, or become zeros on a model built on
    `meta`; either way their last convolutions are zero, so it decodes exactly as that plain decoder did."""
    modules, plain = model.components(), None
    if cfg.vae.reference_decoder:
        # a missing folder or file is left to load_weights, which names it
        path = existing_file(next(g for g in weight_groups(cfg) if g.name == VAE_GROUP), root)
        if path is not None and not any(".reference_" in k for k in read_state_dict(path)):
            with torch.device(next(model.vae.parameters()).device):
                plain = AutoencoderKL(replace(cfg.vae, reference_decoder=False))
            modules = {**modules, "vae": plain}
    load_weights(cfg, modules, root, dtype=dtype)
    if plain is None:
        return
    state = plain.state_dict()
    if next(model.vae.parameters()).is_meta:
        state.update({k: torch.zeros(v.shape, dtype=dtype) for k, v in model.vae.state_dict().items()
                      if ".reference_" in k})
        model.vae.load_state_dict(state, strict=True, assign=True)
    else:
        missing, unexpected = model.vae.load_state_dict(state, strict=False)
        assert not unexpected and all(".reference_" in k for k in missing), (missing, unexpected)



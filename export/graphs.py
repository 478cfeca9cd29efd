"""The exportable graphs: one small module per component, plain tensors in and out.

| component      | inputs                                                        | outputs                      |
|----------------|---------------------------------------------------------------|------------------------------|
| audio_encoder  | mel [1, n_mels, T]                                            | stack [1, T/2, L, C]         |
| vae_encoder    | pixels [1, 3, H, W] in [-1, 1]                                | latents [1, 4, H/8, W/8]     |
| face_locator   | mask [1, 1, H, W] in [0, 1]                                   | face [1, C0, H/8, W/8]       |
| reference      | ref_latents [1, 4, h, w]                                      | ref_k_i, ref_v_i (16 each)   |
| denoiser_uncond | the same without reference K/V (classifier-free guidance's unconditional branch) | v |
| denoiser       | sample [B, 4, F, h, w], timestep [B], audio_tokens [B, F, Ta, Ca], face_features [B, C0, h, w], ref_k_i / ref_v_i [B, Lr_i, C_i] | v [B, 4, F, h, w] |
| vae_decoder    | latents [N, 4, h, w] (+ reference [1, 3, 8h, 8w] with `cfg.vae.reference_decoder`) | frames [N, 3, 8h, 8w] in [0, 1] |

The motion tier exports audio_encoder and motion_generator (`motion_graph_specs`); its renderer is not learned.

Batch, frames, token counts and spatial sizes are dynamic axes, so one file serves every window size
and session batch. These are exactly the calls of `engine.model.Runners`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from livehead.engine.common.errors import InputError
from livehead.engine.model.avatar_model import AvatarModel, MotionModel
from livehead.engine.model.config import ModelConfig


class AudioEncoderGraph(nn.Module):
    def __init__(self, model: AvatarModel):
        super().__init__()
        self.encoder = model.audio_encoder

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        return self.encoder(mel)


class VAEEncoderGraph(nn.Module):
    def __init__(self, model: AvatarModel):
        super().__init__()
        self.vae = model.vae

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.vae.encode_mean(pixels)


class FaceLocatorGraph(nn.Module):
    def __init__(self, model: AvatarModel):
        super().__init__()
        self.locator = model.face_locator

    def forward(self, mask: torch.Tensor) -> torch.Tensor:
        return self.locator(mask)


class ReferenceGraph(nn.Module):
    """ReferenceNet bank → the denoiser's reference K/V, once per avatar."""

    def __init__(self, model: AvatarModel):
        super().__init__()
        self.reference_net = model.reference_net
        self.denoiser = model.denoiser

    def forward(self, ref_latents: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.denoiser.reference_kv(*self.reference_net(ref_latents))


class DenoiserGraph(nn.Module):
    def __init__(self, model: AvatarModel):
        super().__init__()
        self.denoiser = model.denoiser

    def forward(self, sample, timestep, audio_tokens, face_features, *reference_kv):
        return self.denoiser(sample, timestep, audio_tokens, face_features, *reference_kv)


class MotionGeneratorGraph(nn.Module):
    """The motion tier's generator with its motion prefix length fixed (the preset's motion_frames)."""

    def __init__(self, model: MotionModel):
        super().__init__()
        self.generator = model.generator
        self.known_frames = model.cfg.stream.motion_frames

    def forward(self, sample, timestep, audio_tokens, shape):
        return self.generator(sample, timestep, audio_tokens, shape, known_frames=self.known_frames)


class VAEDecoderGraph(nn.Module):
    def __init__(self, model: AvatarModel):
        super().__init__()
        self.vae = model.vae

    def forward(self, latents: torch.Tensor, *reference: torch.Tensor) -> torch.Tensor:
        return self.vae.decode_to_unit(latents, reference[0] if reference else None)


def decoder_feeds(cfg: ModelConfig, latents: torch.Tensor, reference: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """The exported vae_decoder's inputs. A graph exported with the reference input cannot decode
    without one: that is an error here, not a silently different picture."""
    if not cfg.vae.reference_decoder:
        return {"latents": latents}
    if reference is None:
        raise InputError(f"the {cfg.name} decoder takes the avatar's reference image (Avatar.decoder_reference)")
    return {"latents": latents, "reference": reference}


KV_NAMES = [f"ref_{kind}_{i}" for i in range(16) for kind in ("k", "v")]


@dataclass
class GraphSpec:
    """How to export one component: module, example inputs, names and dynamic axes."""

    name: str
    module: nn.Module
    inputs: tuple[torch.Tensor, ...]
    input_names: list[str]
    output_names: list[str]
    dynamic_axes: dict[str, dict[int, str]]


def motion_graph_specs(cfg: ModelConfig, model: MotionModel, batch: int = 1) -> list[GraphSpec]:
    """The motion tier's learned parts: Whisper-tiny and the motion generator (the renderer is not learned).

    motion_generator: sample [B, D, W, 1, 1], timestep [B], audio_tokens [B, W, Ta, Ca], shape [B, S, 1, 1]
    → v [B, D, W, 1, 1]; the motion prefix length is part of the graph, the window W = prefix + new frames
    is a dynamic axis, so one export serves any `StreamConfig.clip_frames`."""
    a, m, w = cfg.audio, cfg.motion, cfg.stream.window_frames
    gen = torch.Generator().manual_seed(0)

    def rand(*shape):
        return torch.randn(*shape, generator=gen)

    return [
        GraphSpec("audio_encoder", AudioEncoderGraph(model), (rand(1, a.n_mels, 200),), ["mel"], ["stack"],
                  {"mel": {2: "mel_frames"}, "stack": {1: "positions"}}),
        GraphSpec("motion_generator", MotionGeneratorGraph(model),
                  (rand(batch, m.motion_dim, w, 1, 1), torch.full((batch,), 999, dtype=torch.int64),
                   rand(batch, w, a.tokens_per_frame, a.n_state), rand(batch, m.shape_dim, 1, 1)),
                  ["sample", "timestep", "audio_tokens", "shape"], ["v"],
                  {"sample": {0: "batch", 2: "window"}, "timestep": {0: "batch"},
                   "audio_tokens": {0: "batch", 1: "window"}, "shape": {0: "batch"}, "v": {0: "batch", 2: "window"}}),
    ]


def graph_specs(cfg: ModelConfig, model: AvatarModel | MotionModel, frames: int | None = None, batch: int = 1,
                latent_hw: tuple[int, int] | None = None) -> list[GraphSpec]:
    """Export specs with example inputs at the preset's window shape (or the given one)."""
    if cfg.motion is not None:
        return motion_graph_specs(cfg, model, batch)
    frames = frames or cfg.stream.window_frames
    h, w = latent_hw or (cfg.latent_size, cfg.latent_size)
    down = cfg.vae.downscale
    c0 = cfg.unet.block_out_channels[0]
    a = cfg.audio
    gen = torch.Generator().manual_seed(0)

    def rand(*shape):
        return torch.randn(*shape, generator=gen)

    reference = (rand(1, 3, h * down, w * down).clamp(-1, 1),) if cfg.vae.reference_decoder else ()
    with torch.no_grad():
        kv = ReferenceGraph(model)(rand(1, 4, h, w))
    kv_batch = tuple(t.expand(batch, -1, -1).contiguous() for t in kv)
    spatial = {2: "height", 3: "width"}
    video = {0: "batch", 2: "frames", 3: "height", 4: "width"}
    denoiser_axes = {"sample": video, "timestep": {0: "batch"}, "audio_tokens": {0: "batch", 1: "frames"},
                     "face_features": {0: "batch", **spatial}, "v": video}
    return [
        GraphSpec("audio_encoder", AudioEncoderGraph(model), (rand(1, a.n_mels, 200),), ["mel"], ["stack"],
                  {"mel": {2: "mel_frames"}, "stack": {1: "positions"}}),
        GraphSpec("vae_encoder", VAEEncoderGraph(model), (rand(1, 3, h * down, w * down).clamp(-1, 1),),
                  ["pixels"], ["latents"], {"pixels": spatial, "latents": spatial}),
        GraphSpec("face_locator", FaceLocatorGraph(model), (rand(1, 1, h * down, w * down).sigmoid(),),
                  ["mask"], ["face"], {"mask": spatial, "face": spatial}),
        GraphSpec("reference", ReferenceGraph(model), (rand(1, 4, h, w),), ["ref_latents"], KV_NAMES,
                  {"ref_latents": spatial, **{n: {1: f"ref_tokens_{i // 2}"} for i, n in enumerate(KV_NAMES)}}),
        GraphSpec("denoiser", DenoiserGraph(model),
                  (rand(batch, 4, frames, h, w), torch.full((batch,), 999, dtype=torch.int64),
                   rand(batch, frames, a.tokens_per_frame, a.n_state), rand(batch, c0, h, w), *kv_batch),
                  ["sample", "timestep", "audio_tokens", "face_features", *KV_NAMES], ["v"],
                  {**denoiser_axes, **{n: {0: "batch", 1: f"ref_tokens_{i // 2}"} for i, n in enumerate(KV_NAMES)}}),
        GraphSpec("denoiser_uncond", DenoiserGraph(model),
                  (rand(batch, 4, frames, h, w), torch.full((batch,), 999, dtype=torch.int64),
                   torch.zeros(batch, frames, a.tokens_per_frame, a.n_state), torch.zeros(batch, c0, h, w)),
                  ["sample", "timestep", "audio_tokens", "face_features"], ["v"], denoiser_axes),
        GraphSpec("vae_decoder", VAEDecoderGraph(model), (rand(cfg.stream.clip_frames, 4, h, w), *reference),
                  ["latents", *(["reference"] if reference else [])], ["frames"],
                  {"latents": {0: "n", **spatial}, "frames": {0: "n", **spatial},
                   **({"reference": spatial} if reference else {})}),
    ]

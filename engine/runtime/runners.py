"""The `Runners` interface a session talks to, and its eager PyTorch backend.

    runners = TorchRunners(load_model(ModelConfig.from_name("tiny")))

The streaming session talks to the model only through `Runners`, so ONNX Runtime or TensorRT runners
(built in `export/`) drop in without the engine knowing about them.
"""

from __future__ import annotations

from typing import Protocol

import torch

from livehead.engine.common.errors import InputError
from livehead.engine.model.avatar_model import AvatarModel, MotionModel
from livehead.engine.model.config import ModelConfig
from livehead.engine.runtime.motion_runners import TorchMotionRunners


def resolve_device(name: str | None) -> torch.device:
    """"auto" / None → CUDA when present, else CPU; a clear error for an unusable device."""
    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise InputError(f"unknown device {name!r}; use cpu, cuda, cuda:N or auto") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {name!r} asked for, but this torch build sees no CUDA GPU; use --device cpu")
    return device



class Runners(Protocol):
    """What a session needs from a backend. Tensors live on the runner's device.

    audio_stack(mel [1, n_mels, T]) → [1, T/2, n_layer+1, n_state]
    encode_image(pixels [1, 3, S, S] in [-1, 1]) → latents [1, 4, s, s]
    face_features(mask [1, 1, S, S] in [0, 1]) → [1, C0, s, s]
    reference_kv(ref_latents [1, 4, s, s]) → 32 tensors (K, V per spatial transformer)
    denoise(sample [B, 4, F, s, s], timestep [B], audio [B, F, Ta, Ca], face [B, C0, s, s], kv) → v
    decode(latents [N, 4, s, s], reference [1, 3, S, S] | None) → frames [N, 3, S, S] in [0, 1]; the
        reference is the avatar's `decoder_reference`, needed when `cfg.vae.reference_decoder` (torch
        backends then decode without it, with the decoder's own drawing; exported ones refuse)
    """

    cfg: ModelConfig
    device: torch.device
    dtype: torch.dtype

    def audio_stack(self, mel: torch.Tensor) -> torch.Tensor: ...
    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor: ...
    def face_features(self, mask: torch.Tensor) -> torch.Tensor: ...
    def reference_kv(self, ref_latents: torch.Tensor) -> tuple[torch.Tensor, ...]: ...
    def denoise(self, sample, timestep, audio, face, kv: tuple[torch.Tensor, ...]) -> torch.Tensor: ...
    def decode(self, latents: torch.Tensor, reference: torch.Tensor | None = None) -> torch.Tensor: ...



class TorchRunners:
    """Eager PyTorch backend over an `AvatarModel`."""

    def __init__(self, model: AvatarModel):
        self.model = model
        self.cfg = model.cfg
        p = next(model.parameters())
        self.device, self.dtype = p.device, p.dtype
        # The VAE's full-resolution convolutions run ~30 % faster channels-last (oneDNN and cuDNN).
        model.vae.to(memory_format=torch.channels_last)

    def _in(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(self.device, self.dtype)

    @torch.inference_mode()
    def audio_stack(self, mel: torch.Tensor) -> torch.Tensor:
        return self.model.audio_encoder(self._in(mel)).float()

    @torch.inference_mode()
    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.vae.encode_mean(self._in(pixels)).float()

    @torch.inference_mode()
    def face_features(self, mask: torch.Tensor) -> torch.Tensor:
        return self.model.face_locator(self._in(mask))

    @torch.inference_mode()
    def reference_kv(self, ref_latents: torch.Tensor) -> tuple[torch.Tensor, ...]:
        bank = self.model.reference_net(self._in(ref_latents))
        return self.model.denoiser.reference_kv(*bank)

    @torch.inference_mode()
    def denoise(self, sample, timestep, audio, face, kv) -> torch.Tensor:
        t = timestep.to(self.device)
        return self.model.denoiser(self._in(sample), t, self._in(audio), self._in(face), *kv).float()

    @torch.inference_mode()
    def decode(self, latents: torch.Tensor, reference: torch.Tensor | None = None) -> torch.Tensor:
        z = self._in(latents).contiguous(memory_format=torch.channels_last)
        ref = None if reference is None else self._in(reference).contiguous(memory_format=torch.channels_last)
        return self.model.vae.decode_to_unit(z, ref).float().contiguous()



def guided_denoise(runners: Runners, x: torch.Tensor, t: int, tokens: torch.Tensor, face: torch.Tensor,
                   kv: tuple[torch.Tensor, ...], guidance: float) -> torch.Tensor:
    """One denoiser prediction with classifier-free guidance as EchoMimic builds it.

    Unconditional = zero audio, zero face-locator features and plain self-attention (no reference
    bank); v = u + g·(c − u). With g ≤ 1 only the conditional pass runs. Returns v on the CPU.
    """
    ts = torch.tensor([int(t)] * x.shape[0])
    v = runners.denoise(x, ts, tokens, face, kv).cpu()
    if guidance > 1.0:
        u = runners.denoise(x, ts, torch.zeros_like(tokens), torch.zeros_like(face), ()).cpu()
        v = u + guidance * (v - u)
    return v


def torch_runners(model: AvatarModel | MotionModel, **controls) -> Runners:
    """The eager PyTorch runner of a loaded model: `TorchRunners` for the pixel presets, `TorchMotionRunners`
    (generator + photo renderer) for the motion tier, which takes `controls` (expression, head_motion)."""
    if isinstance(model, MotionModel):
        return TorchMotionRunners(model, **controls)
    return TorchRunners(model)

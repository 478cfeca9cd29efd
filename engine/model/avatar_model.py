"""`AvatarModel`: every learned component of a preset, under the names the weight groups use.

    model = AvatarModel(ModelConfig.from_name("tiny"))   # random init; engine.weights.loading fills it
"""

from __future__ import annotations

from torch import nn

from livehead.engine.model.audio_encoder import WhisperEncoder
from livehead.engine.model.config import ModelConfig
from livehead.engine.model.face_locator import FaceLocator
from livehead.engine.model.motion_generator import MotionGenerator
from livehead.engine.model.unet import Denoiser, ReferenceNet
from livehead.engine.model.vae import AutoencoderKL

# Fixed seeds of the untrained presets' modules (deterministic "seeded weights").
COMPONENT_SEEDS = {"generator": 6, "reference_net": 1, "denoiser": 2, "face_locator": 3, "audio_encoder": 4, "vae": 5}



class AvatarModel(nn.Module):
    """All learned components of a preset, under the attribute names the weight groups use."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.reference_net = ReferenceNet(cfg.unet)
        self.denoiser = Denoiser(cfg.unet)
        self.face_locator = FaceLocator(cfg.face_locator, embedding_channels=cfg.unet.block_out_channels[0])
        self.audio_encoder = WhisperEncoder(cfg.audio)
        self.vae = AutoencoderKL(cfg.vae)

    def components(self) -> dict[str, nn.Module]:
        return dict(self.named_children())


class MotionModel(nn.Module):
    """The motion tier's learned components: the motion generator and the Whisper encoder it listens with."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.motion is None:
            raise ValueError(f"preset {cfg.name} is not a motion preset")
        self.cfg = cfg
        self.generator = MotionGenerator(cfg.motion, cfg.sampler)
        self.audio_encoder = WhisperEncoder(cfg.audio)

    def components(self) -> dict[str, nn.Module]:
        return dict(self.named_children())


def build_model(cfg: ModelConfig) -> AvatarModel | MotionModel:
    """The preset's modules with their random init: a pixel EMO model or the motion tier's."""
    return MotionModel(cfg) if cfg.motion is not None else AvatarModel(cfg)

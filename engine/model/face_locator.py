"""EchoMimic's face locator: a strided-conv encoder of the face-region mask (`face_locator.pth`).

    conv_in  : Conv cond -> c0, k3 p1, SiLU
    blocks.* : for each consecutive pair (c_i, c_{i+1}) of block_out_channels:
               Conv c_i -> c_i k3 p1, SiLU; Conv c_i -> c_{i+1} k3 p1 stride 2, SiLU
    conv_out : Conv c_last -> embedding_channels, k3 p1 (no activation)

With the real (16, 32, 96, 256) and 320 embedding channels this is the 16-key `face_locator.pth`. The
module is 2-D (EchoMimic's InflatedConv3d is a per-frame Conv2d): mask [B, 1, H, W] in [0, 1] ->
features [B, C0, H/8, W/8]. The caller adds them to `conv_in(latents)`, broadcast over frames.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from livehead.engine.model.config import FaceLocatorConfig

__all__ = ["FaceLocator"]


class FaceLocator(nn.Module):
    def __init__(self, cfg: FaceLocatorConfig | None = None, embedding_channels: int = 320) -> None:
        super().__init__()
        cfg = cfg if cfg is not None else FaceLocatorConfig()
        chans = tuple(cfg.block_out_channels)
        self.cfg = cfg
        self.embedding_channels = int(embedding_channels)
        self.conv_in = nn.Conv2d(cfg.conditioning_channels, chans[0], kernel_size=3, padding=1)
        blocks = []
        for c_in, c_out in zip(chans[:-1], chans[1:]):
            blocks.append(nn.Conv2d(c_in, c_in, kernel_size=3, padding=1))
            blocks.append(nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, stride=2))
        self.blocks = nn.ModuleList(blocks)
        self.conv_out = nn.Conv2d(chans[-1], self.embedding_channels, kernel_size=3, padding=1)

    @property
    def downscale(self) -> int:
        return 2 ** (len(self.cfg.block_out_channels) - 1)

    def forward(self, mask: torch.Tensor) -> torch.Tensor:
        x = F.silu(self.conv_in(mask))
        for block in self.blocks:
            x = F.silu(block(x))
        return self.conv_out(x)

"""AutoencoderKL in the Stable Diffusion layout (`stabilityai/sd-vae-ft-mse`).

Clean-room implementation whose state-dict keys are exactly the diffusers `AutoencoderKL` names, so a
diffusers checkpoint (`diffusion_pytorch_model.safetensors` / `.bin`) loads with `strict=True` and no
renaming table:

    encoder.conv_in, encoder.down_blocks.{i}.resnets.{j}.{norm1,conv1,norm2,conv2[,conv_shortcut]},
    encoder.down_blocks.{i}.downsamplers.0.conv (all but the last block), encoder.mid_block.{resnets.{0,1},
    attentions.0.{group_norm,to_q,to_k,to_v,to_out.0}}, encoder.conv_norm_out, encoder.conv_out,
    quant_conv, post_quant_conv,
    decoder.conv_in, decoder.mid_block..., decoder.up_blocks.{i}.resnets.{j} (layers_per_block + 1 each),
    decoder.up_blocks.{i}.upsamplers.0.conv (all but the last block), decoder.conv_norm_out, decoder.conv_out.

With `cfg.reference_decoder` (the tiny preset; a livehead extension, not in SD) the decoder also takes
the avatar's photo with its mouth blanked (`engine.face.blank_mouth`): `decoder.reference_encoder`
turns it into a feature pyramid, and before each up block (`decoder.reference_in.{i}`) and the output
(`decoder.reference_out`) a zero-initialised injection adds what it draws from [features, pyramid level].
The latents say where the head is and how the mouth moves; the photo gives the face's detail, so a
small decoder keeps a face it never saw in training. Without a reference those layers are skipped.

Every GroupNorm uses eps 1e-6 and `norm_num_groups` groups; the activation is SiLU. The latent scale
(0.18215) is applied here, the way EchoMimic's pipeline hard-codes it: `encode_mean` returns
posterior-mean x scale, `decode` divides by it first. Methods take and return plain tensors so the
module can be traced / exported to ONNX.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from livehead.engine.model.config import VAEConfig

VAE_NORM_EPS = 1e-6

__all__ = ["VAE_NORM_EPS", "AutoencoderKL"]


def _group_norm(groups: int, channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=groups, num_channels=channels, eps=VAE_NORM_EPS, affine=True)


class ResnetBlock(nn.Module):
    """norm1 -> SiLU -> conv1 -> norm2 -> SiLU -> conv2, plus the (optionally 1x1-projected) input."""

    def __init__(self, in_channels: int, out_channels: int, groups: int) -> None:
        super().__init__()
        self.norm1 = _group_norm(groups, in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1)
        self.norm2 = _group_norm(groups, out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, stride=1, padding=1)
        if in_channels != out_channels:
            self.conv_shortcut = nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=1, padding=0)
        else:
            self.conv_shortcut = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        skip = x if self.conv_shortcut is None else self.conv_shortcut(x)
        return skip + h


class SpatialSelfAttention(nn.Module):
    """Single-head self-attention over the H*W positions, with a residual connection.

    GroupNorm -> q/k/v linears (with biases) -> softmax(q k^T / sqrt(C)) v -> to_out.0 -> + input.
    """

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        self.group_norm = _group_norm(groups, channels)
        self.to_q = nn.Linear(channels, channels, bias=True)
        self.to_k = nn.Linear(channels, channels, bias=True)
        self.to_v = nn.Linear(channels, channels, bias=True)
        # A ModuleList so the key is `to_out.0` (diffusers keeps a dropout at index 1, which has no weights).
        self.to_out = nn.ModuleList([nn.Linear(channels, channels, bias=True)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        t = self.group_norm(x).reshape(b, c, h * w).transpose(1, 2)  # [B, HW, C]
        q = self.to_q(t).unsqueeze(1)  # [B, 1, HW, C]: one head of size C
        k = self.to_k(t).unsqueeze(1)
        v = self.to_v(t).unsqueeze(1)
        a = F.scaled_dot_product_attention(q, k, v).squeeze(1)  # scale = C ** -0.5
        a = self.to_out[0](a)
        return x + a.transpose(1, 2).reshape(b, c, h, w)


class MidBlock(nn.Module):
    """resnet -> attention -> resnet at constant width."""

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        # Registration order (attentions, then resnets) follows diffusers, so named_parameters() and
        # state_dict() iterate in the same order as a diffusers model.
        self.attentions = nn.ModuleList([SpatialSelfAttention(channels, groups)])
        self.resnets = nn.ModuleList([ResnetBlock(channels, channels, groups), ResnetBlock(channels, channels, groups)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.resnets[0](x)
        x = self.attentions[0](x)
        return self.resnets[1](x)


class Downsample(nn.Module):
    """Stride-2 3x3 conv after an asymmetric zero pad (right and bottom by one), no conv padding."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1), mode="constant", value=0.0))


class Upsample(nn.Module):
    """Nearest-neighbour x2, then a 3x3 conv."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, stride=1, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class DownEncoderBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, num_layers: int, groups: int, downsample: bool) -> None:
        super().__init__()
        self.resnets = nn.ModuleList(
            [ResnetBlock(in_channels if j == 0 else out_channels, out_channels, groups) for j in range(num_layers)]
        )
        self.downsamplers = nn.ModuleList([Downsample(out_channels)]) if downsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for resnet in self.resnets:
            x = resnet(x)
        if self.downsamplers is not None:
            for down in self.downsamplers:
                x = down(x)
        return x


class UpDecoderBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, num_layers: int, groups: int, upsample: bool) -> None:
        super().__init__()
        self.resnets = nn.ModuleList(
            [ResnetBlock(in_channels if j == 0 else out_channels, out_channels, groups) for j in range(num_layers)]
        )
        self.upsamplers = nn.ModuleList([Upsample(out_channels)]) if upsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for resnet in self.resnets:
            x = resnet(x)
        if self.upsamplers is not None:
            for up in self.upsamplers:
                x = up(x)
        return x


class ReferenceEncoder(nn.Module):
    """reference [B, 3, S, S] → features, finest first: [B, c0, S, S], [B, c1, S/2, S/2], ... (one per
    `block_out_channels` entry, so the coarsest is at the latent size)."""

    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        chans = tuple(cfg.block_out_channels)
        self.conv_in = nn.Conv2d(cfg.in_channels, chans[0], kernel_size=3, stride=1, padding=1)
        self.downs = nn.ModuleList(
            [nn.Conv2d(a, b, kernel_size=3, stride=2, padding=1) for a, b in zip(chans[:-1], chans[1:])])

    def forward(self, reference: torch.Tensor) -> list[torch.Tensor]:
        feats = [F.silu(self.conv_in(reference))]
        for down in self.downs:
            feats.append(F.silu(down(feats[-1])))
        return feats


class ReferenceInjection(nn.Module):
    """x [B, C, H, W] + conv3x3(SiLU(conv1x1([x, r]))) with r [B, Cr, H, W]; the last conv starts at
    zero, so a new reference path leaves a trained decoder's output unchanged until it learns."""

    def __init__(self, channels: int, reference_channels: int) -> None:
        super().__init__()
        self.mix = nn.Conv2d(channels + reference_channels, channels, kernel_size=1)
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, stride=1, padding=1)
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)

    def forward(self, x: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        return x + self.conv(F.silu(self.mix(torch.cat([x, r], dim=1))))


class Encoder(nn.Module):
    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        chans = tuple(cfg.block_out_channels)
        groups = cfg.norm_num_groups
        self.conv_in = nn.Conv2d(cfg.in_channels, chans[0], kernel_size=3, stride=1, padding=1)
        blocks = []
        prev = chans[0]
        for i, out in enumerate(chans):
            blocks.append(DownEncoderBlock(prev, out, cfg.layers_per_block, groups, downsample=i < len(chans) - 1))
            prev = out
        self.down_blocks = nn.ModuleList(blocks)
        self.mid_block = MidBlock(chans[-1], groups)
        self.conv_norm_out = _group_norm(groups, chans[-1])
        self.conv_out = nn.Conv2d(chans[-1], 2 * cfg.latent_channels, kernel_size=3, stride=1, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(x)
        for block in self.down_blocks:
            x = block(x)
        x = self.mid_block(x)
        return self.conv_out(F.silu(self.conv_norm_out(x)))


class Decoder(nn.Module):
    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        rev = tuple(reversed(cfg.block_out_channels))
        groups = cfg.norm_num_groups
        self.conv_in = nn.Conv2d(cfg.latent_channels, rev[0], kernel_size=3, stride=1, padding=1)
        blocks = []
        prev = rev[0]
        for i, out in enumerate(rev):
            blocks.append(UpDecoderBlock(prev, out, cfg.layers_per_block + 1, groups, upsample=i < len(rev) - 1))
            prev = out
        self.up_blocks = nn.ModuleList(blocks)
        # Registered after up_blocks, as in diffusers (parameter iteration order); it runs first.
        self.mid_block = MidBlock(rev[0], groups)
        self.conv_norm_out = _group_norm(groups, rev[-1])
        self.conv_out = nn.Conv2d(rev[-1], cfg.in_channels, kernel_size=3, stride=1, padding=1)
        self.reference_encoder = self.reference_in = self.reference_out = None
        if cfg.reference_decoder:
            ins = [rev[0], *rev[:-1]]  # each up block's input width; block i runs at level len - 1 - i
            self.reference_encoder = ReferenceEncoder(cfg)
            self.reference_in = nn.ModuleList([ReferenceInjection(c, r) for c, r in zip(ins, rev)])
            self.reference_out = ReferenceInjection(rev[-1], rev[-1])

    def forward(self, z: torch.Tensor, reference: torch.Tensor | None = None) -> torch.Tensor:
        """z [B, 4, h, w] → pixels; reference [1 or B, 3, 8h, 8w] in [-1, 1] when the decoder takes one."""
        feats = None
        if reference is not None and self.reference_encoder is not None:
            feats = self.reference_encoder(reference)[::-1]  # coarsest (latent size) first
            if feats[0].shape[0] != z.shape[0]:
                feats = [f.expand(z.shape[0], -1, -1, -1) for f in feats]
        x = self.conv_in(z)
        x = self.mid_block(x)
        for i, block in enumerate(self.up_blocks):
            if feats is not None:
                x = self.reference_in[i](x, feats[i])
            x = block(x)
        if feats is not None:
            x = self.reference_out(x, feats[-1])
        return self.conv_out(F.silu(self.conv_norm_out(x)))


class AutoencoderKL(nn.Module):
    """SD-layout KL autoencoder with diffusers key names.

    encode_mean(pixels [B,3,H,W] in [-1,1]) -> latents [B,4,H/8,W/8] (posterior mean x scaling_factor)
    decode(latents [B,4,h,w], reference [1|B,3,8h,8w] | None) -> pixels [B,3,8h,8w], raw (not clamped);
    `forward` is `decode`. The reference (mouth-blanked photo) only counts with `cfg.reference_decoder`.
    decode_to_unit(latents, reference) -> clamp(pixels / 2 + 0.5, 0, 1).
    """

    def __init__(self, cfg: VAEConfig | None = None) -> None:
        super().__init__()
        cfg = cfg if cfg is not None else VAEConfig()
        self.cfg = cfg
        self.scaling_factor = float(cfg.scaling_factor)
        self.latent_channels = int(cfg.latent_channels)
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.quant_conv = nn.Conv2d(2 * cfg.latent_channels, 2 * cfg.latent_channels, kernel_size=1)
        self.post_quant_conv = nn.Conv2d(cfg.latent_channels, cfg.latent_channels, kernel_size=1)

    @property
    def downscale(self) -> int:
        return self.cfg.downscale

    def encode_moments(self, pixels: torch.Tensor) -> torch.Tensor:
        """Posterior parameters [B, 2*latent, h, w]: mean then log-variance (unscaled)."""
        return self.quant_conv(self.encoder(pixels))

    def encode_mean(self, pixels: torch.Tensor) -> torch.Tensor:
        moments = self.encode_moments(pixels)
        return moments[:, : self.latent_channels] * self.scaling_factor

    def decode(self, latents: torch.Tensor, reference: torch.Tensor | None = None) -> torch.Tensor:
        return self.decoder(self.post_quant_conv(latents / self.scaling_factor), reference)

    def decode_to_unit(self, latents: torch.Tensor, reference: torch.Tensor | None = None) -> torch.Tensor:
        return torch.clamp(self.decode(latents, reference) / 2 + 0.5, 0.0, 1.0)

    def forward(self, latents: torch.Tensor, reference: torch.Tensor | None = None) -> torch.Tensor:
        return self.decode(latents, reference)

"""StyleGAN2 "clean" generator with spatial feature transforms: GFPGAN's decoder.

"Clean" means plain PyTorch layers (bilinear resampling, grouped convolutions) instead of
StyleGAN2's custom CUDA ops (sadtalker.md §3.11). Module and parameter names follow the
``stylegan_decoder.*`` keys of ``GFPGANv1.4.pth``.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


def stylegan_channels(channel_multiplier: int, narrow: float) -> dict[int, int]:
    """Feature width per resolution: 512 up to 32 px, then halving with the multiplier."""
    return {
        4: int(512 * narrow),
        8: int(512 * narrow),
        16: int(512 * narrow),
        32: int(512 * narrow),
        64: int(256 * channel_multiplier * narrow),
        128: int(128 * channel_multiplier * narrow),
        256: int(64 * channel_multiplier * narrow),
        512: int(32 * channel_multiplier * narrow),
        1024: int(16 * channel_multiplier * narrow),
    }


def noise_resolutions(out_size: int) -> list[int]:
    """Side of each StyleConv's noise map: 4, then two per resolution 8 .. out_size (§3.11)."""
    num_layers = (int(math.log2(out_size)) - 2) * 2 + 1
    return [2 ** ((i + 5) // 2) for i in range(num_layers)]


class NormStyleCode(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(torch.mean(x**2, dim=1, keepdim=True) + 1e-8)


class ModulatedConv2d(nn.Module):
    """Convolution whose weight is scaled per input channel by the style, optionally demodulated."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, num_style_feat: int,
                 demodulate: bool = True, upsample: bool = False, eps: float = 1e-8):
        super().__init__()
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.demodulate = demodulate
        self.upsample = upsample
        self.eps = eps
        self.modulation = nn.Linear(num_style_feat, in_channels, bias=True)
        self.weight = nn.Parameter(torch.zeros(1, out_channels, in_channels, kernel_size, kernel_size))

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[:2]
        weight = self.weight * self.modulation(style).view(b, 1, c, 1, 1)
        if self.demodulate:
            demod = torch.rsqrt(weight.pow(2).sum([2, 3, 4]) + self.eps)
            weight = weight * demod.view(b, self.out_channels, 1, 1, 1)
        weight = weight.view(b * self.out_channels, c, self.kernel_size, self.kernel_size)
        if self.upsample:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        h, w = x.shape[2:]
        # One grouped convolution runs every sample with its own modulated weight.
        out = F.conv2d(x.reshape(1, b * c, h, w), weight, padding=self.kernel_size // 2, groups=b)
        return out.view(b, self.out_channels, *out.shape[2:])


class StyleConv(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, num_style_feat: int, upsample: bool):
        super().__init__()
        self.modulated_conv = ModulatedConv2d(in_channels, out_channels, 3, num_style_feat,
                                              demodulate=True, upsample=upsample)
        self.weight = nn.Parameter(torch.zeros(1))  # noise strength
        self.bias = nn.Parameter(torch.zeros(1, out_channels, 1, 1))

    def forward(self, x: torch.Tensor, style: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        # The clean layers keep the activation gain as a sqrt(2) factor on the convolution.
        out = self.modulated_conv(x, style) * 2**0.5
        out = out + self.weight * noise
        out = out + self.bias
        return F.leaky_relu(out, 0.2)


class ToRGB(nn.Module):
    def __init__(self, in_channels: int, num_style_feat: int, upsample: bool):
        super().__init__()
        self.upsample = upsample
        self.modulated_conv = ModulatedConv2d(in_channels, 3, 1, num_style_feat, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x: torch.Tensor, style: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        out = self.modulated_conv(x, style) + self.bias
        if skip is not None:
            if self.upsample:
                skip = F.interpolate(skip, scale_factor=2, mode="bilinear", align_corners=False)
            out = out + skip
        return out


class ConstantInput(nn.Module):
    def __init__(self, channels: int, size: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1, channels, size, size))

    def forward(self, batch: int) -> torch.Tensor:
        return self.weight.repeat(batch, 1, 1, 1)


class StyleGAN2GeneratorCSFT(nn.Module):
    """The decoder, fed one latent per layer; SFT modulates half of each resolution's features.

    ``style_mlp`` is part of the checkpoint but never runs: GFPGAN's encoder emits latents
    directly (``input_is_latent=True``, §3.11).
    """

    def __init__(self, out_size: int, num_style_feat: int, num_mlp: int, channel_multiplier: int,
                 narrow: float):
        super().__init__()
        channels = stylegan_channels(channel_multiplier, narrow)
        mlp: list[nn.Module] = [NormStyleCode()]
        for _ in range(num_mlp):
            mlp += [nn.Linear(num_style_feat, num_style_feat), nn.LeakyReLU(0.2)]
        self.style_mlp = nn.Sequential(*mlp)

        self.constant_input = ConstantInput(channels[4], size=4)
        self.style_conv1 = StyleConv(channels[4], channels[4], num_style_feat, upsample=False)
        self.to_rgb1 = ToRGB(channels[4], num_style_feat, upsample=False)

        self.noises = nn.Module()
        for i, r in enumerate(noise_resolutions(out_size)):
            self.noises.register_buffer(f"noise{i}", torch.zeros(1, 1, r, r))

        self.style_convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        in_channels = channels[4]
        for level in range(3, int(math.log2(out_size)) + 1):
            out_channels = channels[2**level]
            self.style_convs.append(StyleConv(in_channels, out_channels, num_style_feat, upsample=True))
            self.style_convs.append(StyleConv(out_channels, out_channels, num_style_feat, upsample=False))
            self.to_rgbs.append(ToRGB(out_channels, num_style_feat, upsample=True))
            in_channels = out_channels

    def stored_noise(self) -> list[torch.Tensor]:
        return [getattr(self.noises, f"noise{i}") for i in range(len(self.style_convs) + 1)]

    def forward(self, latent: torch.Tensor, conditions: list[torch.Tensor],
                noise: list[torch.Tensor]) -> torch.Tensor:
        """``latent`` (B, L, F); ``conditions`` [scale, shift] per resolution from 8 px up."""
        out = self.constant_input(latent.shape[0])
        out = self.style_conv1(out, latent[:, 0], noise[0])
        skip = self.to_rgb1(out, latent[:, 1])
        i = 1
        for conv1, conv2, to_rgb in zip(self.style_convs[::2], self.style_convs[1::2], self.to_rgbs):
            out = conv1(out, latent[:, i], noise[i])
            # SFT on the second half of the channels only (sft_half=True in v1.4).
            same, sft = torch.split(out, out.size(1) // 2, dim=1)
            out = torch.cat([same, sft * conditions[i - 1] + conditions[i]], dim=1)
            out = conv2(out, latent[:, i + 1], noise[i + 1])
            skip = to_rgb(out, latent[:, i + 2], skip)
            i += 2
        return skip

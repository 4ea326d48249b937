"""GFPGANv1Clean: U-Net encoder + StyleGAN2 "clean" decoder with SFT (sadtalker.md §3.11).

Module names follow the keys of ``GFPGANv1.4.pth["params_ema"]``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .stylegan2_clean import StyleGAN2GeneratorCSFT, noise_resolutions, stylegan_channels


@dataclass(frozen=True)
class GFPGANConfig:
    """GFPGANer's 'clean' arch for v1.4 (§3.11). The v1.4 checkpoint layout also fixes
    ``input_is_latent=True``, ``different_w=True`` and ``sft_half=True``, which are therefore
    not options here."""

    out_size: int = 512
    num_style_feat: int = 512
    channel_multiplier: int = 2
    narrow: float = 1.0
    num_mlp: int = 8


class ResBlock(nn.Module):
    """Residual block that resamples by ``scale`` (0.5 or 2) between its two convolutions."""

    def __init__(self, in_channels: int, out_channels: int, scale: float):
        super().__init__()
        self.scale = scale
        self.conv1 = nn.Conv2d(in_channels, in_channels, 3, 1, 1)
        self.conv2 = nn.Conv2d(in_channels, out_channels, 3, 1, 1)
        self.skip = nn.Conv2d(in_channels, out_channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.leaky_relu(self.conv1(x), 0.2)
        out = F.interpolate(out, scale_factor=self.scale, mode="bilinear", align_corners=False)
        out = F.leaky_relu(self.conv2(out), 0.2)
        x = F.interpolate(x, scale_factor=self.scale, mode="bilinear", align_corners=False)
        return out + self.skip(x)


def _sft_branch(channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(channels, channels, 3, 1, 1), nn.LeakyReLU(0.2),
                         nn.Conv2d(channels, channels, 3, 1, 1))


class GFPGANv1Clean(nn.Module):
    def __init__(self, config: GFPGANConfig = GFPGANConfig()):
        super().__init__()
        self.config = config
        self.log_size = int(math.log2(config.out_size))
        # The U-Net runs at half the decoder's width, so its features match the SFT half.
        unet = stylegan_channels(config.channel_multiplier, config.narrow * 0.5)

        self.conv_body_first = nn.Conv2d(3, unet[config.out_size], 1)
        self.conv_body_down = nn.ModuleList()
        in_ch = unet[config.out_size]
        for level in range(self.log_size, 2, -1):
            self.conv_body_down.append(ResBlock(in_ch, unet[2 ** (level - 1)], 0.5))
            in_ch = unet[2 ** (level - 1)]
        self.final_conv = nn.Conv2d(in_ch, unet[4], 3, 1, 1)

        self.conv_body_up = nn.ModuleList()
        self.toRGB = nn.ModuleList()
        self.condition_scale = nn.ModuleList()
        self.condition_shift = nn.ModuleList()
        in_ch = unet[4]
        for level in range(3, self.log_size + 1):
            ch = unet[2**level]
            self.conv_body_up.append(ResBlock(in_ch, ch, 2))
            self.toRGB.append(nn.Conv2d(ch, 3, 1))
            self.condition_scale.append(_sft_branch(ch))
            self.condition_shift.append(_sft_branch(ch))
            in_ch = ch

        # different_w: one latent per decoder layer, 2 * log2(out_size) - 2 of them.
        self.num_latent = self.log_size * 2 - 2
        self.final_linear = nn.Linear(unet[4] * 4 * 4, self.num_latent * config.num_style_feat)
        self.stylegan_decoder = StyleGAN2GeneratorCSFT(
            config.out_size, config.num_style_feat, config.num_mlp, config.channel_multiplier, config.narrow)

    def forward(self, x: torch.Tensor, return_rgb: bool = False, randomize_noise: bool = True,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``x`` (B,3,S,S) RGB in [-1,1] -> (image (B,3,S,S), intermediate RGBs if ``return_rgb``).

        ``randomize_noise=False`` uses the checkpoint's noise buffers (the parity path);
        otherwise fresh N(0,1) maps are drawn from ``generator`` (§3.11, Decisions: seeded).
        """
        feat = F.leaky_relu(self.conv_body_first(x), 0.2)
        skips = []
        for block in self.conv_body_down:
            feat = block(feat)
            skips.insert(0, feat)
        feat = F.leaky_relu(self.final_conv(feat), 0.2)
        latent = self.final_linear(feat.flatten(1)).view(feat.shape[0], self.num_latent, -1)

        conditions: list[torch.Tensor] = []
        rgbs: list[torch.Tensor] = []
        for skip, up, scale, shift, to_rgb in zip(skips, self.conv_body_up, self.condition_scale,
                                                  self.condition_shift, self.toRGB):
            feat = up(feat + skip)
            conditions += [scale(feat), shift(feat)]
            if return_rgb:
                rgbs.append(to_rgb(feat))

        if randomize_noise:
            noise = draw_noise(self.config.out_size, x.shape[0], generator, x.device, x.dtype)
        else:
            noise = self.stylegan_decoder.stored_noise()
        return self.stylegan_decoder(latent, conditions, noise), rgbs


def draw_noise(out_size: int, batch: int, generator: torch.Generator | None,
               device: torch.device | str, dtype: torch.dtype) -> list[torch.Tensor]:
    """One N(0,1) map per StyleConv and sample, drawn sample by sample in layer order
    (noise0 .. noise14 for the first face, then the next), on the generator's device, so a
    seed gives the same faces whatever the batching and whichever device runs the net."""
    gen_device = generator.device if generator is not None else torch.device("cpu")
    sides = noise_resolutions(out_size)
    per_sample = [[torch.randn(1, 1, r, r, generator=generator, device=gen_device) for r in sides]
                  for _ in range(batch)]
    return [torch.cat([sample[layer] for sample in per_sample]).to(device=device, dtype=dtype)
            for layer in range(len(sides))]


def faces_to_tensor(faces_rgb_u8: np.ndarray) -> torch.Tensor:
    """(B,H,W,3) uint8 RGB -> (B,3,H,W) float32 in [-1,1]: ``(float32(u8 / 255.) - 0.5) / 0.5``
    as GFPGANer's img2tensor + normalize compute it (§5.3 of the parity README)."""
    x = torch.from_numpy((np.asarray(faces_rgb_u8) / 255.0).astype(np.float32)).permute(0, 3, 1, 2)
    return (x - 0.5) / 0.5


def tensor_to_faces(image: torch.Tensor) -> np.ndarray:
    """(B,3,H,W) in about [-1,1] -> (B,H,W,3) uint8: basicsr ``tensor2img``'s clamp, map and round."""
    x = (image.detach().float().cpu().clamp(-1, 1) + 1) / 2
    return torch.round(x * 255.0).to(torch.uint8).permute(0, 2, 3, 1).numpy()


@torch.no_grad()
def restore_face(net: GFPGANv1Clean, faces_rgb_u8: np.ndarray,
                 generator: torch.Generator | None = None) -> np.ndarray:
    """Restore aligned 512x512 faces, (B,H,W,3) uint8 RGB -> same shape uint8 RGB.

    With ``generator`` the StyleGAN noise is drawn from it (production, seeded per request);
    without, the checkpoint's stored noise is used (deterministic).
    """
    weight = net.conv_body_first.weight
    x = faces_to_tensor(faces_rgb_u8).to(device=weight.device, dtype=weight.dtype)
    image, _ = net(x, randomize_noise=generator is not None, generator=generator)
    return tensor_to_faces(image)

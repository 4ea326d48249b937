"""ParseNet: the PSFR-GAN face parser facexlib uses for the paste mask (sadtalker.md §3.10).

Module names follow the keys of ``parsing_parsenet.pth``. Output: 19-class logits and an
auxiliary RGB image, both at ``out_size``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


@dataclass(frozen=True)
class ParseNetConfig:
    """facexlib's ``ParseNet(in_size=512, out_size=512, parsing_ch=19)`` with its defaults."""

    in_size: int = 512
    out_size: int = 512
    min_feat_size: int = 32
    base_ch: int = 64
    parsing_ch: int = 19
    res_depth: int = 10
    ch_range: tuple[int, int] = (32, 256)


class BatchNormSlot(nn.Module):
    """Holds the BatchNorm under the ``norm.norm`` key path of the checkpoint."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x)


class ConvLayer(nn.Module):
    """Reflection-padded 3x3 conv; ``scale`` 'down' strides by 2, 'up' first doubles the size
    (nearest). With BN the conv has no bias; ``act`` is LeakyReLU(0.2)."""

    def __init__(self, in_channels: int, out_channels: int, scale: str = "none",
                 bn: bool = False, act: bool = False):
        super().__init__()
        self.scale = scale
        self.act = act
        self.conv2d = nn.Conv2d(in_channels, out_channels, 3, 2 if scale == "down" else 1, bias=not bn)
        self.norm = BatchNormSlot(out_channels) if bn else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.scale == "up":
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        out = self.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"))
        if self.norm is not None:
            out = self.norm(out)
        if self.act:
            out = F.leaky_relu(out, 0.2)
        return out


class ResidualBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, scale: str = "none"):
        super().__init__()
        # A projection shortcut (plain conv, bias, no norm) whenever shape or size changes.
        self.shortcut_func = None if scale == "none" and c_in == c_out else ConvLayer(c_in, c_out, scale)
        self.conv1 = ConvLayer(c_in, c_out, "up" if scale == "up" else "none", bn=True, act=True)
        self.conv2 = ConvLayer(c_out, c_out, "down" if scale == "down" else "none", bn=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.shortcut_func is None else self.shortcut_func(x)
        return identity + self.conv2(self.conv1(x))


class ParseNet(nn.Module):
    def __init__(self, config: ParseNetConfig = ParseNetConfig()):
        super().__init__()
        self.config = config
        lo, hi = config.ch_range

        def clip(c: int) -> int:
            return max(lo, min(c, hi))

        min_feat = min(config.in_size, config.min_feat_size)
        down_steps = int(math.log2(config.in_size // min_feat))
        up_steps = int(math.log2(config.out_size // min_feat))

        encoder: list[nn.Module] = [ConvLayer(3, config.base_ch)]
        head = config.base_ch
        for _ in range(down_steps):
            encoder.append(ResidualBlock(clip(head), clip(head * 2), "down"))
            head *= 2
        self.encoder = nn.Sequential(*encoder)
        self.body = nn.Sequential(*[ResidualBlock(clip(head), clip(head)) for _ in range(config.res_depth)])
        decoder = []
        for _ in range(up_steps):
            decoder.append(ResidualBlock(clip(head), clip(head // 2), "up"))
            head //= 2
        self.decoder = nn.Sequential(*decoder)
        self.out_img_conv = ConvLayer(clip(head), 3)
        self.out_mask_conv = ConvLayer(clip(head), config.parsing_ch)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` (B,3,S,S) RGB in [-1,1] -> (class logits (B,19,S,S), image (B,3,S,S))."""
        feat = self.encoder(x)
        x = self.decoder(feat + self.body(feat))
        return self.out_mask_conv(x), self.out_img_conv(x)


def parsenet_input(faces_rgb_u8: np.ndarray) -> torch.Tensor:
    """(B,S,S,3) uint8 RGB -> (B,3,S,S) float32 in [-1,1], as FaceRestoreHelper scales it:
    ``float32(u8) / 255``, then ``(x - 0.5) / 0.5``."""
    x = torch.from_numpy(np.asarray(faces_rgb_u8).astype(np.float32) / 255.0).permute(0, 3, 1, 2)
    return (x - 0.5) / 0.5


@torch.no_grad()
def parse_faces(net: ParseNet, faces_rgb_u8: np.ndarray) -> np.ndarray:
    """Per-pixel class (argmax of the logits), (B,S,S,3) uint8 RGB -> (B,S,S) uint8."""
    weight = net.out_mask_conv.conv2d.weight
    logits, _ = net(parsenet_input(faces_rgb_u8).to(device=weight.device, dtype=weight.dtype))
    return logits.argmax(dim=1).to(torch.uint8).cpu().numpy()

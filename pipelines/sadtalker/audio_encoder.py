"""The Wav2Lip audio encoder shared by ExpNet and PoseVAE (spec §3.3): (M, 1, 80, 16) -> (M, C).

Both networks carry their own copy of the weights; the layout is identical, so one builder
serves both (keys ``<i>.conv_block.{0,1}.*``).
"""
from __future__ import annotations

import torch
from torch import nn


class ConvBNReLU(nn.Module):
    """Conv2d + BatchNorm2d, plus the input when ``residual``, then ReLU (Wav2Lip ``Conv2d``)."""

    def __init__(self, cin: int, cout: int, kernel_size: int, stride, padding: int, residual: bool = False):
        super().__init__()
        self.conv_block = nn.Sequential(nn.Conv2d(cin, cout, kernel_size, stride, padding), nn.BatchNorm2d(cout))
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv_block(x)
        if self.residual:
            out = out + x
        return torch.relu(out)


def wav2lip_audio_encoder(channels: list[int]) -> nn.Sequential:
    """80x16 mel window -> (C, 1, 1): the strides (3,1), 3, (3,2) and a last unpadded 3x3 conv
    take 80x16 to 27x16, 9x6, 3x3 and 1x1; ``channels`` are the five stage widths."""
    c1, c2, c3, c4, c5 = channels
    return nn.Sequential(
        ConvBNReLU(1, c1, 3, 1, 1),
        ConvBNReLU(c1, c1, 3, 1, 1, residual=True),
        ConvBNReLU(c1, c1, 3, 1, 1, residual=True),
        ConvBNReLU(c1, c2, 3, (3, 1), 1),
        ConvBNReLU(c2, c2, 3, 1, 1, residual=True),
        ConvBNReLU(c2, c2, 3, 1, 1, residual=True),
        ConvBNReLU(c2, c3, 3, 3, 1),
        ConvBNReLU(c3, c3, 3, 1, 1, residual=True),
        ConvBNReLU(c3, c3, 3, 1, 1, residual=True),
        ConvBNReLU(c3, c4, 3, (3, 2), 1),
        ConvBNReLU(c4, c4, 3, 1, 1, residual=True),
        ConvBNReLU(c4, c5, 3, 1, 0),
        ConvBNReLU(c5, c5, 1, 1, 0),
    )

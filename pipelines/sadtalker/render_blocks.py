"""SadTalker-only face-renderer blocks: the keypoint detector's hourglass and anti-aliasing. The
face-vid2vid blocks shared with LivePortrait live in
pipelines/common/motion_blocks.py.

Module attribute names equal the upstream ones (``src/facerender/modules/util.py``) because they
are the checkpoint's key names. Upstream's SynchronizedBatchNorm behaves as plain BatchNorm in
eval mode and has the same keys (spec §3.9), so plain BatchNorm is used.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..common.motion_blocks import DownBlock2d, UpBlock3d, hourglass_channels


class KPHourglass(nn.Module):
    """2-D encoder, a 1x1 conv whose channels are re-read as (channels, depth), then a 3-D decoder."""

    def __init__(self, block_expansion: int, in_features: int, reshape_features: int, reshape_depth: int,
                 num_blocks: int, max_features: int):
        super().__init__()
        self.down_blocks = nn.Sequential()
        for i in range(num_blocks):
            self.down_blocks.add_module(f"down{i}", DownBlock2d(
                in_features if i == 0 else hourglass_channels(block_expansion, max_features, i),
                hourglass_channels(block_expansion, max_features, i + 1)))
        self.conv = nn.Conv2d(hourglass_channels(block_expansion, max_features, num_blocks), reshape_features,
                              kernel_size=1)
        self.up_blocks = nn.Sequential()
        for i in range(num_blocks):
            self.up_blocks.add_module(f"up{i}", UpBlock3d(
                hourglass_channels(block_expansion, max_features, num_blocks - i),
                hourglass_channels(block_expansion, max_features, num_blocks - i - 1)))
        self.reshape_depth = reshape_depth
        self.out_filters = hourglass_channels(block_expansion, max_features, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(self.down_blocks(x))
        b, c, h, w = out.shape
        return self.up_blocks(out.view(b, c // self.reshape_depth, self.reshape_depth, h, w))


def antialias_kernel_size(scale: float) -> int:
    """Side of the Gaussian anti-aliasing kernel for downscaling by ``scale``: sigma = (1/scale - 1)/2,
    side 2 round(4 sigma) + 1 (13 for the official 1/4)."""
    sigma = (1 / scale - 1) / 2
    return 2 * round(sigma * 4) + 1


class AntiAliasInterpolation2d(nn.Module):
    """Depthwise Gaussian blur with zero padding, then every ``1/scale``-th pixel.

    The kernel is the checkpoint buffer ``weight`` (spec §3.6: loaded, never recomputed), so it
    starts empty here. The padding is ``ka`` before and ``kb`` after, as upstream computes them
    for odd and even kernels. Striding the convolution gives exactly the pixels upstream keeps
    from the full-resolution result.
    """

    def __init__(self, channels: int, scale: float):
        super().__init__()
        size = antialias_kernel_size(scale)
        self.ka = size // 2
        self.kb = self.ka - 1 if size % 2 == 0 else self.ka
        self.register_buffer("weight", torch.zeros(channels, 1, size, size))
        self.groups = channels
        self.step = int(1 / scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.pad(x, (self.ka, self.kb, self.ka, self.kb))
        return F.conv2d(out, self.weight, groups=self.groups, stride=self.step)

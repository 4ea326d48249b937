"""AdaptiveWing FAN: stacked hourglasses with CoordConv and boundary channels, 98 WFLW
landmarks (SadTalker ``src/face3d/util/my_awing_arch.py``; sadtalker.md §3.10).

Module names follow the keys of ``alignment_WFLW_4HG.pth["state_dict"]``. The input is a
256x256 BGR crop in [0,1]; every hourglass predicts 98 landmark heatmaps plus one boundary
map at 64x64.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

INPUT_SIZE = 256
HEATMAP_SIZE = 64


@dataclass(frozen=True)
class FANConfig:
    """``FAN(num_modules=4, num_landmarks=98)``; ``num_features`` is the hourglass width the
    upstream code hard-codes (256); the stem runs at 1/4 and 1/2 of it."""

    num_modules: int = 4
    num_landmarks: int = 98
    num_features: int = 256
    hourglass_depth: int = 4


def coordinate_maps(size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """CoordConv channels (1,1,size,size): the first varies along rows, the second along
    columns, both in [-1,1]; the third is their radius divided by its maximum."""
    ramp = torch.arange(size, dtype=torch.float32) / (size - 1) * 2 - 1
    rows = ramp.view(1, 1, size, 1).expand(1, 1, size, size)
    cols = ramp.view(1, 1, 1, size).expand(1, 1, size, size)
    radius = torch.sqrt(rows.pow(2) + cols.pow(2))
    return rows, cols, radius / radius.max()


class CoordConv(nn.Module):
    """Appends coordinate maps (and, given a previous heatmap stack, the coordinates masked
    to where its boundary map exceeds 0.05) before a convolution."""

    def __init__(self, size: int, in_channels: int, with_boundary: bool, out_channels: int,
                 kernel_size: int, stride: int = 1, padding: int = 0):
        super().__init__()
        self.size = size
        self.conv = nn.Conv2d(in_channels + 3 + (2 if with_boundary else 0), out_channels,
                              kernel_size, stride, padding)

    def forward(self, x: torch.Tensor, heatmap: torch.Tensor | None = None):
        """-> (conv output, the last two appended channels), as upstream returns them."""
        b = x.shape[0]
        rows, cols, radius = (t.to(device=x.device, dtype=x.dtype).expand(b, -1, -1, -1)
                              for t in coordinate_maps(self.size))
        channels = [x, rows, cols, radius]
        if heatmap is not None:
            boundary = torch.clamp(heatmap[:, -1:], 0.0, 1.0) > 0.05
            channels += [torch.where(boundary, rows, torch.zeros_like(rows)),
                         torch.where(boundary, cols, torch.zeros_like(cols))]
        ret = torch.cat(channels, dim=1)
        return self.conv(ret), ret[:, -2:]


def conv3x3(in_planes: int, out_planes: int) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, 3, 1, 1, bias=False)


class ConvBlock(nn.Module):
    """Pre-activation block whose three 3x3 convs (out/2, out/4, out/4) are concatenated."""

    def __init__(self, in_planes: int, out_planes: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = conv3x3(in_planes, out_planes // 2)
        self.bn2 = nn.BatchNorm2d(out_planes // 2)
        self.conv2 = conv3x3(out_planes // 2, out_planes // 4)
        self.bn3 = nn.BatchNorm2d(out_planes // 4)
        self.conv3 = conv3x3(out_planes // 4, out_planes // 4)
        self.downsample = None
        if in_planes != out_planes:
            self.downsample = nn.Sequential(nn.BatchNorm2d(in_planes), nn.ReLU(),
                                            nn.Conv2d(in_planes, out_planes, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out1 = self.conv1(F.relu(self.bn1(x)))
        out2 = self.conv2(F.relu(self.bn2(out1)))
        out3 = self.conv3(F.relu(self.bn3(out2)))
        residual = x if self.downsample is None else self.downsample(x)
        return torch.cat([out1, out2, out3], dim=1) + residual


class HourGlass(nn.Module):
    """CoordConv, then a recursive hourglass of ``depth`` levels (avg-pool down, nearest up)."""

    def __init__(self, depth: int, features: int, first: bool):
        super().__init__()
        self.depth = depth
        # The first hourglass has no previous heatmaps, so no boundary channels.
        self.coordconv = CoordConv(HEATMAP_SIZE, features, not first, features, 1)
        for level in range(depth, 0, -1):
            self.add_module(f"b1_{level}", ConvBlock(features, features))
            self.add_module(f"b2_{level}", ConvBlock(features, features))
            self.add_module(f"b3_{level}", ConvBlock(features, features))
        self.add_module("b2_plus_1", ConvBlock(features, features))

    def _level(self, level: int, x: torch.Tensor) -> torch.Tensor:
        up = self._modules[f"b1_{level}"](x)
        low = self._modules[f"b2_{level}"](F.avg_pool2d(x, 2, stride=2))
        low = self._level(level - 1, low) if level > 1 else self._modules["b2_plus_1"](low)
        low = self._modules[f"b3_{level}"](low)
        return up + F.interpolate(low, scale_factor=2, mode="nearest")

    def forward(self, x: torch.Tensor, heatmap: torch.Tensor | None):
        x, boundary_channels = self.coordconv(x, heatmap)
        return self._level(self.depth, x), boundary_channels


class FAN(nn.Module):
    def __init__(self, config: FANConfig = FANConfig()):
        super().__init__()
        self.config = config
        f = config.num_features
        heatmaps = config.num_landmarks + 1
        self.conv1 = CoordConv(INPUT_SIZE, 3, False, f // 4, 7, stride=2, padding=3)
        self.bn1 = nn.BatchNorm2d(f // 4)
        self.conv2 = ConvBlock(f // 4, f // 2)
        self.conv3 = ConvBlock(f // 2, f // 2)
        self.conv4 = ConvBlock(f // 2, f)
        for i in range(config.num_modules):
            self.add_module(f"m{i}", HourGlass(config.hourglass_depth, f, first=i == 0))
            self.add_module(f"top_m_{i}", ConvBlock(f, f))
            self.add_module(f"conv_last{i}", nn.Conv2d(f, f, 1))
            self.add_module(f"bn_end{i}", nn.BatchNorm2d(f))
            self.add_module(f"l{i}", nn.Conv2d(f, heatmaps, 1))
            if i < config.num_modules - 1:
                self.add_module(f"bl{i}", nn.Conv2d(f, f, 1))
                self.add_module(f"al{i}", nn.Conv2d(heatmaps, f, 1))

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """``x`` (B,3,256,256) BGR/255 -> (per hourglass: heatmaps (B,99,64,64),
        per hourglass: the two channels last appended by its CoordConv (B,2,64,64))."""
        x, _ = self.conv1(x)
        x = F.relu(self.bn1(x))
        x = F.avg_pool2d(self.conv2(x), 2, stride=2)
        previous = self.conv4(self.conv3(x))

        outputs, boundaries = [], []
        heatmaps = None
        for i in range(self.config.num_modules):
            hg, boundary = self._modules[f"m{i}"](previous, heatmaps)
            ll = self._modules[f"top_m_{i}"](hg)
            ll = F.relu(self._modules[f"bn_end{i}"](self._modules[f"conv_last{i}"](ll)))
            heatmaps = self._modules[f"l{i}"](ll)
            outputs.append(heatmaps)
            boundaries.append(boundary)
            if i < self.config.num_modules - 1:
                previous = previous + self._modules[f"bl{i}"](ll) + self._modules[f"al{i}"](heatmaps)
        return outputs, boundaries

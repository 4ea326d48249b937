"""Building blocks shared by the LivePortrait networks (spec expression-editor.md §2.1, §2.3).

Attribute names (``conv``, ``norm``, ``conv1`` …) are the upstream state-dict names, so official
checkpoints load without renaming.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SameBlock2d(nn.Module):
    """Conv2d k3 → BatchNorm2d → ReLU (or LeakyReLU 0.01), resolution kept."""

    def __init__(self, in_features: int, out_features: int, lrelu: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm2d(out_features, affine=True)
        self.lrelu = lrelu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.norm(self.conv(x))
        # W's `third` uses torch's default LeakyReLU slope 0.01 (§2.3).
        return F.leaky_relu(out, 0.01) if self.lrelu else F.relu(out)


class DownBlock2d(nn.Module):
    """Conv2d k3 → BatchNorm2d → ReLU → AvgPool 2×2."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm2d(out_features, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(F.relu(self.norm(self.conv(x))), kernel_size=2)


class ResBlock3d(nn.Module):
    """Pre-activation residual block: BN3d → ReLU → Conv3d → BN3d → ReLU → Conv3d, + identity."""

    def __init__(self, features: int):
        super().__init__()
        self.conv1 = nn.Conv3d(features, features, kernel_size=3, padding=1)
        self.conv2 = nn.Conv3d(features, features, kernel_size=3, padding=1)
        self.norm1 = nn.BatchNorm3d(features, affine=True)
        self.norm2 = nn.BatchNorm3d(features, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.norm1(x)))
        out = self.conv2(F.relu(self.norm2(out)))
        return out + x


class DownBlock3d(nn.Module):
    """Conv3d k3 → BatchNorm3d → ReLU → AvgPool (1,2,2): H and W halve, depth is kept."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.conv = nn.Conv3d(in_features, out_features, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm3d(out_features, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.norm(self.conv(x)))
        # avg_pool3d (1,2,2) as avg_pool2d over C·D slices: bit-identical in float32, and unlike
        # avg_pool3d it has float16/bfloat16 CPU kernels.
        b, c, d, h, w = out.shape
        return F.avg_pool2d(out.reshape(b, c * d, h, w), kernel_size=2).view(b, c, d, h // 2, w // 2)


class UpBlock3d(nn.Module):
    """Nearest upsampling ×(1,2,2) → Conv3d k3 → BatchNorm3d → ReLU."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.conv = nn.Conv3d(in_features, out_features, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm3d(out_features, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.interpolate(x, scale_factor=(1, 2, 2))
        return F.relu(self.norm(self.conv(out)))


def hourglass_channels(block_expansion: int, max_features: int, level: int) -> int:
    """Channels after encoder level ``level`` (0 = the input side) of the 3-D U-Net (§2.3 step 7)."""
    return min(max_features, block_expansion * (2 ** level))


class HourglassEncoder(nn.Module):
    def __init__(self, block_expansion: int, in_features: int, num_blocks: int, max_features: int):
        super().__init__()
        self.down_blocks = nn.ModuleList(
            DownBlock3d(in_features if i == 0 else hourglass_channels(block_expansion, max_features, i),
                        hourglass_channels(block_expansion, max_features, i + 1))
            for i in range(num_blocks)
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = [x]
        for block in self.down_blocks:
            outs.append(block(outs[-1]))
        return outs


class HourglassDecoder(nn.Module):
    def __init__(self, block_expansion: int, in_features: int, num_blocks: int, max_features: int):
        super().__init__()
        up_blocks = []
        for i in reversed(range(num_blocks)):
            # The deepest block sees only the bottleneck; the others see [upsampled, skip].
            width = hourglass_channels(block_expansion, max_features, i + 1)
            in_filters = width if i == num_blocks - 1 else 2 * width
            up_blocks.append(UpBlock3d(in_filters, hourglass_channels(block_expansion, max_features, i)))
        self.up_blocks = nn.ModuleList(up_blocks)
        self.out_filters = block_expansion + in_features
        self.conv = nn.Conv3d(self.out_filters, self.out_filters, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm3d(self.out_filters, affine=True)

    def forward(self, skips: list[torch.Tensor]) -> torch.Tensor:
        out = skips[-1]
        for block, skip in zip(self.up_blocks, reversed(skips[:-1])):
            out = torch.cat([block(out), skip], dim=1)
        return F.relu(self.norm(self.conv(out)))


class Hourglass(nn.Module):
    """3-D U-Net whose output has ``block_expansion + in_features`` channels (§2.3 step 7)."""

    def __init__(self, block_expansion: int, in_features: int, num_blocks: int, max_features: int):
        super().__init__()
        self.encoder = HourglassEncoder(block_expansion, in_features, num_blocks, max_features)
        self.decoder = HourglassDecoder(block_expansion, in_features, num_blocks, max_features)
        self.out_filters = self.decoder.out_filters

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))

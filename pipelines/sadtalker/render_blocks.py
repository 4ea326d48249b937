"""Building blocks shared by SadTalker's face-renderer networks (face-vid2vid / SPADE design).

Module attribute names equal the upstream ones (``src/facerender/modules/util.py``) because they
are the checkpoint's key names. Upstream's SynchronizedBatchNorm behaves as plain BatchNorm in
eval mode and has the same keys (spec §3.9), so plain BatchNorm is used.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def make_coordinate_grid(spatial_size: tuple[int, int, int], dtype=torch.float32, device=None) -> torch.Tensor:
    """(d, h, w, 3) grid of (x, y, z) coordinates, each ``linspace(-1, 1)`` along its axis.

    The coordinates are computed as ``2 * (i / (n - 1)) - 1`` like upstream so they round the
    same way (the keypoint detector's expectation and the sparse motions depend on them).
    """
    d, h, w = spatial_size
    x = 2 * (torch.arange(w, dtype=dtype, device=device) / (w - 1)) - 1
    y = 2 * (torch.arange(h, dtype=dtype, device=device) / (h - 1)) - 1
    z = 2 * (torch.arange(d, dtype=dtype, device=device) / (d - 1)) - 1
    xx = x.view(1, 1, w).expand(d, h, w)
    yy = y.view(1, h, 1).expand(d, h, w)
    zz = z.view(d, 1, 1).expand(d, h, w)
    return torch.stack([xx, yy, zz], dim=3)


def keypoint_gaussians(kp: torch.Tensor, spatial_size: tuple[int, int, int], variance: float) -> torch.Tensor:
    """(b, k, d, h, w) isotropic Gaussians ``exp(-|grid - kp|^2 / (2 variance))`` around (b, k, 3) keypoints."""
    grid = make_coordinate_grid(spatial_size, kp.dtype, kp.device)
    diff = grid.view(1, 1, *grid.shape) - kp.view(*kp.shape[:2], 1, 1, 1, 3)
    return torch.exp(-0.5 * (diff ** 2).sum(-1) / variance)


class ResBottleneck(nn.Module):
    """Post-activation bottleneck (1x1, 3x3 with stride, 1x1) with a projected skip when strided."""

    def __init__(self, in_features: int, stride: int):
        super().__init__()
        mid = in_features // 4
        self.conv1 = nn.Conv2d(in_features, mid, kernel_size=1)
        self.conv2 = nn.Conv2d(mid, mid, kernel_size=3, padding=1, stride=stride)
        self.conv3 = nn.Conv2d(mid, in_features, kernel_size=1)
        self.norm1 = nn.BatchNorm2d(mid)
        self.norm2 = nn.BatchNorm2d(mid)
        self.norm3 = nn.BatchNorm2d(in_features)
        self.stride = stride
        if stride != 1:
            self.skip = nn.Conv2d(in_features, in_features, kernel_size=1, stride=stride)
            self.norm4 = nn.BatchNorm2d(in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.norm1(self.conv1(x)))
        out = F.relu(self.norm2(self.conv2(out)))
        out = self.norm3(self.conv3(out))
        if self.stride != 1:
            x = self.norm4(self.skip(x))
        return F.relu(out + x)


class ResBlock3d(nn.Module):
    """Pre-activation residual block (BN-ReLU-conv3d twice) that keeps the resolution."""

    def __init__(self, in_features: int, kernel_size: int = 3, padding: int = 1):
        super().__init__()
        self.conv1 = nn.Conv3d(in_features, in_features, kernel_size=kernel_size, padding=padding)
        self.conv2 = nn.Conv3d(in_features, in_features, kernel_size=kernel_size, padding=padding)
        self.norm1 = nn.BatchNorm3d(in_features)
        self.norm2 = nn.BatchNorm3d(in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.norm1(x)))
        out = self.conv2(F.relu(self.norm2(out)))
        return out + x


class SameBlock2d(nn.Module):
    """conv2d + BN + activation at constant resolution.

    ``lrelu`` selects ``nn.LeakyReLU()`` with its default slope 0.01 (the generator's ``third``
    block, spec §3.9 step 3), otherwise ReLU.
    """

    def __init__(self, in_features: int, out_features: int, kernel_size: int = 3, padding: int = 1,
                 lrelu: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, kernel_size=kernel_size, padding=padding)
        self.norm = nn.BatchNorm2d(out_features)
        self.ac = nn.LeakyReLU() if lrelu else nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ac(self.norm(self.conv(x)))


class DownBlock2d(nn.Module):
    """conv2d + BN + ReLU, then 2x2 average pooling."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm2d(out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(F.relu(self.norm(self.conv(x))), kernel_size=2)


class DownBlock3d(nn.Module):
    """conv3d + BN + ReLU, then average pooling over (1, 2, 2): the depth is kept."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.conv = nn.Conv3d(in_features, out_features, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm3d(out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool3d(F.relu(self.norm(self.conv(x))), kernel_size=(1, 2, 2))


class UpBlock3d(nn.Module):
    """Nearest-neighbour upsampling by (1, 2, 2), then conv3d + BN + ReLU."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.conv = nn.Conv3d(in_features, out_features, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm3d(out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.interpolate(x, scale_factor=(1, 2, 2), mode="nearest")
        return F.relu(self.norm(self.conv(out)))


def hourglass_channels(block_expansion: int, max_features: int, level: int) -> int:
    """Channels at hourglass level ``level`` (``block_expansion * 2**level``, capped)."""
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
    """Up blocks with U-Net concatenation; the last skip is the hourglass input itself, so the
    output has ``block_expansion + in_features`` channels, refined by one conv3d + BN + ReLU."""

    def __init__(self, block_expansion: int, in_features: int, num_blocks: int, max_features: int):
        super().__init__()
        self.up_blocks = nn.ModuleList(
            UpBlock3d((1 if i == num_blocks - 1 else 2) * hourglass_channels(block_expansion, max_features, i + 1),
                      hourglass_channels(block_expansion, max_features, i))
            for i in reversed(range(num_blocks))
        )
        self.out_filters = block_expansion + in_features
        self.conv = nn.Conv3d(self.out_filters, self.out_filters, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm3d(self.out_filters)

    def forward(self, skips: list[torch.Tensor]) -> torch.Tensor:
        out = skips[-1]
        for block, skip in zip(self.up_blocks, reversed(skips[:-1])):
            out = torch.cat([block(out), skip], dim=1)
        return F.relu(self.norm(self.conv(out)))


class Hourglass(nn.Module):
    def __init__(self, block_expansion: int, in_features: int, num_blocks: int, max_features: int):
        super().__init__()
        self.encoder = HourglassEncoder(block_expansion, in_features, num_blocks, max_features)
        self.decoder = HourglassDecoder(block_expansion, in_features, num_blocks, max_features)
        self.out_filters = self.decoder.out_filters

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


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


class SPADE(nn.Module):
    """Parameter-free instance norm, modulated by ``1 + gamma`` and ``beta`` predicted from a label map.

    ``hidden`` is 128 upstream (hard-coded); the label map is resized to x's size with nearest
    interpolation.
    """

    def __init__(self, norm_nc: int, label_nc: int, hidden: int):
        super().__init__()
        self.mlp_shared = nn.Sequential(nn.Conv2d(label_nc, hidden, kernel_size=3, padding=1), nn.ReLU())
        self.mlp_gamma = nn.Conv2d(hidden, norm_nc, kernel_size=3, padding=1)
        self.mlp_beta = nn.Conv2d(hidden, norm_nc, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor, segmap: torch.Tensor) -> torch.Tensor:
        normalized = F.instance_norm(x, eps=1e-5)
        segmap = F.interpolate(segmap, size=x.shape[2:], mode="nearest")
        actv = self.mlp_shared(segmap)
        return normalized * (1 + self.mlp_gamma(actv)) + self.mlp_beta(actv)


class SPADEResnetBlock(nn.Module):
    """SPADE residual block; a learned 1x1 shortcut (no bias) when the channel count changes.

    Upstream wraps ``conv_0``, ``conv_1`` and ``conv_s`` in spectral norm; the loader folds it into
    these plain convolutions (spec §3.9 step 4), so ``spectral_norm_names`` lists them for the
    loader and the tiny-checkpoint writer.
    """

    def __init__(self, fin: int, fout: int, label_nc: int, hidden: int):
        super().__init__()
        self.learned_shortcut = fin != fout
        fmiddle = min(fin, fout)
        self.conv_0 = nn.Conv2d(fin, fmiddle, kernel_size=3, padding=1)
        self.conv_1 = nn.Conv2d(fmiddle, fout, kernel_size=3, padding=1)
        self.norm_0 = SPADE(fin, label_nc, hidden)
        self.norm_1 = SPADE(fmiddle, label_nc, hidden)
        if self.learned_shortcut:
            self.conv_s = nn.Conv2d(fin, fout, kernel_size=1, bias=False)
            self.norm_s = SPADE(fin, label_nc, hidden)

    @property
    def spectral_norm_names(self) -> list[str]:
        return ["conv_0", "conv_1"] + (["conv_s"] if self.learned_shortcut else [])

    def forward(self, x: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        x_s = self.conv_s(self.norm_s(x, seg)) if self.learned_shortcut else x
        dx = self.conv_0(F.leaky_relu(self.norm_0(x, seg), 0.2))
        dx = self.conv_1(F.leaky_relu(self.norm_1(dx, seg), 0.2))
        return x_s + dx

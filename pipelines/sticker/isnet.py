"""IS-Net (DIS), the network of BRIA RMBG-1.4 (``briaai/RMBG-1.4 : model.pth``, sticker-and-character.md §2.1).

A U²-Net: six residual U-blocks (RSU-7 … RSU-4F) down, five up, one side output per level; only
the first side output (full resolution, sigmoid) is the mask. Module names follow the official
state dict (``stage1.rebnconvin.conv_s1.weight``, ``side1.weight``, …). ``width`` is 64 in the
official file; every channel count scales with it, so a tiny checkpoint keeps the key set.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

OFFICIAL_CONFIG = {"in_ch": 3, "out_ch": 1, "width": 64}


class ConvBNReLU(nn.Module):
    """3x3 convolution (dilated by ``dirate``), batch norm, ReLU (the reference's REBNCONV)."""

    def __init__(self, in_ch: int, out_ch: int, dirate: int = 1):
        super().__init__()
        self.conv_s1 = nn.Conv2d(in_ch, out_ch, 3, padding=dirate, dilation=dirate)
        self.bn_s1 = nn.BatchNorm2d(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn_s1(self.conv_s1(x)))


def upsample_like(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=like.shape[2:], mode="bilinear", align_corners=False)


def pool(x: torch.Tensor) -> torch.Tensor:
    return F.max_pool2d(x, 2, stride=2, ceil_mode=True)


class RSU(nn.Module):
    """Residual U-block of ``height`` levels: ``height`` − 1 encoder convolutions with pooling
    between them, a dilated bottom, a mirrored decoder, plus the input projection as residual."""

    def __init__(self, height: int, in_ch: int, mid_ch: int, out_ch: int):
        super().__init__()
        self.height = height
        self.rebnconvin = ConvBNReLU(in_ch, out_ch)
        self.rebnconv1 = ConvBNReLU(out_ch, mid_ch)
        for i in range(2, height):
            setattr(self, f"rebnconv{i}", ConvBNReLU(mid_ch, mid_ch))
        setattr(self, f"rebnconv{height}", ConvBNReLU(mid_ch, mid_ch, dirate=2))
        for i in range(height - 1, 1, -1):
            setattr(self, f"rebnconv{i}d", ConvBNReLU(2 * mid_ch, mid_ch))
        self.rebnconv1d = ConvBNReLU(2 * mid_ch, out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.rebnconvin(x)
        skips = [self.rebnconv1(residual)]
        for i in range(2, self.height):
            skips.append(getattr(self, f"rebnconv{i}")(pool(skips[-1])))
        hx = getattr(self, f"rebnconv{self.height}")(skips[-1])
        for i in range(self.height - 1, 0, -1):
            hx = getattr(self, f"rebnconv{i}d")(torch.cat([hx, skips[i - 1]], 1))
            if i > 1:
                hx = upsample_like(hx, skips[i - 2])
        return hx + residual


class RSU4F(nn.Module):
    """The bottom residual block: no pooling, dilations 1-2-4-8 and back."""

    def __init__(self, in_ch: int, mid_ch: int, out_ch: int):
        super().__init__()
        self.rebnconvin = ConvBNReLU(in_ch, out_ch)
        self.rebnconv1 = ConvBNReLU(out_ch, mid_ch)
        self.rebnconv2 = ConvBNReLU(mid_ch, mid_ch, dirate=2)
        self.rebnconv3 = ConvBNReLU(mid_ch, mid_ch, dirate=4)
        self.rebnconv4 = ConvBNReLU(mid_ch, mid_ch, dirate=8)
        self.rebnconv3d = ConvBNReLU(2 * mid_ch, mid_ch, dirate=4)
        self.rebnconv2d = ConvBNReLU(2 * mid_ch, mid_ch, dirate=2)
        self.rebnconv1d = ConvBNReLU(2 * mid_ch, out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.rebnconvin(x)
        hx1 = self.rebnconv1(residual)
        hx2 = self.rebnconv2(hx1)
        hx3 = self.rebnconv3(hx2)
        hx4 = self.rebnconv4(hx3)
        hx3d = self.rebnconv3d(torch.cat([hx4, hx3], 1))
        hx2d = self.rebnconv2d(torch.cat([hx3d, hx2], 1))
        return self.rebnconv1d(torch.cat([hx2d, hx1], 1)) + residual


class ISNet(nn.Module):
    def __init__(self, in_ch: int = 3, out_ch: int = 1, width: int = 64):
        super().__init__()
        w = width
        self.conv_in = nn.Conv2d(in_ch, w, 3, stride=2, padding=1)
        self.stage1 = RSU(7, w, w // 2, w)
        self.stage2 = RSU(6, w, w // 2, 2 * w)
        self.stage3 = RSU(5, 2 * w, w, 4 * w)
        self.stage4 = RSU(4, 4 * w, 2 * w, 8 * w)
        self.stage5 = RSU4F(8 * w, 4 * w, 8 * w)
        self.stage6 = RSU4F(8 * w, 4 * w, 8 * w)
        self.stage5d = RSU4F(16 * w, 4 * w, 8 * w)
        self.stage4d = RSU(4, 16 * w, 2 * w, 4 * w)
        self.stage3d = RSU(5, 8 * w, w, 2 * w)
        self.stage2d = RSU(6, 4 * w, w // 2, w)
        self.stage1d = RSU(7, 2 * w, w // 4, w)
        # Side outputs 2-6 only supervised training; their weights are in the file.
        for i, ch in enumerate((w, w, 2 * w, 4 * w, 8 * w, 8 * w), start=1):
            setattr(self, f"side{i}", nn.Conv2d(ch, out_ch, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised image → (B, 1, H, W) foreground probability."""
        hx1 = self.stage1(self.conv_in(x))
        hx2 = self.stage2(pool(hx1))
        hx3 = self.stage3(pool(hx2))
        hx4 = self.stage4(pool(hx3))
        hx5 = self.stage5(pool(hx4))
        hx6 = self.stage6(pool(hx5))
        hx5d = self.stage5d(torch.cat([upsample_like(hx6, hx5), hx5], 1))
        hx4d = self.stage4d(torch.cat([upsample_like(hx5d, hx4), hx4], 1))
        hx3d = self.stage3d(torch.cat([upsample_like(hx4d, hx3), hx3], 1))
        hx2d = self.stage2d(torch.cat([upsample_like(hx3d, hx2), hx2], 1))
        hx1d = self.stage1d(torch.cat([upsample_like(hx2d, hx1), hx1], 1))
        return torch.sigmoid(upsample_like(self.side1(hx1d), x))

"""Deep3DFaceRecon coefficient net (upstream ``ReconNetWrapper('resnet50')``, spec §3.2).

The shared torchvision-layout ResNet trunk (``backbone.*`` keys load unchanged) and global average
pool, without torchvision's fc, followed by seven 1x1 conv heads whose outputs are concatenated
to the 257 3DMM coefficients.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ..common.resnet import ResNetTrunk


class ReconNet(nn.Module):
    """(B, 3, 224, 224) RGB in [0, 1], no normalisation -> (B, 257) coefficients
    (id 0:80, exp 80:144, tex 144:224, angle 224:227, gamma 227:254, trans 254:257)."""

    def __init__(self, layers: list[int], width: int, head_dims: list[int]):
        super().__init__()
        self.backbone = ResNetTrunk(tuple(layers), width)
        self.final_layers = nn.ModuleList(
            nn.Conv2d(self.backbone.out_channels, d, kernel_size=1, bias=True) for d in head_dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = F.adaptive_avg_pool2d(self.backbone(x), 1)
        return torch.cat([head(feat) for head in self.final_layers], dim=1).flatten(1)

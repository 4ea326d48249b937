"""Appearance feature extractor F: a 256² RGB crop → the feature volume f_s (spec §2.1)."""
from __future__ import annotations

import torch
from torch import nn

from .util import DownBlock2d, ResBlock3d, SameBlock2d


class AppearanceFeatureExtractor(nn.Module):
    def __init__(self, image_channel: int, block_expansion: int, num_down_blocks: int,
                 max_features: int, reshape_channel: int, reshape_depth: int, num_resblocks: int):
        super().__init__()
        self.reshape_channel = reshape_channel
        self.reshape_depth = reshape_depth
        self.first = SameBlock2d(image_channel, block_expansion)
        widths = [min(max_features, block_expansion * (2 ** i)) for i in range(num_down_blocks + 1)]
        self.down_blocks = nn.ModuleList(
            DownBlock2d(widths[i], widths[i + 1]) for i in range(num_down_blocks)
        )
        self.second = nn.Conv2d(widths[-1], max_features, kernel_size=1)
        self.resblocks_3d = nn.Sequential()
        for i in range(num_resblocks):
            # Upstream's child names ("3dr0", …) are the checkpoint keys.
            self.resblocks_3d.add_module(f"3dr{i}", ResBlock3d(reshape_channel))

    def forward(self, source_image: torch.Tensor) -> torch.Tensor:
        out = self.first(source_image)
        for block in self.down_blocks:
            out = block(out)
        out = self.second(out)
        bs, _, h, w = out.shape
        # The 2-D channels are read as (C, D): 512 = 32 channels × 16 depth slices (§2.1).
        f_s = out.view(bs, self.reshape_channel, self.reshape_depth, h, w)
        return self.resblocks_3d(f_s)

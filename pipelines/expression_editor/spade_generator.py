"""SPADE decoder G: the warped feature → a 512² RGB image through a sigmoid (spec §2.4).

Spectral norm lives only in the checkpoint: the loader folds ``weight_orig / σ`` into plain
``weight`` tensors (§2.4, §7.4), so conv_0 / conv_1 / conv_s are ordinary convolutions here.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# Names of the convolutions that carry spectral norm in the official checkpoint (§2.4).
SPECTRAL_NORM_CONVS = ("conv_0", "conv_1", "conv_s")


class SPADE(nn.Module):
    """InstanceNorm(x)·(1 + γ(seg)) + β(seg), seg resized to x by nearest."""

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


class SPADEResBlock(nn.Module):
    def __init__(self, fin: int, fout: int, label_nc: int, hidden: int):
        super().__init__()
        fmid = min(fin, fout)
        self.conv_0 = nn.Conv2d(fin, fmid, kernel_size=3, padding=1)
        self.conv_1 = nn.Conv2d(fmid, fout, kernel_size=3, padding=1)
        self.norm_0 = SPADE(fin, label_nc, hidden)
        self.norm_1 = SPADE(fmid, label_nc, hidden)
        self.learned_shortcut = fin != fout
        if self.learned_shortcut:
            self.conv_s = nn.Conv2d(fin, fout, kernel_size=1, bias=False)
            self.norm_s = SPADE(fin, label_nc, hidden)

    def forward(self, x: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        shortcut = self.conv_s(self.norm_s(x, seg)) if self.learned_shortcut else x
        dx = self.conv_0(F.leaky_relu(self.norm_0(x, seg), 0.2))
        dx = self.conv_1(F.leaky_relu(self.norm_1(dx, seg), 0.2))
        return shortcut + dx


class SPADEDecoder(nn.Module):
    """``G(feature=)`` → (B, 3, 4·upscale·H, 4·upscale·W) image in (0, 1): 64² → 512² officially."""

    def __init__(self, upscale: int, block_expansion: int, max_features: int, num_down_blocks: int,
                 out_channels: int, spade_hidden: int):
        super().__init__()
        cin = min(max_features, block_expansion * (2 ** num_down_blocks))
        self.fc = nn.Conv2d(cin, 2 * cin, kernel_size=3, padding=1)
        for i in range(6):
            setattr(self, f"G_middle_{i}", SPADEResBlock(2 * cin, 2 * cin, cin, spade_hidden))
        self.up_0 = SPADEResBlock(2 * cin, cin, cin, spade_hidden)
        self.up_1 = SPADEResBlock(cin, out_channels, cin, spade_hidden)
        if upscale > 1:
            self.conv_img = nn.Sequential(
                nn.Conv2d(out_channels, 3 * upscale * upscale, kernel_size=3, padding=1),
                nn.PixelShuffle(upscale),
            )
        else:
            self.conv_img = nn.Conv2d(out_channels, 3, kernel_size=3, padding=1)

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        # The decoder input is also the SPADE conditioning map of every block (§2.4).
        seg = feature
        x = self.fc(feature)
        for i in range(6):
            x = getattr(self, f"G_middle_{i}")(x, seg)
        x = self.up_0(F.interpolate(x, scale_factor=2, mode="nearest"), seg)
        x = self.up_1(F.interpolate(x, scale_factor=2, mode="nearest"), seg)
        return torch.sigmoid(self.conv_img(F.leaky_relu(x, 0.2)))

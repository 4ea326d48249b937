"""Dense motion network of W: keypoints → a dense sampling grid and an occlusion map (spec §2.3)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .util import Hourglass

# Gaussian keypoint heatmaps use variance 0.01 in the normalised grid frame (§2.3 step 5).
KP_VARIANCE = 0.01


def identity_grid(d: int, h: int, w: int, ref: torch.Tensor) -> torch.Tensor:
    """(d, h, w, 3) grid of (x, y, z) in [-1, 1] with align-corners spacing 2/(n-1).

    The grid is "align-corners" while every grid_sample uses align_corners=False; upstream does
    exactly this and a faithful port keeps the mismatch (§2.3 step 2).
    """
    x = torch.arange(w, dtype=ref.dtype, device=ref.device)
    y = torch.arange(h, dtype=ref.dtype, device=ref.device)
    z = torch.arange(d, dtype=ref.dtype, device=ref.device)
    x = 2 * (x / (w - 1)) - 1
    y = 2 * (y / (h - 1)) - 1
    z = 2 * (z / (d - 1)) - 1
    return torch.stack([
        x.view(1, 1, w).expand(d, h, w),
        y.view(1, h, 1).expand(d, h, w),
        z.view(d, 1, 1).expand(d, h, w),
    ], dim=-1)


def keypoint_gaussians(kp: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """(B, K, 3) keypoints on a (d, h, w, 3) grid → (B, K, d, h, w) exp(-|g - kp|² / (2·0.01))."""
    diff = grid[None, None] - kp[:, :, None, None, None, :]
    return torch.exp(-0.5 * (diff ** 2).sum(-1) / KP_VARIANCE)


def sparse_motions(grid: torch.Tensor, kp_driving: torch.Tensor, kp_source: torch.Tensor) -> torch.Tensor:
    """(B, 1+K, d, h, w, 3): the identity grid (background), then per keypoint G − x_d[k] + x_s[k].

    A pure translation per keypoint, no Jacobian (§2.3 step 3).
    """
    bs = kp_driving.shape[0]
    moved = grid[None, None] - kp_driving[:, :, None, None, None, :] + kp_source[:, :, None, None, None, :]
    background = grid[None, None].expand(bs, 1, *grid.shape)
    return torch.cat([background, moved], dim=1)


class DenseMotionNetwork(nn.Module):
    def __init__(self, block_expansion: int, num_blocks: int, max_features: int, num_kp: int,
                 feature_channel: int, reshape_depth: int, compress: int, estimate_occlusion_map: bool):
        super().__init__()
        self.num_kp = num_kp
        self.hourglass = Hourglass(block_expansion, (num_kp + 1) * (compress + 1), num_blocks, max_features)
        self.mask = nn.Conv3d(self.hourglass.out_filters, num_kp + 1, kernel_size=7, padding=3)
        self.compress = nn.Conv3d(feature_channel, compress, kernel_size=1)
        self.norm = nn.BatchNorm3d(compress, affine=True)
        self.occlusion = (
            nn.Conv2d(self.hourglass.out_filters * reshape_depth, 1, kernel_size=7, padding=3)
            if estimate_occlusion_map else None
        )

    def forward(self, feature: torch.Tensor, kp_driving: torch.Tensor,
                kp_source: torch.Tensor) -> dict[str, torch.Tensor]:
        feature = F.relu(self.norm(self.compress(feature)))
        bs, c, d, h, w = feature.shape
        k1 = self.num_kp + 1
        grid = identity_grid(d, h, w, kp_source)
        motions = sparse_motions(grid, kp_driving, kp_source)

        # Sample the compressed volume once per motion: (B·(1+K), c, d, h, w).
        repeated = feature.unsqueeze(1).expand(bs, k1, c, d, h, w).reshape(bs * k1, c, d, h, w)
        deformed = F.grid_sample(repeated, motions.reshape(bs * k1, d, h, w, 3), align_corners=False)
        deformed = deformed.view(bs, k1, c, d, h, w)

        heatmap = keypoint_gaussians(kp_driving, grid) - keypoint_gaussians(kp_source, grid)
        heatmap = torch.cat([heatmap.new_zeros(bs, 1, d, h, w), heatmap], dim=1)

        # Per motion: [heatmap, deformed features] = 1 + c channels (§2.3 step 6).
        x = torch.cat([heatmap.unsqueeze(2), deformed], dim=2).view(bs, -1, d, h, w)
        prediction = self.hourglass(x)

        mask = F.softmax(self.mask(prediction), dim=1).unsqueeze(2)
        deformation = (motions.permute(0, 1, 5, 2, 3, 4) * mask).sum(dim=1).permute(0, 2, 3, 4, 1)
        out = {"deformation": deformation}
        if self.occlusion is not None:
            # (C, D) flattened into 2-D channels, C-major (§2.3 step 10).
            out["occlusion_map"] = torch.sigmoid(self.occlusion(prediction.view(bs, -1, h, w)))
        return out

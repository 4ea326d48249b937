"""DenseMotionNetwork: a dense 3-D deformation and an occlusion map from two keypoint sets (spec §3.9 step 2)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .render_blocks import Hourglass, keypoint_gaussians, make_coordinate_grid

# Gaussian variance of the keypoint heatmaps, in grid units (upstream kp2gaussian call).
HEATMAP_VARIANCE = 0.01
# Mask weights below this are zeroed and the rest is NOT renormalised (spec §3.9 step 2.7, §10.4).
MASK_FLOOR = 1e-3


class DenseMotionNetwork(nn.Module):
    def __init__(self, block_expansion: int, num_blocks: int, max_features: int, num_kp: int,
                 feature_channel: int, reshape_depth: int, compress: int, estimate_occlusion_map: bool):
        super().__init__()
        if not estimate_occlusion_map:
            raise ValueError("SadTalker's renderer always estimates the occlusion map (facerender.yaml)")
        # One heatmap channel plus the compressed feature per keypoint and the background.
        self.hourglass = Hourglass(block_expansion, in_features=(num_kp + 1) * (compress + 1),
                                   num_blocks=num_blocks, max_features=max_features)
        self.mask = nn.Conv3d(self.hourglass.out_filters, num_kp + 1, kernel_size=7, padding=3)
        self.compress = nn.Conv3d(feature_channel, compress, kernel_size=1)
        self.norm = nn.BatchNorm3d(compress)
        self.occlusion = nn.Conv2d(self.hourglass.out_filters * reshape_depth, 1, kernel_size=7, padding=3)
        self.num_kp = num_kp

    def sparse_motions(self, spatial_size: tuple[int, int, int], kp_driving: torch.Tensor,
                       kp_source: torch.Tensor) -> torch.Tensor:
        """(b, k+1, d, h, w, 3) sampling grids: identity for the background, then ``grid - driving + source``."""
        b = kp_driving.shape[0]
        identity = make_coordinate_grid(spatial_size, kp_driving.dtype, kp_driving.device).unsqueeze(0).unsqueeze(0)
        kp_shape = (b, self.num_kp, 1, 1, 1, 3)
        driving_to_source = identity - kp_driving.view(kp_shape) + kp_source.view(kp_shape)
        return torch.cat([identity.expand(b, 1, *spatial_size, 3), driving_to_source], dim=1)

    def forward(self, feature: torch.Tensor, kp_driving: torch.Tensor,
                kp_source: torch.Tensor) -> dict[str, torch.Tensor]:
        b, _, d, h, w = feature.shape
        k1 = self.num_kp + 1
        feature = F.relu(self.norm(self.compress(feature)))
        motions = self.sparse_motions((d, h, w), kp_driving, kp_source)

        # Warp the compressed feature with every sparse motion (5-D grid_sample is trilinear;
        # zero padding and align_corners=False are upstream's defaults, spec §3.9 step 2.3).
        repeated = feature.unsqueeze(1).expand(b, k1, *feature.shape[1:]).reshape(b * k1, -1, d, h, w)
        deformed = F.grid_sample(repeated, motions.reshape(b * k1, d, h, w, 3), mode="bilinear",
                                 padding_mode="zeros", align_corners=False).view(b, k1, -1, d, h, w)

        heatmap = (keypoint_gaussians(kp_driving, (d, h, w), HEATMAP_VARIANCE)
                   - keypoint_gaussians(kp_source, (d, h, w), HEATMAP_VARIANCE))
        heatmap = torch.cat([heatmap.new_zeros(b, 1, d, h, w), heatmap], dim=1).unsqueeze(2)

        prediction = self.hourglass(torch.cat([heatmap, deformed], dim=2).view(b, -1, d, h, w))

        mask = F.softmax(self.mask(prediction), dim=1).unsqueeze(2)
        mask = torch.where(mask < MASK_FLOOR, torch.zeros_like(mask), mask)
        deformation = (motions.permute(0, 1, 5, 2, 3, 4) * mask).sum(dim=1).permute(0, 2, 3, 4, 1)

        occlusion_map = torch.sigmoid(self.occlusion(prediction.view(b, -1, h, w)))
        return {"deformation": deformation, "occlusion_map": occlusion_map}

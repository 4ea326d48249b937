"""KPDetector: 15 canonical 3-D keypoints of the source face (spec §3.6)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..common.motion_blocks import make_coordinate_grid

from .render_blocks import AntiAliasInterpolation2d, KPHourglass


class KPDetector(nn.Module):
    """Anti-aliased 1/4 downscale -> KPHourglass -> conv3d heatmaps -> soft-argmax keypoints.

    Input (b, 3, S, S) RGB in [0, 1]; output (b, num_kp, 3) keypoints in [-1, 1]^3 (x, y, z).
    """

    def __init__(self, block_expansion: int, feature_channel: int, num_kp: int, image_channel: int,
                 max_features: int, reshape_channel: int, reshape_depth: int, num_blocks: int,
                 temperature: float, estimate_jacobian: bool = False, scale_factor: float = 1):
        super().__init__()
        if estimate_jacobian:
            raise ValueError("SadTalker's KPDetector runs without jacobians (facerender.yaml)")
        if scale_factor == 1:
            raise ValueError("SadTalker's KPDetector downscales its input (scale_factor 0.25)")
        self.predictor = KPHourglass(block_expansion, in_features=image_channel, reshape_features=reshape_channel,
                                     reshape_depth=reshape_depth, num_blocks=num_blocks, max_features=max_features)
        self.kp = nn.Conv3d(self.predictor.out_filters, num_kp, kernel_size=3, padding=1)
        self.temperature = temperature
        self.down = AntiAliasInterpolation2d(image_channel, scale_factor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        prediction = self.kp(self.predictor(self.down(x)))
        b, k, d, h, w = prediction.shape
        # Softmax over the whole volume of each keypoint, logits sharpened by the temperature.
        heatmap = F.softmax(prediction.view(b, k, -1) / self.temperature, dim=2).view(b, k, d, h, w)
        grid = make_coordinate_grid((d, h, w), heatmap.dtype, heatmap.device)
        return (heatmap.unsqueeze(-1) * grid.view(1, 1, d, h, w, 3)).sum(dim=(2, 3, 4))

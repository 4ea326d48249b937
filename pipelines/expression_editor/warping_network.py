"""Warping module W: warps f_s from the source to the driving keypoints (spec §2.3)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pipelines.common.motion_blocks import DenseMotionNetwork, SameBlock2d


class WarpingNetwork(nn.Module):
    """``W(feature_3d, kp_driving=, kp_source=)`` → {"out", "deformation", "occlusion_map"}."""

    def __init__(self, num_kp: int, block_expansion: int, max_features: int, num_down_blocks: int,
                 reshape_channel: int, estimate_occlusion_map: bool, dense_motion_params: dict):
        super().__init__()
        self.dense_motion_network = DenseMotionNetwork(
            num_kp=num_kp, feature_channel=reshape_channel,
            estimate_occlusion_map=estimate_occlusion_map, **dense_motion_params,
        )
        out_features = block_expansion * (2 ** num_down_blocks)
        # `max_features` is the flattened C·D of the warped volume (32·16 = 512 officially).
        self.third = SameBlock2d(max_features, out_features, lrelu=True)
        self.fourth = nn.Conv2d(out_features, out_features, kernel_size=1)

    def forward(self, feature_3d: torch.Tensor, kp_driving: torch.Tensor,
                kp_source: torch.Tensor) -> dict[str, torch.Tensor | None]:
        dense = self.dense_motion_network(feature_3d, kp_driving=kp_driving, kp_source=kp_source)
        deformation = dense["deformation"]
        occlusion_map = dense.get("occlusion_map")
        out = F.grid_sample(feature_3d, deformation, align_corners=False)
        bs, c, d, h, w = out.shape
        out = self.fourth(self.third(out.view(bs, c * d, h, w)))
        if occlusion_map is not None:
            out = out * occlusion_map
        return {"out": out, "deformation": deformation, "occlusion_map": occlusion_map}

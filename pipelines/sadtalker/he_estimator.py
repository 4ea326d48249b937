"""HEEstimator: face-vid2vid head-pose/expression regressor.

Not used at inference: MappingNet replaces it and its weights exist only in the legacy
``facevid2vid_00189-model.pth.tar`` (spec §3.7). It is kept for the parity fixture only.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .render_blocks import ResBottleneck


def _bottlenecks(prefix: str, features: int, count: int) -> nn.Sequential:
    blocks = nn.Sequential()
    for i in range(count):
        blocks.add_module(f"{prefix}{i}", ResBottleneck(features, stride=1))
    return blocks


class HEEstimator(nn.Module):
    """ResNet-style trunk (64 -> 256 -> 512 -> 1024 -> 2048) with pose-bin, translation and expression heads."""

    def __init__(self, block_expansion: int, feature_channel: int, num_kp: int, image_channel: int,
                 max_features: int, num_bins: int = 66, estimate_jacobian: bool = True):
        super().__init__()
        self.conv1 = nn.Conv2d(image_channel, block_expansion, kernel_size=7, padding=3, stride=2)
        self.norm1 = nn.BatchNorm2d(block_expansion)
        self.conv2 = nn.Conv2d(block_expansion, 256, kernel_size=1)
        self.norm2 = nn.BatchNorm2d(256)
        self.block1 = _bottlenecks("b1_", 256, 3)
        self.conv3 = nn.Conv2d(256, 512, kernel_size=1)
        self.norm3 = nn.BatchNorm2d(512)
        self.block2 = ResBottleneck(512, stride=2)
        self.block3 = _bottlenecks("b3_", 512, 3)
        self.conv4 = nn.Conv2d(512, 1024, kernel_size=1)
        self.norm4 = nn.BatchNorm2d(1024)
        self.block4 = ResBottleneck(1024, stride=2)
        self.block5 = _bottlenecks("b5_", 1024, 5)
        self.conv5 = nn.Conv2d(1024, max_features, kernel_size=1)
        self.norm5 = nn.BatchNorm2d(max_features)
        self.block6 = ResBottleneck(max_features, stride=2)
        self.block7 = _bottlenecks("b7_", max_features, 2)
        self.fc_roll = nn.Linear(max_features, num_bins)
        self.fc_pitch = nn.Linear(max_features, num_bins)
        self.fc_yaw = nn.Linear(max_features, num_bins)
        self.fc_t = nn.Linear(max_features, 3)
        self.fc_exp = nn.Linear(max_features, 3 * num_kp)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = F.max_pool2d(F.relu(self.norm1(self.conv1(x))), kernel_size=3, stride=2, padding=1)
        out = self.block1(F.relu(self.norm2(self.conv2(out))))
        out = self.block3(self.block2(F.relu(self.norm3(self.conv3(out)))))
        out = self.block5(self.block4(F.relu(self.norm4(self.conv4(out)))))
        out = self.block7(self.block6(F.relu(self.norm5(self.conv5(out)))))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        # Upstream returns fc_roll's output as "yaw" and fc_yaw's as "roll" (spec §3.7).
        return {"yaw": self.fc_roll(out), "pitch": self.fc_pitch(out), "roll": self.fc_yaw(out),
                "t": self.fc_t(out), "exp": self.fc_exp(out)}

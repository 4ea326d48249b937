"""MappingNet (PIRender-style, upstream src/facerender/modules/mapping.py, spec §3.5).

A 27-frame window of 3DMM coefficients -> head-pose bin logits, translation and keypoint
expression offsets for the face renderer.
"""
from __future__ import annotations

import torch
from torch import nn


class MappingNet(nn.Module):
    def __init__(self, coeff_nc: int, descriptor_nc: int, layer: int, num_kp: int, num_bins: int):
        super().__init__()
        self.layer = layer
        self.first = nn.Sequential(nn.Conv1d(coeff_nc, descriptor_nc, kernel_size=7, padding=0, bias=True))
        for i in range(layer):
            setattr(self, f"encoder{i}", nn.Sequential(
                nn.LeakyReLU(0.1), nn.Conv1d(descriptor_nc, descriptor_nc, kernel_size=3, padding=0, dilation=3)))
        self.fc_roll = nn.Linear(descriptor_nc, num_bins)
        self.fc_pitch = nn.Linear(descriptor_nc, num_bins)
        self.fc_yaw = nn.Linear(descriptor_nc, num_bins)
        self.fc_t = nn.Linear(descriptor_nc, 3)
        self.fc_exp = nn.Linear(descriptor_nc, 3 * num_kp)

    def forward(self, window: torch.Tensor) -> dict[str, torch.Tensor]:
        """window (B, coeff_nc, 27) -> {'yaw', 'pitch', 'roll': (B, num_bins), 't': (B, 3), 'exp': (B, 3*num_kp)}."""
        out = self.first(window)
        for i in range(self.layer):
            # Each unpadded dilated conv trims 3 frames per side; the residual is the centre crop.
            out = getattr(self, f"encoder{i}")(out) + out[:, :, 3:-3]
        out = out.mean(dim=2)
        return {"yaw": self.fc_yaw(out), "pitch": self.fc_pitch(out), "roll": self.fc_roll(out),
                "t": self.fc_t(out), "exp": self.fc_exp(out)}

"""Stitching and retargeting MLPs S (spec §2.5): Linear → ReLU → … → Linear, no output activation."""
from __future__ import annotations

import torch
from torch import nn


class StitchingRetargetingNetwork(nn.Module):
    def __init__(self, input_size: int, hidden_sizes: list[int], output_size: int):
        super().__init__()
        sizes = [input_size, *hidden_sizes]
        layers: list[nn.Module] = []
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(fan_in, fan_out), nn.ReLU()]
        layers.append(nn.Linear(sizes[-1], output_size))
        # Linear layers sit at even indices (mlp.0, mlp.2, …), the checkpoint's key names.
        self.mlp = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)

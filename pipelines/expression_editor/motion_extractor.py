"""Motion extractor M: ConvNeXt-V2 backbone with seven linear heads (spec §2.2).

The backbone lives under ``detector.`` as in the official checkpoint.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

LN_EPS = 1e-6
GRN_EPS = 1e-6


class ChannelsFirstLayerNorm(nn.Module):
    """LayerNorm over C of an NCHW tensor, written out as upstream does (mean, biased variance)."""

    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + LN_EPS)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class GRN(nn.Module):
    """Global response normalisation on NHWC: γ·(x·N) + β + x, N = G / (mean_C G + 1e-6) (§2.2)."""

    def __init__(self, dim: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1, 1, 1, dim))
        self.beta = nn.Parameter(torch.zeros(1, 1, 1, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = torch.norm(x, p=2, dim=(1, 2), keepdim=True)
        n = g / (g.mean(dim=-1, keepdim=True) + GRN_EPS)
        return self.gamma * (x * n) + self.beta + x


class ConvNeXtBlock(nn.Module):
    """Depthwise 7×7 → LN → Linear C→4C → GELU (erf) → GRN → Linear 4C→C, + residual."""

    def __init__(self, dim: int):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=LN_EPS)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.grn = GRN(4 * dim)
        self.pwconv2 = nn.Linear(4 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.pwconv2(self.grn(F.gelu(self.pwconv1(self.norm(y)))))
        return x + y.permute(0, 3, 1, 2)


class ConvNeXtV2(nn.Module):
    def __init__(self, num_kp: int, depths: list[int], dims: list[int], num_bins: int,
                 in_chans: int = 3):
        super().__init__()
        # Stem: Conv k4 s4 then LN; later stages: LN then Conv k2 s2 (§2.2).
        self.downsample_layers = nn.ModuleList([
            nn.Sequential(nn.Conv2d(in_chans, dims[0], kernel_size=4, stride=4),
                          ChannelsFirstLayerNorm(dims[0]))
        ])
        for i in range(len(dims) - 1):
            self.downsample_layers.append(nn.Sequential(
                ChannelsFirstLayerNorm(dims[i]),
                nn.Conv2d(dims[i], dims[i + 1], kernel_size=2, stride=2),
            ))
        self.stages = nn.ModuleList(
            nn.Sequential(*[ConvNeXtBlock(dim) for _ in range(depth)]) for depth, dim in zip(depths, dims)
        )
        self.norm = nn.LayerNorm(dims[-1], eps=LN_EPS)
        self.fc_kp = nn.Linear(dims[-1], 3 * num_kp)
        self.fc_scale = nn.Linear(dims[-1], 1)
        self.fc_pitch = nn.Linear(dims[-1], num_bins)
        self.fc_yaw = nn.Linear(dims[-1], num_bins)
        self.fc_roll = nn.Linear(dims[-1], num_bins)
        self.fc_t = nn.Linear(dims[-1], 3)
        self.fc_exp = nn.Linear(dims[-1], 3 * num_kp)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        for down, stage in zip(self.downsample_layers, self.stages):
            x = stage(down(x))
        x = self.norm(x.mean([-2, -1]))
        return {
            "pitch": self.fc_pitch(x),
            "yaw": self.fc_yaw(x),
            "roll": self.fc_roll(x),
            "t": self.fc_t(x),
            "exp": self.fc_exp(x),
            "scale": self.fc_scale(x),
            "kp": self.fc_kp(x),
        }


class MotionExtractor(nn.Module):
    """``M(x)`` → kp, exp (B, 3·num_kp), pitch/yaw/roll logits (B, num_bins), t (B, 3), scale (B, 1)."""

    def __init__(self, num_kp: int, depths: list[int], dims: list[int], num_bins: int):
        super().__init__()
        self.detector = ConvNeXtV2(num_kp=num_kp, depths=depths, dims=dims, num_bins=num_bins)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.detector(x)


def headpose_degrees(logits: torch.Tensor) -> torch.Tensor:
    """(B, bins) head-pose logits → (B, 1) degrees: 3·Σ softmax·i − 97.5 over bins of 3° (§2.2)."""
    idx = torch.arange(logits.shape[-1], dtype=logits.dtype, device=logits.device)
    return (F.softmax(logits, dim=-1) * idx).sum(dim=-1, keepdim=True) * 3 - 97.5

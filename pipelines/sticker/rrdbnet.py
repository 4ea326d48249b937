"""ESRGAN's RRDBNet, the network of ``4x-AnimeSharp.pth`` (sticker-and-character.md §2.2 step 9).

spandrel (the loader §2.3 names) requires torchvision, which the project does not install, so the
network is written here. Two key layouts exist for the same network: BasicSR's (``conv_first``,
``body.N.rdb1.conv1``, ``conv_up1`` …) and the original ESRGAN repository's (``model.0``,
``model.1.sub.N.RDB1.conv1.0``, ``model.3`` …), which many community models such as
4x-AnimeSharp use; ``basicsr_state`` maps the latter onto the former. Widths and block count are
read from the file's shapes.
"""
from __future__ import annotations

import re
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

RESIDUAL_SCALE = 0.2
LEAKY_SLOPE = 0.2
# Original ESRGAN sequential indices of the layers after the trunk (4x: two upsampling stages).
ESRGAN_TAIL = {"model.3": "conv_up1", "model.6": "conv_up2", "model.8": "conv_hr", "model.10": "conv_last"}


def lrelu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, LEAKY_SLOPE)


class ResidualDenseBlock(nn.Module):
    def __init__(self, features: int, growth: int):
        super().__init__()
        for i in range(1, 6):
            out = features if i == 5 else growth
            setattr(self, f"conv{i}", nn.Conv2d(features + (i - 1) * growth, out, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [x]
        for i in range(1, 5):
            outs.append(lrelu(getattr(self, f"conv{i}")(torch.cat(outs, 1))))
        return self.conv5(torch.cat(outs, 1)) * RESIDUAL_SCALE + x


class RRDB(nn.Module):
    def __init__(self, features: int, growth: int):
        super().__init__()
        self.rdb1 = ResidualDenseBlock(features, growth)
        self.rdb2 = ResidualDenseBlock(features, growth)
        self.rdb3 = ResidualDenseBlock(features, growth)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rdb3(self.rdb2(self.rdb1(x))) * RESIDUAL_SCALE + x


class RRDBNet(nn.Module):
    """4x super-resolution: trunk of RRDBs, two nearest-neighbour 2x upsamplings."""

    scale = 4

    def __init__(self, in_channels: int = 3, out_channels: int = 3, features: int = 64, blocks: int = 23,
                 growth: int = 32):
        super().__init__()
        self.conv_first = nn.Conv2d(in_channels, features, 3, padding=1)
        self.body = nn.Sequential(*[RRDB(features, growth) for _ in range(blocks)])
        self.conv_body = nn.Conv2d(features, features, 3, padding=1)
        self.conv_up1 = nn.Conv2d(features, features, 3, padding=1)
        self.conv_up2 = nn.Conv2d(features, features, 3, padding=1)
        self.conv_hr = nn.Conv2d(features, features, 3, padding=1)
        self.conv_last = nn.Conv2d(features, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] → (B, 3, 4H, 4W)."""
        feat = self.conv_first(x)
        feat = feat + self.conv_body(self.body(feat))
        feat = lrelu(self.conv_up1(F.interpolate(feat, scale_factor=2, mode="nearest")))
        feat = lrelu(self.conv_up2(F.interpolate(feat, scale_factor=2, mode="nearest")))
        return self.conv_last(lrelu(self.conv_hr(feat)))


def basicsr_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state dict in BasicSR names, from either layout."""
    if "conv_first.weight" in state:
        return dict(state)
    blocks = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"model\.1\.sub\.(\d+)\.RDB", k)))
    out = {}
    for key, value in state.items():
        head, _, leaf = key.rpartition(".")
        if head == "model.0":
            out[f"conv_first.{leaf}"] = value
        elif head == f"model.1.sub.{blocks}":
            out[f"conv_body.{leaf}"] = value
        elif head in ESRGAN_TAIL:
            out[f"{ESRGAN_TAIL[head]}.{leaf}"] = value
        elif m := re.fullmatch(r"model\.1\.sub\.(\d+)\.RDB(\d)\.conv(\d)\.0", head):
            out[f"body.{m.group(1)}.rdb{m.group(2)}.conv{m.group(3)}.{leaf}"] = value
        else:
            raise KeyError(f"not an ESRGAN key: {key}")
    return out


def rrdbnet_config(state: Mapping[str, torch.Tensor]) -> dict[str, int]:
    """Constructor arguments read from a BasicSR-named state dict's shapes."""
    blocks = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("body."))
    return {"in_channels": state["conv_first.weight"].shape[1], "out_channels": state["conv_last.weight"].shape[0],
            "features": state["conv_first.weight"].shape[0], "blocks": blocks,
            "growth": state["body.0.rdb1.conv1.weight"].shape[0]}


def esrgan_state(net: RRDBNet) -> dict[str, torch.Tensor]:
    """``net``'s weights in the original ESRGAN layout (the layout 4x-AnimeSharp ships in)."""
    blocks = len(net.body)
    tail = {v: k for k, v in ESRGAN_TAIL.items()}
    out = {}
    for key, value in net.state_dict().items():
        head, _, leaf = key.rpartition(".")
        if head == "conv_first":
            out[f"model.0.{leaf}"] = value
        elif head == "conv_body":
            out[f"model.1.sub.{blocks}.{leaf}"] = value
        elif head in tail:
            out[f"{tail[head]}.{leaf}"] = value
        else:
            _, block, rdb, conv = head.split(".")
            out[f"model.1.sub.{block}.RDB{rdb[-1]}.{conv}.0.{leaf}"] = value
    return out

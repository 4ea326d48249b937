"""The one ResNet trunk: torchvision's Bottleneck ResNet (v1.5) up to ``layer4``, module names as
torchvision's so that checkpoints built on it load unchanged (RetinaFace's ``body.*``, sadtalker.md
§3.10; Deep3DFaceRecon's ``backbone.*``, §3.2). Callers add their own heads."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

RESNET50_BLOCKS = (3, 4, 6, 3)


class Bottleneck(nn.Module):
    """torchvision's ResNet v1.5 bottleneck: the stride sits on the 3x3 convolution."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int):
        super().__init__()
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.downsample = None
        if stride != 1 or inplanes != out:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, out, 1, stride, bias=False), nn.BatchNorm2d(out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(out + identity)


class ResNetTrunk(nn.Module):
    """Stem (7x7 conv, BN, ReLU, 3x3 max-pool) and ``layer1``..``layer4``; no pooling head."""

    def __init__(self, blocks: tuple[int, ...] = RESNET50_BLOCKS, width: int = 64):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        inplanes = width
        for i, n in enumerate(blocks):
            planes = width * 2**i
            layers = []
            for b in range(n):
                layers.append(Bottleneck(inplanes, planes, 2 if (b == 0 and i > 0) else 1))
                inplanes = planes * Bottleneck.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*layers))
        self.out_channels = inplanes

    def stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The outputs of ``layer1``..``layer4``."""
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        outputs = []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            outputs.append(x)
        return outputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(x)[-1]

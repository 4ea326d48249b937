"""RetinaFace (ResNet-50) face detector as facexlib 0.3.0 runs it (sadtalker.md §3.10, §5.10).

The network (phase 'test': softmaxed scores), its prior boxes, the box/landmark decoding and
the detection step (threshold, sort, NMS with torchvision.ops.nms's conventions) are here;
module names follow the keys of ``detection_Resnet50_Final.pth``, with the shared ResNet trunk's
torchvision names under ``body``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .nms import nms
from .resnet import Bottleneck, ResNetTrunk

# BGR channel means subtracted from the raw 0..255 image (no scaling, §3.10).
BGR_MEAN = (104.0, 117.0, 123.0)


@dataclass(frozen=True)
class RetinaFaceConfig:
    """facexlib's ``cfg_re50``: torchvision ResNet-50 body, FPN/SSH width 256, three levels."""

    resnet_blocks: tuple[int, int, int, int] = (3, 4, 6, 3)
    resnet_width: int = 64
    out_channel: int = 256
    min_sizes: tuple[tuple[int, int], ...] = ((16, 32), (64, 128), (256, 512))
    steps: tuple[int, int, int] = (8, 16, 32)
    variance: tuple[float, float] = (0.1, 0.2)


# ---------------------------------------------------------------- FPN, SSH, heads

def conv_bn(inp: int, oup: int, kernel: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(inp, oup, kernel, 1, kernel // 2, bias=False), nn.BatchNorm2d(oup))


def leaky_slope(channels: int) -> float:
    """Pytorch_Retinaface uses LeakyReLU(0.1) in narrow (<= 64 channel) FPN/SSH, ReLU otherwise."""
    return 0.1 if channels <= 64 else 0.0


class FPN(nn.Module):
    def __init__(self, in_channels: list[int], out_channels: int):
        super().__init__()
        self.slope = leaky_slope(out_channels)
        self.output1 = conv_bn(in_channels[0], out_channels, 1)
        self.output2 = conv_bn(in_channels[1], out_channels, 1)
        self.output3 = conv_bn(in_channels[2], out_channels, 1)
        self.merge1 = conv_bn(out_channels, out_channels, 3)
        self.merge2 = conv_bn(out_channels, out_channels, 3)

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        act = lambda t: F.leaky_relu(t, self.slope)  # noqa: E731
        o1, o2, o3 = act(self.output1(feats[0])), act(self.output2(feats[1])), act(self.output3(feats[2]))
        o2 = act(self.merge2(o2 + F.interpolate(o3, size=o2.shape[2:], mode="nearest")))
        o1 = act(self.merge1(o1 + F.interpolate(o2, size=o1.shape[2:], mode="nearest")))
        return [o1, o2, o3]


class SSH(nn.Module):
    """Context module: 3x3, 5x5 (two 3x3) and 7x7 (three 3x3) branches, concatenated."""

    def __init__(self, in_channel: int, out_channel: int):
        super().__init__()
        self.slope = leaky_slope(out_channel)
        self.conv3X3 = conv_bn(in_channel, out_channel // 2, 3)
        self.conv5X5_1 = conv_bn(in_channel, out_channel // 4, 3)
        self.conv5X5_2 = conv_bn(out_channel // 4, out_channel // 4, 3)
        self.conv7X7_2 = conv_bn(out_channel // 4, out_channel // 4, 3)
        self.conv7x7_3 = conv_bn(out_channel // 4, out_channel // 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c3 = self.conv3X3(x)
        c5_1 = F.leaky_relu(self.conv5X5_1(x), self.slope)
        c5 = self.conv5X5_2(c5_1)
        c7 = self.conv7x7_3(F.leaky_relu(self.conv7X7_2(c5_1), self.slope))
        return F.relu(torch.cat([c3, c5, c7], dim=1))


class Head(nn.Module):
    """1x1 conv predicting ``values`` numbers per anchor, flattened to (B, H*W*anchors, values)."""

    def __init__(self, in_channels: int, anchors: int, values: int):
        super().__init__()
        self.values = values
        self.conv1x1 = nn.Conv2d(in_channels, anchors * values, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1x1(x).permute(0, 2, 3, 1)
        return out.reshape(out.shape[0], -1, self.values)


class RetinaFace(nn.Module):
    def __init__(self, config: RetinaFaceConfig = RetinaFaceConfig()):
        super().__init__()
        self.config = config
        self.body = ResNetTrunk(config.resnet_blocks, config.resnet_width)
        stage = config.resnet_width * Bottleneck.expansion
        oc = config.out_channel
        self.fpn = FPN([stage * 2, stage * 4, stage * 8], oc)
        self.ssh1, self.ssh2, self.ssh3 = SSH(oc, oc), SSH(oc, oc), SSH(oc, oc)
        anchors = len(config.min_sizes[0])
        self.ClassHead = nn.ModuleList(Head(oc, anchors, 2) for _ in range(3))
        self.BboxHead = nn.ModuleList(Head(oc, anchors, 4) for _ in range(3))
        self.LandmarkHead = nn.ModuleList(Head(oc, anchors, 10) for _ in range(3))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``x`` (B,3,H,W) = BGR - BGR_MEAN -> loc (B,A,4), softmaxed conf (B,A,2), landms (B,A,10)."""
        fpn = self.fpn(self.body.stages(x)[1:])
        feats = [self.ssh1(fpn[0]), self.ssh2(fpn[1]), self.ssh3(fpn[2])]
        loc = torch.cat([h(f) for h, f in zip(self.BboxHead, feats)], dim=1)
        conf = torch.cat([h(f) for h, f in zip(self.ClassHead, feats)], dim=1)
        landms = torch.cat([h(f) for h, f in zip(self.LandmarkHead, feats)], dim=1)
        return loc, F.softmax(conf, dim=-1), landms


# ---------------------------------------------------------------- priors, decoding, NMS

def prior_boxes(height: int, width: int, min_sizes, steps) -> np.ndarray:
    """(A,4) float32 anchors (cx, cy, w, h) normalised by the image size, in the network's
    output order: level, row, column, anchor size. Computed in float64 and rounded once to
    float32, as facexlib's ``PriorBox`` builds a Python list and converts it."""
    out = []
    for sizes, step in zip(min_sizes, steps):
        rows, cols = math.ceil(height / step), math.ceil(width / step)
        cy, cx = np.meshgrid((np.arange(rows) + 0.5) * step / height,
                             (np.arange(cols) + 0.5) * step / width, indexing="ij")
        level = np.empty((rows, cols, len(sizes), 4), dtype=np.float64)
        level[..., 0] = cx[..., None]
        level[..., 1] = cy[..., None]
        level[..., 2] = np.array(sizes, dtype=np.float64) / width
        level[..., 3] = np.array(sizes, dtype=np.float64) / height
        out.append(level.reshape(-1, 4))
    return np.concatenate(out).astype(np.float32)


def decode_boxes(loc: torch.Tensor, priors: torch.Tensor, variance) -> torch.Tensor:
    """Regressions (A,4) -> boxes (A,4) x1,y1,x2,y2 in units of the image size."""
    centers = priors[:, :2] + loc[:, :2] * variance[0] * priors[:, 2:]
    sizes = priors[:, 2:] * torch.exp(loc[:, 2:] * variance[1])
    top_left = centers - sizes / 2
    return torch.cat([top_left, sizes + top_left], dim=1)


def decode_landmarks(pre: torch.Tensor, priors: torch.Tensor, variance) -> torch.Tensor:
    """Regressions (A,10) -> five (x, y) points per anchor (A,10), in units of the image size."""
    points = priors[:, None, :2] + pre.view(-1, 5, 2) * variance[0] * priors[:, None, 2:]
    return points.reshape(-1, 10)


def detector_input(image_bgr_u8: np.ndarray) -> torch.Tensor:
    """(H,W,3) uint8 BGR -> (1,3,H,W) float32 ``image - BGR_MEAN`` at the original size."""
    x = torch.from_numpy(np.ascontiguousarray(image_bgr_u8.transpose(2, 0, 1)).astype(np.float32))[None]
    return x - torch.tensor(BGR_MEAN).view(1, 3, 1, 1)


@dataclass
class FaceDetections:
    """Detected faces, best first: boxes (n,4) x1,y1,x2,y2 px, scores (n,), landmarks (n,5,2) px
    (eyes, nose, mouth corners, as RetinaFace orders them)."""

    boxes: np.ndarray
    scores: np.ndarray
    landmarks: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)


@torch.no_grad()
def detect_faces(net: RetinaFace, image_rgb_u8: np.ndarray, conf_threshold: float = 0.97,
                 nms_threshold: float = 0.4, rgb_as_bgr: bool = False) -> FaceDetections:
    """facexlib ``RetinaFace.detect_faces`` at the original resolution (``use_origin_size``).

    The network expects BGR. The enhancer's FaceRestoreHelper gives it a true BGR frame (the
    default here); SadTalker's crop and 3DMM steps hand it the RGB array unchanged, so it
    sees RGB as BGR: pass ``rgb_as_bgr=True`` to reproduce that quirk (§5.3 step 1).
    Kept: score > ``conf_threshold`` (strict), sorted by score, NMS at ``nms_threshold``.
    """
    image = np.asarray(image_rgb_u8)
    height, width = image.shape[:2]
    weight = net.body.conv1.weight
    x = detector_input(image if rgb_as_bgr else image[..., ::-1])
    loc, conf, landms = (t[0].float().cpu() for t in net(x.to(device=weight.device, dtype=weight.dtype)))

    cfg = net.config
    priors = torch.from_numpy(prior_boxes(height, width, cfg.min_sizes, cfg.steps))
    scale = torch.tensor([width, height], dtype=torch.float32)
    boxes = (decode_boxes(loc, priors, cfg.variance) * scale.repeat(2)).numpy()
    points = (decode_landmarks(landms, priors, cfg.variance) * scale.repeat(5)).numpy()
    scores = conf[:, 1].numpy()

    selected = np.where(scores > conf_threshold)[0]
    selected = selected[np.argsort(-scores[selected], kind="stable")]
    boxes, points, scores = boxes[selected], points[selected], scores[selected]
    keep = nms(boxes, scores, nms_threshold)
    return FaceDetections(boxes[keep], scores[keep], points[keep].reshape(-1, 5, 2))

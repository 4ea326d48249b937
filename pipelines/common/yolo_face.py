"""YOLOv8 detection network in the ultralytics ``DetectionModel`` layout (expression-editor.md §2.7).

The layer table is the ``yolov8.yaml`` architecture as data; a scale (depth, width, max channels)
turns it into channel widths and repeat counts exactly as ultralytics' ``parse_model`` does, so the
state-dict keys (``model.<i>.…``) are those of ``face_yolov8n.pt``. The network stops at the head
logits; decoding, NMS and rescaling are pure functions in ``face_box.py``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

# yolov8.yaml backbone + head: [from, repeats, module, args], as pickled in the checkpoint's
# ``yaml`` dict (yolov8_face README §6). "None" is a string there, as YAML reads it.
YOLOV8_BACKBONE = [
    [-1, 1, "Conv", [64, 3, 2]],
    [-1, 1, "Conv", [128, 3, 2]],
    [-1, 3, "C2f", [128, True]],
    [-1, 1, "Conv", [256, 3, 2]],
    [-1, 6, "C2f", [256, True]],
    [-1, 1, "Conv", [512, 3, 2]],
    [-1, 6, "C2f", [512, True]],
    [-1, 1, "Conv", [1024, 3, 2]],
    [-1, 3, "C2f", [1024, True]],
    [-1, 1, "SPPF", [1024, 5]],
]
YOLOV8_HEAD = [
    [-1, 1, "nn.Upsample", ["None", 2, "nearest"]],
    [[-1, 6], 1, "Concat", [1]],
    [-1, 3, "C2f", [512]],
    [-1, 1, "nn.Upsample", ["None", 2, "nearest"]],
    [[-1, 4], 1, "Concat", [1]],
    [-1, 3, "C2f", [256]],
    [-1, 1, "Conv", [256, 3, 2]],
    [[-1, 12], 1, "Concat", [1]],
    [-1, 3, "C2f", [512]],
    [-1, 1, "Conv", [512, 3, 2]],
    [[-1, 9], 1, "Concat", [1]],
    [-1, 3, "C2f", [1024]],
    [[15, 18, 21], 1, "Detect", ["nc"]],
]


@dataclass(frozen=True)
class YoloV8Config:
    """Everything that varies between YOLOv8 detection checkpoints of this layout."""

    nc: int = 1
    depth_multiple: float = 0.33
    width_multiple: float = 0.25
    max_channels: int = 1024
    reg_max: int = 16
    bn_eps: float = 1e-3
    strides: tuple[float, ...] = (8.0, 16.0, 32.0)


# face_yolov8n.pt: scale "n" of yolov8.yaml, one class, BatchNorm eps 1e-3 (yolov8_face config.json).
FACE_YOLOV8N = YoloV8Config()


def scaled_channels(channels: int, config: YoloV8Config) -> int:
    """ultralytics ``make_divisible(min(c, max_channels) * width, 8)``."""
    return int(math.ceil(min(channels, config.max_channels) * config.width_multiple / 8) * 8)


def scaled_repeats(repeats: int, config: YoloV8Config) -> int:
    return max(round(repeats * config.depth_multiple), 1) if repeats > 1 else repeats


class Conv(nn.Module):
    """Conv2d (no bias, 'same' padding) → BatchNorm2d → SiLU."""

    def __init__(self, c_in: int, c_out: int, k: int, s: int, eps: float):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, k, s, k // 2, bias=False)
        self.bn = nn.BatchNorm2d(c_out, eps=eps)
        self.act = nn.SiLU()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class Bottleneck(nn.Module):
    def __init__(self, c: int, shortcut: bool, eps: float):
        super().__init__()
        self.cv1 = Conv(c, c, 3, 1, eps)
        self.cv2 = Conv(c, c, 3, 1, eps)
        self.add = shortcut

    def forward(self, x):
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C2f(nn.Module):
    """Split a 1×1 projection in two, chain n Bottlenecks on the second half, fuse all pieces."""

    def __init__(self, c_in: int, c_out: int, n: int, shortcut: bool, eps: float):
        super().__init__()
        self.c = c_out // 2
        self.cv1 = Conv(c_in, 2 * self.c, 1, 1, eps)
        self.cv2 = Conv((2 + n) * self.c, c_out, 1, 1, eps)
        self.m = nn.ModuleList(Bottleneck(self.c, shortcut, eps) for _ in range(n))

    def forward(self, x):
        y = list(self.cv1(x).chunk(2, 1))
        for block in self.m:
            y.append(block(y[-1]))
        return self.cv2(torch.cat(y, 1))


class SPPF(nn.Module):
    def __init__(self, c_in: int, c_out: int, k: int, eps: float):
        super().__init__()
        hidden = c_in // 2
        self.cv1 = Conv(c_in, hidden, 1, 1, eps)
        self.cv2 = Conv(hidden * 4, c_out, 1, 1, eps)
        self.m = nn.MaxPool2d(kernel_size=k, stride=1, padding=k // 2)

    def forward(self, x):
        y = [self.cv1(x)]
        for _ in range(3):
            y.append(self.m(y[-1]))
        return self.cv2(torch.cat(y, 1))


class Concat(nn.Module):
    def forward(self, xs):
        return torch.cat(xs, 1)


class DFL(nn.Module):
    """Holds the distribution-focal-loss bin values (a fixed 0..reg_max-1 buffer in every checkpoint)."""

    def __init__(self, reg_max: int):
        super().__init__()
        self.conv = nn.Conv2d(reg_max, 1, 1, bias=False).requires_grad_(False)
        self.conv.weight.data[:] = torch.arange(reg_max, dtype=torch.float32).view(1, reg_max, 1, 1)

    def bin_values(self) -> torch.Tensor:
        return self.conv.weight.reshape(-1)


class Detect(nn.Module):
    """Per level: a box branch to 4·reg_max DFL logits and a class branch to nc logits."""

    def __init__(self, nc: int, channels: list[int], reg_max: int, eps: float):
        super().__init__()
        self.nc = nc
        self.reg_max = reg_max
        box_width = max(16, channels[0] // 4, reg_max * 4)
        cls_width = max(channels[0], min(nc, 100))
        self.cv2 = nn.ModuleList(
            nn.Sequential(Conv(c, box_width, 3, 1, eps), Conv(box_width, box_width, 3, 1, eps),
                          nn.Conv2d(box_width, 4 * reg_max, 1))
            for c in channels
        )
        self.cv3 = nn.ModuleList(
            nn.Sequential(Conv(c, cls_width, 3, 1, eps), Conv(cls_width, cls_width, 3, 1, eps),
                          nn.Conv2d(cls_width, nc, 1))
            for c in channels
        )
        self.dfl = DFL(reg_max)

    def forward(self, levels: list[torch.Tensor]):
        """Box logits (B, 4·reg_max, N) and class logits (B, nc, N), levels concatenated in
        stride order with row-major anchors, plus each level's (h, w)."""
        box = torch.cat([branch(x).flatten(2) for branch, x in zip(self.cv2, levels)], 2)
        cls = torch.cat([branch(x).flatten(2) for branch, x in zip(self.cv3, levels)], 2)
        return box, cls, [tuple(x.shape[-2:]) for x in levels]


def _build_layer(kind: str, args: list, c_in: int, repeats: int, config: YoloV8Config):
    """One yaml row → (module, output channels), following ultralytics ``parse_model``."""
    eps = config.bn_eps
    if kind == "Conv":
        c_out = scaled_channels(args[0], config)
        return Conv(c_in, c_out, args[1], args[2], eps), c_out
    if kind == "C2f":
        c_out = scaled_channels(args[0], config)
        shortcut = args[1] if len(args) > 1 else False
        return C2f(c_in, c_out, scaled_repeats(repeats, config), shortcut, eps), c_out
    if kind == "SPPF":
        c_out = scaled_channels(args[0], config)
        return SPPF(c_in, c_out, args[1], eps), c_out
    if kind == "nn.Upsample":
        return nn.Upsample(scale_factor=args[1], mode=args[2]), c_in
    raise ValueError(f"unsupported YOLOv8 layer {kind!r}")


# Where each layer takes its input from (-1: the previous layer).
LAYER_SOURCES = [row[0] for row in YOLOV8_BACKBONE + YOLOV8_HEAD]


class YoloV8(nn.Module):
    """``model`` is the 23-layer Sequential of the checkpoint; ``forward`` returns the head logits.

    Only nn.Module state lives on the instance, so ``tiny_yolo`` can pickle it in the
    checkpoint's object layout."""

    def __init__(self, config: YoloV8Config = FACE_YOLOV8N):
        super().__init__()
        layers, channels = [], []
        for source, repeats, kind, args in YOLOV8_BACKBONE + YOLOV8_HEAD:
            if kind == "Concat":
                module, c_out = Concat(), sum(channels[i] for i in source)
            elif kind == "Detect":
                module = Detect(config.nc, [channels[i] for i in source], config.reg_max, config.bn_eps)
                c_out = None
            else:
                c_in = channels[source] if channels else 3  # RGB input
                module, c_out = _build_layer(kind, args, c_in, repeats, config)
            layers.append(module)
            channels.append(c_out)
        self.model = nn.Sequential(*layers)
        # A plain tensor attribute, as on ultralytics' DetectionModel (not part of the state dict).
        self.stride = torch.tensor(config.strides, dtype=torch.float32)

    @property
    def detect(self) -> Detect:
        return self.model[-1]

    def layer_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Outputs of every layer before the head (``model.0`` … ``model.21``)."""
        outputs = []
        for source, layer in zip(LAYER_SOURCES[:-1], self.model[:-1]):
            if isinstance(source, int):
                x = layer(x if source == -1 else outputs[source])
            else:
                x = layer([x if i == -1 else outputs[i] for i in source])
            outputs.append(x)
        return outputs

    def forward(self, x: torch.Tensor):
        outputs = self.layer_outputs(x)
        return self.detect([outputs[i] for i in LAYER_SOURCES[-1]])

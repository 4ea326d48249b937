"""YOLOv8 boxes as ultralytics' ``predict`` returns them, without ultralytics.

Pre- and post-processing of ``YOLO(path)(rgb, conf=...)`` (expression-editor.md §2.6–§2.7,
yolov8_face README §5–§7): letterbox, head decoding (DFL), NMS, rescaling to the image. Shared by
the expression editor's face detector and consistent-character's eye detector (spec
sticker-and-character.md §3.1).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from pipelines.common.yolo_face import YoloV8


@dataclass(frozen=True)
class Letterbox:
    """Where the resized image sits inside the network input."""

    resized_hw: tuple[int, int]
    top: int
    bottom: int
    left: int
    right: int

    @property
    def input_hw(self) -> tuple[int, int]:
        return self.resized_hw[0] + self.top + self.bottom, self.resized_hw[1] + self.left + self.right


def letterbox_geometry(image_hw: tuple[int, int], size: int = 640, stride: int = 32,
                       minimal_padding: bool = True) -> Letterbox:
    """Scale to fit ``size`` (upscaling allowed), pad to ``size`` or, with ``minimal_padding``, only
    to the next multiple of ``stride``; Python round (half to even) as ultralytics uses it."""
    h, w = image_hw
    r = min(size / h, size / w)
    new_w, new_h = max(round(w * r), 1), max(round(h * r), 1)
    dw, dh = size - new_w, size - new_h
    if minimal_padding:
        dw, dh = dw % stride, dh % stride
    dw, dh = dw / 2, dh / 2
    return Letterbox((new_h, new_w), round(dh - 0.1), round(dh + 0.1), round(dw - 0.1), round(dw + 0.1))


def letterbox_image(image: np.ndarray, geometry: Letterbox) -> np.ndarray:
    """The HWC uint8 network input, grey 114 around the INTER_LINEAR-resized image."""
    if image.shape[:2] != geometry.resized_hw:
        image = cv2.resize(image, geometry.resized_hw[::-1], interpolation=cv2.INTER_LINEAR)
    return cv2.copyMakeBorder(image, geometry.top, geometry.bottom, geometry.left, geometry.right,
                              cv2.BORDER_CONSTANT, value=(114, 114, 114))


def network_input(letterboxed: np.ndarray) -> torch.Tensor:
    """(1, 3, H, W) float32 in [0, 1] with the channels reversed: ultralytics takes numpy input as
    BGR and flips it, and the node hands it RGB, so the network sees BGR (expression-editor.md §2.6)."""
    chw = np.ascontiguousarray(letterboxed[..., ::-1].transpose(2, 0, 1))
    return torch.from_numpy(chw).unsqueeze(0).float() / 255


def make_anchors(level_hw: list[tuple[int, int]], strides) -> tuple[torch.Tensor, torch.Tensor]:
    """Cell centres (2, N) in grid units and the stride (1, N) of each, levels in stride order."""
    points, stride_of = [], []
    for (h, w), s in zip(level_hw, strides):
        sy, sx = torch.meshgrid(torch.arange(h, dtype=torch.float32) + 0.5,
                                torch.arange(w, dtype=torch.float32) + 0.5, indexing="ij")
        points.append(torch.stack((sx.reshape(-1), sy.reshape(-1))))
        stride_of.append(torch.full((1, h * w), float(s)))
    return torch.cat(points, 1), torch.cat(stride_of, 1)


def decode_head(box_logits: torch.Tensor, cls_logits: torch.Tensor, level_hw, strides,
                bin_values: torch.Tensor) -> torch.Tensor:
    """Head logits → (B, 4 + nc, N) rows [cx, cy, w, h, scores…] in letterbox pixels.

    Side distances are the expectation of a softmax over the DFL bins (channel k: side k // reg_max,
    bin k % reg_max); boxes extend from the cell centre by those distances."""
    b, _, n = box_logits.shape
    bins = bin_values.numel()
    probabilities = box_logits.view(b, 4, bins, n).softmax(2)
    distances = (probabilities * bin_values.view(1, 1, bins, 1)).sum(2)
    anchors, stride_of = make_anchors(level_hw, strides)
    left_top, right_bottom = distances.chunk(2, 1)
    x1y1, x2y2 = anchors - left_top, anchors + right_bottom
    boxes = torch.cat(((x1y1 + x2y2) / 2, x2y2 - x1y1), 1) * stride_of
    return torch.cat((boxes, cls_logits.sigmoid()), 1)


def greedy_nms(boxes: torch.Tensor, scores: torch.Tensor, iou: float) -> torch.Tensor:
    """Indices kept by torchvision-style NMS: highest score first (ties in index order), dropping
    boxes whose IoU with a kept one is > ``iou``; areas without +1."""
    order = torch.sort(scores, descending=True, stable=True).indices
    x1, y1, x2, y2 = boxes.unbind(1)
    areas = (x2 - x1) * (y2 - y1)
    suppressed = torch.zeros(len(scores), dtype=torch.bool)
    keep = []
    for i in order.tolist():
        if suppressed[i]:
            continue
        keep.append(i)
        w = (torch.minimum(x2[i], x2) - torch.maximum(x1[i], x1)).clamp(min=0)
        h = (torch.minimum(y2[i], y2) - torch.maximum(y1[i], y1)).clamp(min=0)
        inter = w * h
        suppressed |= inter / (areas[i] + areas - inter) > iou
    return torch.tensor(keep, dtype=torch.int64)


def non_max_suppression(raw: torch.Tensor, conf: float, iou: float = 0.7, max_det: int = 300,
                        max_wh: float = 7680.0) -> tuple[torch.Tensor, torch.Tensor]:
    """One image's raw head output (1, 4 + nc, N) → rows [x1, y1, x2, y2, score, class] and the
    anchor index of each (yolov8_face README §7: strict ``score > conf``, per-class offsets)."""
    rows = raw[0].transpose(0, 1)
    scores, classes = rows[:, 4:].max(1)
    anchors = torch.nonzero(scores > conf).reshape(-1)
    centre, half = rows[anchors, :2], rows[anchors, 2:4] / 2
    boxes = torch.cat((centre - half, centre + half), 1)
    offsets = classes[anchors].float().unsqueeze(1) * max_wh
    keep = greedy_nms(boxes + offsets, scores[anchors], iou)[:max_det]
    detections = torch.cat((boxes[keep], scores[anchors][keep, None], classes[anchors][keep, None].float()), 1)
    return detections, anchors[keep]


def scale_boxes(boxes: np.ndarray, input_hw: tuple[int, int], image_hw: tuple[int, int],
                per_axis_gain: bool = False) -> np.ndarray:
    """Letterbox xyxy → image xyxy, clipped to the image.

    ultralytics ≤ 8.3 divides by the single gain and pads by ``(W_in − w·gain)/2`` (expression-editor.md §2.7);
    8.4 rounds the resized size first and uses per-axis gains (yolov8_face README §7)."""
    h_in, w_in = input_hw
    h, w = image_hw
    gain = min(h_in / h, w_in / w)
    if per_axis_gain:
        new_h, new_w = max(round(h * gain), 1), max(round(w * gain), 1)
        gain_y, gain_x = new_h / h, new_w / w
        pad_x, pad_y = round((w_in - new_w) / 2 - 0.1), round((h_in - new_h) / 2 - 0.1)
    else:
        gain_y = gain_x = gain
        pad_x, pad_y = round((w_in - w * gain) / 2 - 0.1), round((h_in - h * gain) / 2 - 0.1)
    out = np.array(boxes, dtype=np.float32, copy=True)
    out[:, [0, 2]] = ((out[:, [0, 2]] - pad_x) / gain_x).clip(0, w)
    out[:, [1, 3]] = ((out[:, [1, 3]] - pad_y) / gain_y).clip(0, h)
    return out


@dataclass(frozen=True)
class DetectorSettings:
    """``YOLO(path)(rgb, conf=...)`` with ultralytics' predict defaults; conf 0.7 is the expression
    editor node's call (expression-editor.md §2.7)."""

    size: int = 640
    conf: float = 0.7
    iou: float = 0.7
    max_det: int = 300
    # Spec §2.7 describes the ultralytics 8.x releases of the node's time: minimal stride-32
    # padding and single-gain rescaling. ultralytics 8.4 pads to a square and rescales per axis.
    minimal_padding: bool = True
    per_axis_gain: bool = False


class YoloDetector:
    """A YOLOv8 detection network with ultralytics' pre- and post-processing."""

    def __init__(self, network: YoloV8, settings: DetectorSettings = DetectorSettings()):
        self.network = network
        self.settings = settings

    @torch.no_grad()
    def detect(self, image_rgb: np.ndarray) -> np.ndarray:
        """(n, 6) float32 rows [x1, y1, x2, y2, score, class] in image pixels, best first."""
        s = self.settings
        stride = int(self.network.stride.max())
        geometry = letterbox_geometry(image_rgb.shape[:2], s.size, stride, s.minimal_padding)
        x = network_input(letterbox_image(image_rgb, geometry))
        device = next(self.network.parameters()).device
        box_logits, cls_logits, level_hw = self.network(x.to(device))
        raw = decode_head(box_logits.float().cpu(), cls_logits.float().cpu(), level_hw,
                          self.network.stride.tolist(), self.network.detect.dfl.bin_values().float().cpu())
        detections, _ = non_max_suppression(raw, s.conf, s.iou, s.max_det)
        out = detections.numpy()
        out[:, :4] = scale_boxes(out[:, :4], geometry.input_hw, image_rgb.shape[:2], s.per_axis_gain)
        return out

"""The one greedy non-maximum suppression of the face detectors (numpy, as both references run it)."""
from __future__ import annotations

import numpy as np


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, pixel_offset: float = 0.0) -> np.ndarray:
    """Indices kept, best first: highest score first (stable on ties), and a box is dropped when
    its IoU with a kept box exceeds ``iou_threshold``.

    ``pixel_offset`` 0 measures areas as (x2-x1)*(y2-y1), torchvision.ops.nms's convention that
    facexlib's RetinaFace uses (sadtalker.md, Decisions); 1 adds a pixel to each side length, the
    "+1" convention of insightface's SCRFD (faceswap.md §3.3 step 8).
    """
    boxes = np.asarray(boxes, dtype=np.float32)
    x1, y1, x2, y2 = (boxes[:, j] for j in range(4))
    areas = (x2 - x1 + pixel_offset) * (y2 - y1 + pixel_offset)
    order = np.argsort(-np.asarray(scores), kind="stable")
    keep = []
    while order.size > 0:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + pixel_offset)
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + pixel_offset)
        inter = w * h
        iou = inter / (areas[i] + areas[rest] - inter)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)

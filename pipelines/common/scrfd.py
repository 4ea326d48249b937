"""SCRFD face detection on ``det_10g.onnx`` / ``scrfd_10g_bnkps.onnx`` (specs/faceswap.md §3.3, §9.2).

The ONNX file computes the raw head outputs; everything around it (letterbox, anchors, decoding,
NMS, the max_num ranking) is here, as pure functions, reproducing insightface 0.7.3's
``SCRFD.detect`` with a fixed ``det_size`` (§1.5: 640x640 gives 0.7.3's results).
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from .face_types import Face
from .nms import nms
from .onnx_session import onnx_session

DET_SIZE = (640, 640)  # (width, height); §1.5
DET_THRESH = 0.5
NMS_THRESH = 0.4
INPUT_MEAN = 127.5  # detection always uses 127.5 / 128 (§3.2)
INPUT_STD = 128.0

# Head layout by output count (§3.3): strides, anchors per location, keypoints present.
HEAD_LAYOUTS = {
    6: ((8, 16, 32), 2, False),
    9: ((8, 16, 32), 2, True),
    10: ((8, 16, 32, 64, 128), 1, False),
    15: ((8, 16, 32, 64, 128), 1, True),
}


def letterbox_size(image_hw: tuple[int, int], det_size: tuple[int, int] = DET_SIZE) -> tuple[int, int]:
    """(new_h, new_w) of the image scaled to fit ``det_size`` (w, h) with its aspect ratio kept.

    Truncated with ``int()`` exactly as insightface does; the decoded boxes depend on it through
    ``det_scale`` (§3.3 step 1).
    """
    h, w = image_hw
    im_ratio = h / w
    if im_ratio > det_size[1] / det_size[0]:
        return det_size[1], int(det_size[1] / im_ratio)
    return int(det_size[0] * im_ratio), det_size[0]


def letterbox(img: np.ndarray, det_size: tuple[int, int] = DET_SIZE) -> tuple[np.ndarray, float]:
    """The image resized by ``letterbox_size`` and pasted at the top-left of a black ``det_size``
    canvas, and ``det_scale = new_h / img_h`` (§3.3 step 1)."""
    new_h, new_w = letterbox_size(img.shape[:2], det_size)
    canvas = np.zeros((det_size[1], det_size[0], 3), dtype=np.uint8)
    canvas[:new_h, :new_w] = cv2.resize(img, (new_w, new_h))
    return canvas, new_h / img.shape[0]


def detection_blob(det_img: np.ndarray) -> np.ndarray:
    """(RGB - 127.5) / 128 as a 1x3xHxW float32 blob (§3.3 step 2)."""
    h, w = det_img.shape[:2]
    return cv2.dnn.blobFromImage(
        det_img, 1.0 / INPUT_STD, (w, h), (INPUT_MEAN,) * 3, swapRB=True
    )


def anchor_centers(rows: int, cols: int, stride: int, num_anchors: int) -> np.ndarray:
    """(rows*cols*num_anchors, 2) float32 (x, y) centres in (row, col, anchor) order.

    A centre is (col*stride, row*stride), with no half-pixel offset (§3.3 step 4).
    """
    ys, xs = np.mgrid[:rows, :cols]
    centers = (np.stack([xs, ys], axis=-1).astype(np.float32) * stride).reshape(-1, 2)
    return np.repeat(centers, num_anchors, axis=0)


def distance_to_bbox(centers: np.ndarray, distance: np.ndarray) -> np.ndarray:
    """Boxes (x1, y1, x2, y2) from (left, top, right, bottom) distances to the anchor centres."""
    return np.stack(
        [
            centers[:, 0] - distance[:, 0],
            centers[:, 1] - distance[:, 1],
            centers[:, 0] + distance[:, 2],
            centers[:, 1] + distance[:, 3],
        ],
        axis=-1,
    )


def distance_to_kps(centers: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """(N, K, 2) keypoints from per-point (dx, dy) offsets to the anchor centres."""
    return offsets.reshape(len(offsets), -1, 2) + centers[:, None, :]


def decode_head_outputs(
    outputs: list[np.ndarray],
    input_hw: tuple[int, int],
    det_scale: float,
    threshold: float = DET_THRESH,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Candidates from the raw head outputs, in image pixels, sorted by score descending.

    ``outputs`` are in session order: all score maps, then all box maps, then all keypoint maps
    (§3.3 step 3). Returns ``pre_det`` (m, 5) float32 [x1, y1, x2, y2, score] and the keypoints
    (m, 5, 2) float32 (None for heads without keypoints).
    """
    strides, num_anchors, has_kps = HEAD_LAYOUTS[len(outputs)]
    # A rank-3 first output means a batched export: take batch item 0 (§3.3 step 3).
    if outputs[0].ndim == 3:
        outputs = [o[0] for o in outputs]
    levels = len(strides)
    scores_all, boxes_all, kps_all = [], [], []
    for i, stride in enumerate(strides):
        scores = outputs[i]
        centers = anchor_centers(input_hw[0] // stride, input_hw[1] // stride, stride, num_anchors)
        keep = np.where(scores >= threshold)[0]
        boxes = distance_to_bbox(centers, outputs[i + levels] * stride)
        scores_all.append(scores[keep])
        boxes_all.append(boxes[keep])
        if has_kps:
            kps = distance_to_kps(centers, outputs[i + 2 * levels] * stride)
            kps_all.append(kps[keep])
    scores = np.vstack(scores_all)
    order = np.argsort(-scores.ravel(), kind="stable")
    boxes = np.vstack(boxes_all) / det_scale
    pre_det = np.hstack((boxes, scores)).astype(np.float32, copy=False)[order]
    kps = (np.vstack(kps_all) / det_scale).astype(np.float32, copy=False)[order] if has_kps else None
    return pre_det, kps


def rank_by_size_and_centre(
    dets: np.ndarray, image_hw: tuple[int, int], max_num: int, metric: str = "default"
) -> np.ndarray:
    """Indices of the ``max_num`` best detections, best first (§3.3 step 9).

    ``default`` prefers big faces near the image centre (area - 2 * squared centre offset, area
    without the +1); ``max`` ranks by area alone.
    """
    area = (dets[:, 2] - dets[:, 0]) * (dets[:, 3] - dets[:, 1])
    if metric == "max":
        values = area
    else:
        cx = (dets[:, 0] + dets[:, 2]) / 2 - image_hw[1] // 2
        cy = (dets[:, 1] + dets[:, 3]) / 2 - image_hw[0] // 2
        values = area - 2.0 * (cx**2 + cy**2)
    return np.argsort(-values, kind="stable")[:max_num]


def detections_from_outputs(
    outputs: list[np.ndarray],
    input_hw: tuple[int, int],
    det_scale: float,
    image_hw: tuple[int, int],
    det_thresh: float = DET_THRESH,
    nms_thresh: float = NMS_THRESH,
    max_num: int = 0,
    metric: str = "default",
) -> tuple[np.ndarray, np.ndarray | None]:
    """Everything ``SCRFD.detect`` does after the network: decode, threshold, NMS, and with
    ``max_num > 0`` keep the best ``max_num`` by ``rank_by_size_and_centre``."""
    pre_det, kps = decode_head_outputs(outputs, input_hw, det_scale, det_thresh)
    keep = nms(pre_det[:, :4], pre_det[:, 4], nms_thresh, pixel_offset=1.0)  # §3.3 step 8: "+1 pixel" areas
    det = pre_det[keep]
    kps = kps[keep] if kps is not None else None
    if 0 < max_num < len(det):
        best = rank_by_size_and_centre(det, image_hw, max_num, metric)
        det = det[best]
        kps = kps[best] if kps is not None else None
    return det, kps


class SCRFD:
    """The SCRFD detector of one ONNX file; ``detect`` returns what insightface's returns."""

    def __init__(
        self,
        model_file: Path | str,
        device: str | None = None,
        det_size: tuple[int, int] = DET_SIZE,
        det_thresh: float = DET_THRESH,
        nms_thresh: float = NMS_THRESH,
    ):
        self.model_file = Path(model_file)
        self.session = onnx_session(model_file, device)
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]
        if len(self.output_names) not in HEAD_LAYOUTS:
            raise ValueError(f"{model_file}: {len(self.output_names)} outputs is no SCRFD head layout")
        # A file with a fixed input size is run at that size; the buffalo exports are symbolic
        # ('?', '?') and run at det_size (§9.2).
        h, w = self.session.get_inputs()[0].shape[2:4]
        self.det_size = (w, h) if isinstance(w, int) and isinstance(h, int) else tuple(det_size)
        self.det_thresh = det_thresh
        self.nms_thresh = nms_thresh

    def raw_outputs(self, blob: np.ndarray) -> list[np.ndarray]:
        return self.session.run(self.output_names, {self.input_name: blob})

    def detect(
        self, img_bgr: np.ndarray, max_num: int = 0, metric: str = "default"
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Detections (n, 5) [x1, y1, x2, y2, score] float32 and keypoints (n, 5, 2) float32."""
        det_img, det_scale = letterbox(img_bgr, self.det_size)
        outputs = self.raw_outputs(detection_blob(det_img))
        input_hw = (self.det_size[1], self.det_size[0])
        return detections_from_outputs(
            outputs, input_hw, det_scale, img_bgr.shape[:2],
            self.det_thresh, self.nms_thresh, max_num, metric,
        )

    def detect_faces(self, img_bgr: np.ndarray) -> list[Face]:
        """Faces highest score first; requires a head with keypoints (the swap aligns on them)."""
        det, kps = self.detect(img_bgr)
        if kps is None:
            raise ValueError(f"{self.model_file}: this SCRFD head has no keypoints")
        return [Face(bbox=d[:4].copy(), kps=k.copy(), det_score=float(d[4])) for d, k in zip(det, kps)]

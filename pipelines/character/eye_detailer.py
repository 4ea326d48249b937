"""Impact-Pack's FaceDetailer with a bbox eye detector, as the workflow runs it (sticker-and-character.md
§3.3 step 8, §3.5 "Eye detailer").

Per detected eye box (score ≥ 0.5, both sides over ``drop_size``): a crop of 3× the box, enlarged
until the box's short side is 384 px (the whole crop capped at 1024), re-denoised by the caller's
``enhance`` (a 4-step, denoise-0.35 img2img), scaled back and pasted through the box mask dilated by
10 px and feathered by 5 px. Boxes are handled in order, each on the result of the previous.

The detector is ``Eyes.pt`` through the project's YOLOv8 loader (never the ultralytics runtime).
The original's DifferentialDiffusion soft noise mask is not reproduced: the crop is re-denoised as
a whole and the feathered mask decides what is kept.
"""
from __future__ import annotations

from typing import Callable

import cv2
import numpy as np
from PIL import Image

from pipelines.common.yolo_detect import DetectorSettings, YoloDetector
from pipelines.common.yolo_face import YoloV8

from . import config

LATENT_GRID = 8


def eye_boxes(detections: np.ndarray, drop_size: int = config.EYES_DROP_SIZE) -> np.ndarray:
    """(n, 4) xyxy of the detections whose width and height both exceed ``drop_size``."""
    boxes = np.asarray(detections, dtype=np.float64)[:, :4]
    keep = ((boxes[:, 2] - boxes[:, 0]) > drop_size) & ((boxes[:, 3] - boxes[:, 1]) > drop_size)
    return boxes[keep]


def crop_region(box, crop_factor: float, width: int, height: int) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1): ``crop_factor`` × the box around its centre, shifted inside the image
    where it would cross an edge, and clipped when larger than the image."""
    x1, y1, x2, y2 = box
    crop_w = min(int((x2 - x1) * crop_factor), width)
    crop_h = min(int((y2 - y1) * crop_factor), height)
    x0 = int(min(max((x1 + x2) / 2 - crop_w / 2, 0), width - crop_w))
    y0 = int(min(max((y1 + y2) / 2 - crop_h / 2, 0), height - crop_h))
    return x0, y0, x0 + crop_w, y0 + crop_h


def detail_size(box, crop_w: int, crop_h: int, guide: int = config.EYES_GUIDE_SIZE,
                max_size: int = config.EYES_MAX_SIZE) -> tuple[int, int]:
    """(width, height) the crop is denoised at: the box's short side brought to ``guide``, the
    crop's long side at most ``max_size``, both on the 8-pixel latent grid."""
    x1, y1, x2, y2 = box
    scale = guide / max(min(x2 - x1, y2 - y1), 1.0)
    scale = min(scale, max_size / max(crop_w, crop_h))
    return (max(int(crop_w * scale) // LATENT_GRID * LATENT_GRID, LATENT_GRID),
            max(int(crop_h * scale) // LATENT_GRID * LATENT_GRID, LATENT_GRID))


def feathered_box_mask(crop_hw: tuple[int, int], box_in_crop, dilation: int = config.EYES_DILATION,
                       feather: int = config.EYES_FEATHER) -> np.ndarray:
    """float32 (H, W, 1) in [0, 1]: the box dilated by ``dilation`` px, edges blurred over ``feather`` px."""
    height, width = crop_hw
    x1, y1, x2, y2 = box_in_crop
    mask = np.zeros((height, width), dtype=np.float32)
    mask[max(int(y1) - dilation, 0):min(int(y2) + dilation, height),
         max(int(x1) - dilation, 0):min(int(x2) + dilation, width)] = 1.0
    if feather > 0:
        mask = cv2.GaussianBlur(mask, (2 * feather + 1, 2 * feather + 1), 0)
    return mask[..., None]


def _resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.LANCZOS))


class EyeDetailer:
    """Detect eyes, re-denoise each at detail size through ``enhance``, paste back feathered."""

    def __init__(self, network: YoloV8):
        self.detector = YoloDetector(network, DetectorSettings(conf=config.EYES_THRESHOLD))

    def __call__(self, image: np.ndarray, enhance: Callable[[np.ndarray], np.ndarray]) -> tuple[np.ndarray, int]:
        """The detailed image and the number of eye regions enhanced."""
        height, width = image.shape[:2]
        boxes = eye_boxes(self.detector.detect(image))
        out = image.copy()
        for box in boxes:
            x0, y0, x1, y1 = crop_region(box, config.EYES_CROP_FACTOR, width, height)
            crop = out[y0:y1, x0:x1]
            size = detail_size(box, x1 - x0, y1 - y0)
            enhanced = _resize(enhance(_resize(crop, size)), (x1 - x0, y1 - y0))
            local = (box[0] - x0, box[1] - y0, box[2] - x0, box[3] - y0)
            mask = feathered_box_mask(crop.shape[:2], local)
            blended = crop.astype(np.float32) * (1.0 - mask) + enhanced.astype(np.float32) * mask
            out[y0:y1, x0:x1] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
        return out, len(boxes)

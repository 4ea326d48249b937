"""full/extfull paste-back: every rendered frame is Poisson-blended into the original image (spec §5.9)."""
from __future__ import annotations

import cv2
import numpy as np


def box_center(box: tuple[int, int, int, int]) -> tuple[int, int]:
    """``((x1 + x2) // 2, (y1 + y2) // 2)``, the clone centre upstream passes (§5.9 step 3)."""
    x1, y1, x2, y2 = box
    return (x1 + x2) // 2, (y1 + y2) // 2


def paste_frame(frame_rgb: np.ndarray, original_rgb: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """The frame resized (bilinear) into ``box`` (x1, y1, x2, y2) of the original image and blended with
    ``cv2.seamlessClone`` (NORMAL_CLONE) under an all-255 mask, as upstream (§5.9 step 3).

    The Poisson blend makes the box border take the original's colours, so the whole box interior
    is colour-adapted; it is not an alpha paste. The blend is per channel, so RGB in gives the same
    result as upstream's BGR.
    """
    x1, y1, x2, y2 = box
    patch = cv2.resize(frame_rgb, (x2 - x1, y2 - y1))
    mask = np.full(patch.shape, 255, dtype=np.uint8)
    return cv2.seamlessClone(patch, original_rgb, mask, box_center(box), cv2.NORMAL_CLONE)

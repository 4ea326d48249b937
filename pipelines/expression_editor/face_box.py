"""The expression editor node's choice among the YOLOv8 face boxes (spec §4.2 step 2); the boxes
themselves come from ``pipelines.common.yolo_detect``."""
from __future__ import annotations

import numpy as np


def select_face_box(boxes: np.ndarray, image_width: int, min_width: float = 30.0):
    """The node's choice (spec §4.2 step 2): boxes at least 30 px wide, the one whose centre is
    closest to the image's horizontal centre, first one on ties; None when there is none."""
    best, best_distance = None, image_width
    for x1, y1, x2, y2 in np.asarray(boxes, dtype=np.float32)[:, :4]:
        width = x2 - x1
        if width < min_width:
            continue
        distance = abs(image_width / 2 - (x1 + width / 2))
        if distance < best_distance:
            best, best_distance = (x1, y1, x2, y2), distance
    return best

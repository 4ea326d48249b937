"""The InstantID keypoint image: the IdentityNet's control hint (sticker-and-character.md §4.1).

Each outer point (eyes, mouth corners) is joined to the nose by a filled ellipse in the outer
point's colour, the ellipses are dimmed to 60 %, and a radius-10 dot is drawn on every point.
Rounding follows the reference drawing exactly (shared/parity/sdxl_conditioning/README.md §3.3):
means and lengths in the keypoints' own dtype, ``int()`` truncation toward zero, integer OpenCV
drawing without antialiasing.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

# insightface order: image-left eye, image-right eye, nose, image-left / image-right mouth corner.
KPS_COLOURS = ((255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255))
NOSE = 2
LIMB_OUTER_POINTS = (0, 1, 3, 4)
LIMB_HALF_WIDTH = 4
LIMB_DIMMING = 0.6
DOT_RADIUS = 10


def draw_kps(kps: np.ndarray, width: int, height: int) -> np.ndarray:
    """uint8 (height, width, 3) RGB keypoint image of five (x, y) points on black."""
    kps = np.asarray(kps)
    canvas = np.zeros((height, width, 3), dtype=np.float64)
    for outer in LIMB_OUTER_POINTS:
        xs = kps[[outer, NOSE], 0]
        ys = kps[[outer, NOSE], 1]
        length = ((xs[0] - xs[1]) ** 2 + (ys[0] - ys[1]) ** 2) ** 0.5
        angle = math.degrees(math.atan2(ys[0] - ys[1], xs[0] - xs[1]))
        polygon = cv2.ellipse2Poly((int(np.mean(xs)), int(np.mean(ys))), (int(length / 2), LIMB_HALF_WIDTH),
                                   int(angle), 0, 360, 1)
        cv2.fillConvexPoly(canvas, polygon, KPS_COLOURS[outer])
    image = (canvas * LIMB_DIMMING).astype(np.uint8)
    for (x, y), colour in zip(kps, KPS_COLOURS):
        cv2.circle(image, (int(x), int(y)), DOT_RADIUS, colour, -1)
    return image

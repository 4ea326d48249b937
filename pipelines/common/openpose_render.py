"""The OpenPose/DWPose skeleton image the OpenPose-XL ControlNet was trained on.

The drawing conventions are those of controlnet_aux's ``draw_poses`` (parity fixture
``sdxl_conditioning/openpose_render``, README §3.4): limbs as filled ellipses at 60 % of their
colour, body points as radius-4 dots, hand edges as rainbow lines with blue joints, face points as
small white dots, all LINE_8 without antialiasing. Coordinates are normalised to the canvas
(x / W, y / H) and become pixels by truncation, as in the reference.
"""
from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass

import cv2
import numpy as np

# OpenPose-18 limbs as 1-based point pairs, each drawn in the colour of the same index.
BODY_LIMBS = (
    (2, 3), (2, 6), (3, 4), (4, 5), (6, 7), (7, 8), (2, 9), (9, 10), (10, 11), (2, 12), (12, 13),
    (13, 14), (2, 1), (1, 15), (15, 17), (1, 16), (16, 18),
)
BODY_COLORS = (
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0), (0, 255, 0),
    (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255), (0, 0, 255), (85, 0, 255),
    (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85),
)
HAND_EDGES = (
    (0, 1), (1, 2), (2, 3), (3, 4), (0, 5), (5, 6), (6, 7), (7, 8), (0, 9), (9, 10), (10, 11), (11, 12),
    (0, 13), (13, 14), (14, 15), (15, 16), (0, 17), (17, 18), (18, 19), (19, 20),
)
HAND_JOINT_COLOR = (0, 0, 255)
FACE_POINT_COLOR = (255, 255, 255)
LIMB_HALF_WIDTH = 4
BODY_POINT_RADIUS = 4
HAND_LINE_THICKNESS = 2
HAND_POINT_RADIUS = 4
FACE_POINT_RADIUS = 3
# Hand and face points whose integer pixel coordinate is 0 count as undetected (README §3.4).
UNDETECTED_EPS = 0.01


@dataclass(frozen=True)
class PersonPose:
    """One person's keypoints, normalised to the canvas.

    ``body`` is (18, 2) in OpenPose-18 order with ``body_valid`` (18,) marking the points that
    exist; ``left_hand`` / ``right_hand`` are (21, 2) or None; ``face`` is (68, 2) or None.
    """

    body: np.ndarray
    body_valid: np.ndarray
    left_hand: np.ndarray | None = None
    right_hand: np.ndarray | None = None
    face: np.ndarray | None = None


def hand_edge_color(edge: int) -> tuple[float, float, float]:
    """Edge ``edge`` of 20 takes hue edge/20 at full saturation; OpenCV rounds the float colour."""
    r, g, b = colorsys.hsv_to_rgb(edge / float(len(HAND_EDGES)), 1.0, 1.0)
    return r * 255.0, g * 255.0, b * 255.0


def draw_body(canvas: np.ndarray, body: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Limbs first (dimmed ellipses), then every valid point, unfiltered: OpenCV clips the rest."""
    height, width = canvas.shape[:2]
    for (a, b), color in zip(BODY_LIMBS, BODY_COLORS):
        if not (valid[a - 1] and valid[b - 1]):
            continue
        xs = np.array([body[a - 1, 0], body[b - 1, 0]]) * float(width)
        ys = np.array([body[a - 1, 1], body[b - 1, 1]]) * float(height)
        length = ((ys[0] - ys[1]) ** 2 + (xs[0] - xs[1]) ** 2) ** 0.5
        angle = math.degrees(math.atan2(ys[0] - ys[1], xs[0] - xs[1]))
        polygon = cv2.ellipse2Poly(
            (int(np.mean(xs)), int(np.mean(ys))), (int(length / 2), LIMB_HALF_WIDTH), int(angle), 0, 360, 1
        )
        cv2.fillConvexPoly(canvas, polygon, [int(float(c) * 0.6) for c in color])
    for point, ok, color in zip(body, valid, BODY_COLORS):
        if ok:
            center = (int(point[0] * width), int(point[1] * height))
            cv2.circle(canvas, center, BODY_POINT_RADIUS, color, thickness=-1)
    return canvas


def _pixel(point: np.ndarray, width: int, height: int) -> tuple[int, int]:
    return int(point[0] * width), int(point[1] * height)


def _detected(pixel: tuple[int, int]) -> bool:
    return pixel[0] > UNDETECTED_EPS and pixel[1] > UNDETECTED_EPS


def draw_hand(canvas: np.ndarray, hand: np.ndarray) -> np.ndarray:
    height, width = canvas.shape[:2]
    pixels = [_pixel(p, width, height) for p in hand]
    for edge, (a, b) in enumerate(HAND_EDGES):
        if _detected(pixels[a]) and _detected(pixels[b]):
            cv2.line(canvas, pixels[a], pixels[b], hand_edge_color(edge), thickness=HAND_LINE_THICKNESS)
    for pixel in pixels:
        if _detected(pixel):
            cv2.circle(canvas, pixel, HAND_POINT_RADIUS, HAND_JOINT_COLOR, thickness=-1)
    return canvas


def draw_face(canvas: np.ndarray, face: np.ndarray) -> np.ndarray:
    height, width = canvas.shape[:2]
    for point in face:
        pixel = _pixel(point, width, height)
        if _detected(pixel):
            cv2.circle(canvas, pixel, FACE_POINT_RADIUS, FACE_POINT_COLOR, thickness=-1)
    return canvas


def render_openpose(
    people: list[PersonPose], height: int, width: int, body: bool = True, hands: bool = True, face: bool = True
) -> np.ndarray:
    """The (H, W, 3) uint8 RGB pose image: person by person, body, left hand, right hand, face."""
    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    for person in people:
        if body:
            draw_body(canvas, person.body, person.body_valid)
        if hands:
            for hand in (person.left_hand, person.right_hand):
                if hand is not None:
                    draw_hand(canvas, hand)
        if face and person.face is not None:
            draw_face(canvas, person.face)
    return canvas

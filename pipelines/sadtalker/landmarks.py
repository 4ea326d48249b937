"""68-point landmarks from RetinaFace + AWing FAN, as SadTalker's KeypointExtractor computes them
(sadtalker.md §3.10, §5.3 steps 1-2): heatmap decoding with upstream's sub-pixel quirk, the
facexlib 98 -> 68 map, and the detect -> crop -> FAN -> map glue.
"""
from __future__ import annotations

import cv2
import numpy as np
import torch

from ..common.fan_awing import FAN, HEATMAP_SIZE, INPUT_SIZE
from ..common.retinaface import RetinaFace, detect_faces

# SadTalker keeps only confident detections (§3.10).
CROP_DETECTION_THRESHOLD = 0.97


def heatmaps_to_points(heatmaps: np.ndarray) -> np.ndarray:
    """(B,N,H,W) heatmaps -> (B,N,2) float64 (x, y) in heatmap pixels (upstream ``calculate_points``).

    The argmax moves 0.25 px towards the larger neighbour along x and y, then +0.5. Neighbours
    are read in the flattened map, as upstream does: x at index +-1 without row handling
    (index -1 wraps to the last element); y at +-W, except that if *any* landmark's index + W
    runs past the end, every landmark reads the last element as its lower neighbour, and if
    any index - W is <= 0, every landmark reads element 0 as its upper one (§3.10 quirk).
    Upstream's IndexError for an argmax at the very last element is avoided by clamping the
    x+1 index (§7).
    """
    b, n, h, w = heatmaps.shape
    flat = heatmaps.reshape(b * n, h * w)
    rows = np.arange(b * n)
    index = np.argmax(flat, axis=1)
    points = np.stack([index % w, index // w], axis=1).astype(np.float64)

    x_next = flat[rows, np.minimum(index + 1, h * w - 1)]
    x_prev = flat[rows, index - 1]
    y_next = flat[rows, h * w - 1] if np.any(index + w >= h * w) else flat[rows, index + w]
    y_prev = flat[rows, 0] if np.any(index - w <= 0) else flat[rows, index - w]

    points += np.sign(np.stack([x_next - x_prev, y_next - y_prev], axis=1)) * 0.25
    return (points + 0.5).reshape(b, n, 2)


# facexlib's landmark_98_to_68: the 68-point index -> the 98-point indices averaged for it.
_MAP_98_TO_68: list[tuple[int, ...]] = (
    [(2 * i,) for i in range(17)]                                      # jaw: even points 0..32
    + [(33,), (34, 41), (35, 40), (36, 39), (37, 38)]                  # left brow
    + [(42, 50), (43, 49), (44, 48), (45, 47), (46,)]                  # right brow
    + [(i,) for i in range(51, 60)]                                    # nose
    + [(i,) for i in (60, 61, 63, 64, 65, 67)]                         # left eye
    + [(i,) for i in (68, 69, 71, 72, 73, 75)]                         # right eye
    + [(i,) for i in range(76, 96)]                                    # mouth
)


def landmarks_98_to_68(points98: np.ndarray) -> np.ndarray:
    """(98,2) WFLW points -> (68,2) float32 iBUG points (pairs averaged for the brows)."""
    out = np.zeros((68, 2), dtype=np.float32)
    for i, src in enumerate(_MAP_98_TO_68):
        out[i] = points98[src[0]] if len(src) == 1 else (points98[src[0]] + points98[src[1]]) / 2
    return out


def fan_input(crop_rgb_u8: np.ndarray) -> torch.Tensor:
    """Face crop (H,W,3) uint8 RGB -> (1,3,256,256) float32 BGR / 255 (bilinear resize)."""
    resized = cv2.resize(np.ascontiguousarray(crop_rgb_u8), (INPUT_SIZE, INPUT_SIZE))
    bgr = np.ascontiguousarray(resized[..., ::-1].transpose(2, 0, 1))
    return (torch.from_numpy(bgr).float() / 255.0)[None]


@torch.no_grad()
def fan_landmarks98(net: FAN, crop_rgb_u8: np.ndarray) -> np.ndarray:
    """(98,2) float64 landmarks in crop pixels (upstream ``FAN.get_landmarks``)."""
    h, w = crop_rgb_u8.shape[:2]
    weight = net.bn1.weight
    outputs, _ = net(fan_input(crop_rgb_u8).to(device=weight.device, dtype=weight.dtype))
    heatmaps = outputs[-1][:, :-1].float().cpu().numpy()  # drop the boundary map
    return heatmaps_to_points(heatmaps)[0] * np.array([w / HEATMAP_SIZE, h / HEATMAP_SIZE])


def face_landmarks68(detector: RetinaFace, fan: FAN, image_rgb_u8: np.ndarray) -> np.ndarray | None:
    """KeypointExtractor.extract_keypoint: (68,2) float32 image-pixel landmarks of the first
    detected face, or None without a face. The detector sees the RGB array as BGR, and the
    crop uses the integer-truncated box (§5.3 steps 1-2). Box corners left of or above the
    image are clamped to 0: upstream slices with the negative index and then fails on the
    empty crop."""
    faces = detect_faces(detector, image_rgb_u8, CROP_DETECTION_THRESHOLD, rgb_as_bgr=True)
    if not len(faces):
        return None
    x1, y1, x2, y2 = (max(int(v), 0) for v in faces.boxes[0])
    points = landmarks_98_to_68(fan_landmarks98(fan, image_rgb_u8[y1:y2, x1:x2]))
    points[:, 0] += x1
    points[:, 1] += y1
    return points

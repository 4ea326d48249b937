"""Putting an aligned face crop back into its frame (specs/faceswap.md §3.5 step 7, §4.1, §6.3).

Pure functions. ``paste_back`` is facefoundry's paste: the crop and a feathered crop-space mask are
inverse-warped only inside the crop's footprint. insightface's own paste (an eroded, blurred square
mask over the full frame) is not reproduced: the swap pipeline does not use it (§1 item 9); the
parity test holds ``paste_back``'s inverse warp to the reference's pasted image where that mask is 1.
"""
from __future__ import annotations

import math

import cv2
import numpy as np


def warp_to_frame(crop: np.ndarray, m: np.ndarray, frame_hw: tuple[int, int]) -> np.ndarray:
    """Inverse-warp a crop (image or mask) made with the image->crop matrix ``m`` to the frame:
    bilinear, zero outside the crop."""
    im = cv2.invertAffineTransform(m)
    return cv2.warpAffine(crop, im, (frame_hw[1], frame_hw[0]), borderValue=0.0)


def blend(frame: np.ndarray, warped: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``mask * warped + (1 - mask) * frame`` in float32 (the caller picks the uint8 rounding)."""
    mask = mask.astype(np.float32, copy=False)
    if mask.ndim == 2 and frame.ndim == 3:
        mask = mask[..., None]
    return mask * warped + (1 - mask) * frame.astype(np.float32)


def feathered_box_mask(
    size: int, blur: float = 0.3, padding: tuple[float, float, float, float] = (0, 0, 0, 0)
) -> np.ndarray:
    """A (size, size) float32 crop-space mask: ones with zeroed border strips, Gaussian-blurred
    (the "box" mask of §4.1, default blur 0.3).

    ``blur`` is the width of the fade as a fraction of half the crop (sigma = fade / 4);
    ``padding`` (top, right, bottom, left) in percent of the crop widens the strips. Each strip is
    wider than the blur kernel's reach, so the mask is exactly 0 on the crop's edge and the crop's
    border never shows in the frame.
    """
    sigma = size * 0.5 * blur / 4
    reach = int(math.ceil(3 * sigma))
    top, right, bottom, left = (max(reach + 1, int(size * p / 100)) for p in padding)
    mask = np.ones((size, size), dtype=np.float32)
    mask[:top, :] = 0
    mask[size - bottom:, :] = 0
    mask[:, :left] = 0
    mask[:, size - right:] = 0
    if reach > 0:
        mask = cv2.GaussianBlur(mask, (2 * reach + 1, 2 * reach + 1), sigma)
    return mask


def feather_mask(mask: np.ndarray, sigma: float) -> np.ndarray:
    """A hard (bool or 0/1) mask softened by a Gaussian of ``sigma`` pixels, float32 in [0, 1]."""
    mask = mask.astype(np.float32)
    if sigma <= 0:
        return mask
    return np.clip(cv2.GaussianBlur(mask, (0, 0), sigma), 0.0, 1.0)


def crop_footprint(m: np.ndarray, crop_size: int, frame_hw: tuple[int, int]) -> tuple[int, int, int, int] | None:
    """The frame rectangle (x0, y0, x1, y1), end-exclusive, that the crop covers; None if none.

    One pixel of margin covers the bilinear reach of the crop's outermost pixels.
    """
    im = cv2.invertAffineTransform(m)
    corners = np.array([[0, 0], [crop_size, 0], [0, crop_size], [crop_size, crop_size]], dtype=np.float64)
    pts = corners @ im[:, :2].T + im[:, 2]
    x0 = max(int(math.floor(pts[:, 0].min())) - 1, 0)
    y0 = max(int(math.floor(pts[:, 1].min())) - 1, 0)
    x1 = min(int(math.ceil(pts[:, 0].max())) + 2, frame_hw[1])
    y1 = min(int(math.ceil(pts[:, 1].max())) + 2, frame_hw[0])
    if x0 >= x1 or y0 >= y1:
        return None
    return x0, y0, x1, y1


def paste_back(frame: np.ndarray, crop: np.ndarray, m: np.ndarray, crop_mask: np.ndarray) -> np.ndarray:
    """``frame`` with ``crop`` blended in through ``crop_mask`` (float in [0, 1], crop-space).

    ``m`` maps frame pixels to crop pixels (the alignment matrix). Only the crop's footprint is
    warped, so the cost does not grow with the frame (§4.1); pixels where the warped mask is 0 are
    returned unchanged.
    """
    out = frame.copy()
    box = crop_footprint(m, crop.shape[0], frame.shape[:2])
    if box is None:
        return out
    x0, y0, x1, y1 = box
    shifted = m.copy()
    shifted[:, 2] += m[:, :2] @ np.array([x0, y0], dtype=np.float64)
    roi_hw = (y1 - y0, x1 - x0)
    warped = warp_to_frame(crop, shifted, roi_hw)
    mask = warp_to_frame(crop_mask.astype(np.float32), shifted, roi_hw)
    # Rounded, not truncated like insightface: truncation darkens every pixel under a mask tail
    # (1 - 1e-7) * 100 -> 99, and the mask tails reach far with a feathered mask.
    merged = blend(frame[y0:y1, x0:x1], warped, mask)
    out[y0:y1, x0:x1] = np.clip(np.rint(merged), 0, 255).astype(np.uint8)
    return out

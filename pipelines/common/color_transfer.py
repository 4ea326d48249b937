"""LAB mean/std colour transfer (Reinhard) measured on skin (specs/faceswap.md §4.4, §6.5).

Statistics come from skin pixels only (parser classes skin 1 and nose 10) so that hair, eyes and
background do not bias them (§4.4).
"""
from __future__ import annotations

import cv2
import numpy as np

SKIN_CLASSES = (1, 10)  # CelebAMask-HQ skin, nose (§4.1 class table)


def skin_mask(parsing: np.ndarray, classes: tuple[int, ...] = SKIN_CLASSES) -> np.ndarray:
    """Bool mask of the pixels whose face-parser class is one of ``classes``."""
    return np.isin(parsing, classes)


def bgr_to_lab(img_bgr: np.ndarray) -> np.ndarray:
    """Float32 CIE LAB (L in [0, 100]) of a BGR uint8 image, without 8-bit quantisation."""
    return cv2.cvtColor(img_bgr.astype(np.float32) / 255.0, cv2.COLOR_BGR2LAB)


def lab_to_bgr(lab: np.ndarray) -> np.ndarray:
    bgr = cv2.cvtColor(lab.astype(np.float32), cv2.COLOR_LAB2BGR)
    return np.clip(np.rint(bgr * 255.0), 0, 255).astype(np.uint8)


def masked_mean_std(lab: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation of the pixels under ``mask``, float64."""
    pixels = lab[mask.astype(bool)].astype(np.float64)
    return pixels.mean(axis=0), pixels.std(axis=0)


def transfer_lab_stats(
    img_bgr: np.ndarray,
    reference_bgr: np.ndarray,
    img_mask: np.ndarray,
    reference_mask: np.ndarray,
    eps: float = 1e-6,
) -> np.ndarray:
    """``img_bgr`` recoloured so that its LAB mean/std under ``img_mask`` match the reference's
    under ``reference_mask``; the whole image is mapped and the caller blends it where wanted.

    An empty mask on either side leaves nothing to measure, so the image comes back unchanged.
    """
    if not img_mask.any() or not reference_mask.any():
        return img_bgr.copy()
    lab = bgr_to_lab(img_bgr)
    mean, std = masked_mean_std(lab, img_mask)
    ref_mean, ref_std = masked_mean_std(bgr_to_lab(reference_bgr), reference_mask)
    mapped = (lab - mean) * (ref_std / (std + eps)) + ref_mean
    return lab_to_bgr(mapped)

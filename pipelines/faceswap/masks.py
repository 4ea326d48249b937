"""Masks for the swap: parser class sets, dilation, the neck seam band (faceswap.md §6.3 step 5, §6.4)."""
from __future__ import annotations

import cv2
import numpy as np

# ParseNet's 19 classes (facexlib order): 0 background, 1 skin, 2/3 brows, 4/5 eyes, 6 glasses,
# 7/8 ears, 9 earring, 10 nose, 11 mouth, 12/13 lips, 14 neck, 15 necklace, 16 cloth, 17 hair, 18 hat.
INNER_FACE = (1, 2, 3, 4, 5, 10, 11, 12, 13)  # §6.3 step 5: skin, brows, eyes, nose, mouth, lips
INNER_CORE = (2, 3, 4, 5, 10, 11, 12, 13)  # the identity-bearing part the inpainter never touches
HEAD = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 17, 18)  # §6.4 step 5 (ears 7/8, hair 17, hat 18)


def class_mask(parsing: np.ndarray, classes) -> np.ndarray:
    """float32 {0, 1} mask of the pixels whose class is in ``classes``."""
    return np.isin(parsing, classes).astype(np.float32)


def dilate(mask: np.ndarray, pixels: int) -> np.ndarray:
    if pixels <= 0:
        return mask.astype(np.float32)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * pixels + 1, 2 * pixels + 1))
    return cv2.dilate(mask.astype(np.float32), kernel)


def band_below(mask: np.ndarray, height: int) -> np.ndarray:
    """The ``height``-pixel band from each column's lowest mask row down (the neck seam, §6.4 step 8)."""
    hard = mask > 0.5
    rows = np.arange(mask.shape[0])[:, None]
    bottom = mask.shape[0] - 1 - np.argmax(hard[::-1], axis=0)
    band = (rows >= bottom) & (rows < bottom + height) & hard.any(axis=0)
    return band.astype(np.float32)

"""WAS "Image Filter Adjustments" at the workflow's settings (sticker-and-character.md §3.3 step 10):
brightness 0, contrast 1 and saturation 1 are no-ops; sharpness 1.1, a 10 % blend towards
EDGE_ENHANCE_MORE, then DETAIL."""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

from .config import EDGE_ENHANCE_BLEND, SHARPNESS


def filter_adjustments(image: np.ndarray) -> np.ndarray:
    """uint8 HWC RGB → the same, sharpened, edge-enhanced and detail-filtered."""
    pil = ImageEnhance.Sharpness(Image.fromarray(image)).enhance(SHARPNESS)
    pil = Image.blend(pil, pil.filter(ImageFilter.EDGE_ENHANCE_MORE), EDGE_ENHANCE_BLEND)
    return np.asarray(pil.filter(ImageFilter.DETAIL))

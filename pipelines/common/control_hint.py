"""ControlNet hints sized the way ComfyUI sizes them (sticker-and-character.md §4.5 item 7).

ComfyUI centre-crops a hint to the latent's aspect ratio and resizes it with nearest-exact
(``common_upscale(..., "nearest-exact", "center")``); diffusers would stretch it with Lanczos.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def center_crop_box(width: int, height: int, target_width: int, target_height: int) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of the centred crop of a width x height image to the target's aspect."""
    old_aspect = width / height
    new_aspect = target_width / target_height
    x = y = 0
    if old_aspect > new_aspect:
        x = round((width - width * (new_aspect / old_aspect)) / 2)
    elif old_aspect < new_aspect:
        y = round((height - height * (old_aspect / new_aspect)) / 2)
    return x, y, width - x, height - y


def fit_hint(image: np.ndarray, width: int, height: int) -> torch.Tensor:
    """uint8 HWC RGB hint -> float (1, 3, height, width) in [0, 1], centre-cropped, nearest-exact."""
    x0, y0, x1, y1 = center_crop_box(image.shape[1], image.shape[0], width, height)
    crop = torch.from_numpy(np.ascontiguousarray(image[y0:y1, x0:x1])).permute(2, 0, 1)[None].float() / 255.0
    return F.interpolate(crop, size=(height, width), mode="nearest-exact")

"""The Zoe depth hint for the depth ControlNet (sticker-and-character.md §2.2 step 3, §2.3).

ZoeD_M12_N through transformers' ``ZoeDepthForDepthEstimation`` (``Intel/zoedepth-nyu``, the
same NYU-trained network converted to transformers' layout); §2.3 allows it, and its
post-processing differs a little from controlnet_aux's, which matters little at strength 0.2.
The map is made as controlnet_aux's ZoeDetector makes it: depth normalised between its 2nd and
85th percentiles, inverted (near is bright), 8-bit, three channels.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

NEAR_PERCENTILE = 2
FAR_PERCENTILE = 85
ZOE_MEAN = 0.5
ZOE_STD = 0.5
MULTIPLE = 32  # the BEiT backbone's patch grid needs sides in multiples of 32


def input_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """(h, w) with the shorter side at ``short_side``, aspect kept, multiples of 32."""
    scale = short_side / min(height, width)
    return (max(MULTIPLE, int(round(height * scale / MULTIPLE)) * MULTIPLE),
            max(MULTIPLE, int(round(width * scale / MULTIPLE)) * MULTIPLE))


def depth_to_hint(depth: np.ndarray) -> np.ndarray:
    """float HxW metric depth → uint8 HxWx3 map, near bright."""
    near, far = np.percentile(depth, NEAR_PERCENTILE), np.percentile(depth, FAR_PERCENTILE)
    scaled = 1.0 - (depth - near) / max(far - near, 1e-8)
    return np.repeat((scaled * 255.0).clip(0, 255).astype(np.uint8)[..., None], 3, axis=2)


class ZoeDepth:
    def __init__(self, model, short_side: int):
        self.model = model
        self.short_side = short_side

    @classmethod
    def load(cls, folder: Path, device: str = "cpu") -> "ZoeDepth":
        from transformers import ZoeDepthForDepthEstimation

        folder = Path(folder)
        processor = json.loads((folder / "preprocessor_config.json").read_text())
        model = ZoeDepthForDepthEstimation.from_pretrained(str(folder), local_files_only=True).to(device).eval()
        return cls(model, int(processor["size"]["height"]))

    @torch.no_grad()
    def hint(self, image: np.ndarray) -> np.ndarray:
        """uint8 HWC RGB → uint8 HWC depth map of the same size."""
        device = next(self.model.parameters()).device
        x = torch.from_numpy(np.ascontiguousarray(image)).float().permute(2, 0, 1)[None] / 255.0
        x = F.interpolate(x, size=input_size(*image.shape[:2], self.short_side), mode="bicubic",
                          align_corners=False).clamp(0, 1)
        depth = self.model(pixel_values=((x - ZOE_MEAN) / ZOE_STD).to(device)).predicted_depth
        depth = F.interpolate(depth[:, None].float(), size=image.shape[:2], mode="bilinear", align_corners=False)
        return depth_to_hint(depth[0, 0].cpu().numpy())

"""Face-render inputs (upstream ``get_facerender_data``, spec §5.6).

The coefficient arithmetic (expression scale, crop parameters, still mode, 27-frame windows)
lives in ``coefficients.py``; this module turns it into the renderer's tensors. Upstream pads
the windows to a multiple of its batch size and lays them out batch-major; the windows here stay
in frame order and ``make_animation`` renders them so, since frames are independent (§5.6 step 6;
the parity test reads upstream's layout back into frame order).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .coefficients import render_targets, semantic_windows, source_semantics


@dataclass
class FaceRenderInputs:
    """``source_image`` (1, 3, S, S) in [0, 1]; ``source_semantics`` (1, C, 27);
    ``target_semantics`` (N, C, 27), one window per frame in frame order (C = 73 for full/extfull, else 70)."""

    source_image: torch.Tensor
    source_semantics: torch.Tensor
    target_semantics: torch.Tensor

    @property
    def frame_num(self) -> int:
        return self.target_semantics.shape[0]


def source_image_tensor(picture_rgb_u8: np.ndarray) -> torch.Tensor:
    """(1, 3, S, S) float in [0, 1] from the S x S source crop (uint8 HWC RGB).

    Upstream's ``skimage.transform.resize`` to (S, S) is the identity here: the crop step already
    resized the picture to S x S (spec §5.3 step 9). ``img_as_float32`` multiplies by 1/255 in
    float32 rather than dividing, which this reproduces bit for bit.
    """
    image = np.multiply(picture_rgb_u8, 1.0 / 255, dtype=np.float32)
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).unsqueeze(0)


def facerender_inputs(first_coeff: np.ndarray, generated_coeff: np.ndarray, picture_rgb_u8: np.ndarray,
                      expression_scale: float, full_frame: bool, still: bool) -> FaceRenderInputs:
    """Renderer inputs from the (73,) source coefficients, the (N, 70) generated ones and the source crop."""
    source = np.asarray(first_coeff, dtype=np.float32).reshape(-1)
    targets = render_targets(generated_coeff, source, expression_scale, full_frame, still)
    return FaceRenderInputs(
        source_image=source_image_tensor(picture_rgb_u8),
        source_semantics=torch.from_numpy(source_semantics(source, full_frame)).unsqueeze(0),
        target_semantics=torch.from_numpy(np.ascontiguousarray(semantic_windows(targets))),
    )

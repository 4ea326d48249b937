"""faceswap-v4 test fixtures: the pipeline on the tiny profile, and scenes its detector sees.

The tiny SCRFD (faceswap.md §9.4) has one live head, stride 32: a 1x1 convolution that samples
one pixel per anchor and fires where that pixel is bright. A bright square over exactly one
anchor therefore gives exactly one face, with a box of 1.5 strides per side (96 px in the 640
detector frame, ``96 / det_scale`` in the image) and a fixed 5-point layout.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from pipelines.common.scrfd import letterbox_size
from tests.torch_threads import one_torch_thread

STRIDE = 32  # the tiny detector's only live stride
DET_BOX = 96.0  # its box side in detector pixels (1.5 strides each way)


@pytest.fixture(scope="package", autouse=True)
def one_thread():
    """One torch thread for the whole package, the pipeline's loading included."""
    with one_torch_thread():
        yield


@pytest.fixture(scope="package")
def faceswap(tiny_weights: Path):
    """The production pipeline loaded once from the tiny profile (InsightFace files allowed)."""
    from pipelines.base import LoadOptions
    from pipelines.faceswap.pipeline import FaceSwapPipeline

    return FaceSwapPipeline.load(LoadOptions(tiny_weights, allow_noncommercial=True))


def det_scale(hw: tuple[int, int]) -> float:
    """Image -> detector scale of the 640 letterbox (faceswap.md §3.3 step 1)."""
    return letterbox_size(hw)[0] / hw[0]


def face_box_side(hw: tuple[int, int]) -> float:
    """The side of every face box the tiny detector finds in an image of size ``hw``."""
    return DET_BOX / det_scale(hw)


def anchor_point(hw: tuple[int, int], row: int, col: int) -> tuple[float, float]:
    """(x, y) in the image of the stride-32 anchor (row, col): the pixel the live head samples."""
    scale = det_scale(hw)
    return col * STRIDE / scale, row * STRIDE / scale


def scene(hw: tuple[int, int], anchors: list[tuple[int, int]], background=(60, 90, 140),
          face=(255, 255, 255), skin=None, texture: float = 10.0, seed: int = 0) -> np.ndarray:
    """RGB uint8 image: a textured ``background`` (too dark to fire the detector) with one bright
    ``face`` square over each anchor (row, col), small enough to cover no other anchor. ``skin``
    adds a textured oval of that colour, as large as the face box, under each square: the face
    the parser and the colour statistics see."""
    rng = np.random.default_rng(seed)
    h, w = hw
    img = np.empty((h, w, 3), np.float32)
    img[:] = background
    box = face_box_side(hw)
    for row, col in anchors:
        if skin is not None:
            oval = np.zeros(hw, np.uint8)
            centre = tuple(int(round(v)) for v in anchor_point(hw, row, col))
            cv2.ellipse(oval, centre, (int(0.4 * box), int(0.5 * box)), 0, 0, 360, 1, -1)
            img[oval > 0] = skin
    img = np.clip(img + rng.normal(0.0, texture, (h, w, 3)), 0, 255).astype(np.uint8)
    half = 0.3 * STRIDE / det_scale(hw)
    for row, col in anchors:
        x, y = anchor_point(hw, row, col)
        img[int(round(y - half)):int(round(y + half)) + 1, int(round(x - half)):int(round(x + half)) + 1] = face
    return img

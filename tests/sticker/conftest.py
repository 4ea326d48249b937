"""face-to-sticker fixtures: scenes the tiny antelopev2 detector sees (tests/faceswap/conftest.py
explains the tiny SCRFD: a bright square over one stride-32 anchor is one face)."""
from __future__ import annotations

import numpy as np
import pytest

from tests.torch_threads import one_torch_thread


@pytest.fixture(scope="package", autouse=True)
def one_thread():
    with one_torch_thread():
        yield


def face_photo(hw=(320, 320), faces=((160, 160, 20),), background=(60, 90, 140)) -> np.ndarray:
    """RGB uint8: a background too dark for the tiny detector and a bright square per (cx, cy, side)."""
    image = np.empty(hw + (3,), dtype=np.uint8)
    image[:] = background
    rng = np.random.default_rng(0)
    image = np.clip(image + rng.normal(0, 6, image.shape), 0, 255).astype(np.uint8)
    for cx, cy, side in faces:
        image[cy - side // 2:cy + side // 2, cx - side // 2:cx + side // 2] = 255
    return image


NO_FACE = np.full((200, 200, 3), 40, dtype=np.uint8)

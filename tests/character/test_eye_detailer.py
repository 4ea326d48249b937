"""Eye detailer geometry (Impact FaceDetailer settings, sticker-and-character.md §3.3 step 8), the
WAS filters and the workflow constants that are easy to get wrong."""
from __future__ import annotations

import numpy as np
import pytest

from pipelines.character import config
from pipelines.character.eye_detailer import (
    EyeDetailer, crop_region, detail_size, eye_boxes, feathered_box_mask)
from pipelines.character.image_filters import filter_adjustments
from pipelines.common.tiny_yolo import write_tiny_yolo
from pipelines.common.yolo_loader import load_yolo_face


def test_small_boxes_are_dropped():
    detections = np.array([[0, 0, 10, 50, 0.9, 0], [0, 0, 11, 11, 0.9, 0], [5, 5, 40, 30, 0.6, 0]])
    np.testing.assert_array_equal(eye_boxes(detections), [[0, 0, 11, 11], [5, 5, 40, 30]])


def test_crop_is_three_boxes_around_the_centre_and_stays_inside():
    assert crop_region((100, 100, 120, 110), 3.0, 400, 300) == (80, 90, 140, 120)
    # Near the top-left corner the crop keeps its size and shifts inside.
    assert crop_region((0, 0, 20, 10), 3.0, 400, 300) == (0, 0, 60, 30)
    # Near the bottom-right corner too.
    assert crop_region((390, 295, 400, 300), 3.0, 400, 300) == (370, 285, 400, 300)
    # Larger than the image: clipped to it.
    assert crop_region((0, 0, 300, 200), 3.0, 400, 300) == (0, 0, 400, 300)


def test_detail_size_brings_the_short_box_side_to_384_capped_at_1024():
    # A 40x20 box in a 120x60 crop: 384 / 20 = 19.2 would make the crop 2304 wide; the cap wins.
    assert detail_size((0, 0, 40, 20), 120, 60) == (1024, 512)
    # A 64x64 box in a 192x192 crop: x6 = 1152 > 1024 again; 1024 / 192 = 5.33.
    assert detail_size((0, 0, 64, 64), 192, 192) == (1024, 1024)
    # Large boxes are brought down to the guide size, on the 8-pixel grid.
    assert detail_size((0, 0, 500, 400), 900, 700) == (864, 672)


def test_mask_is_the_dilated_box_feathered():
    mask = feathered_box_mask((100, 100), (40, 40, 60, 60), dilation=10, feather=5)
    assert mask.shape == (100, 100, 1)
    assert mask[50, 50, 0] == pytest.approx(1.0)
    assert mask[5, 5, 0] == 0.0
    assert 0.0 < mask[30, 50, 0] < 1.0  # the dilated edge, blurred


def test_detailer_pastes_each_enhanced_region_back_only_near_its_box(tmp_path):
    # The tiny face detector fires on any non-black picture: boxes all over a small image.
    path = tmp_path / "Eyes.pt"
    write_tiny_yolo(path)
    detailer = EyeDetailer(load_yolo_face(path))
    image = np.random.default_rng(0).integers(60, 200, (96, 128, 3), dtype=np.uint8)
    crops = []

    def enhance(crop):
        crops.append(crop.shape)
        return np.zeros_like(crop)

    out, count = detailer(image, enhance)
    assert count == len(crops) > 0
    assert all(h % 8 == 0 and w % 8 == 0 and max(h, w) <= config.EYES_MAX_SIZE for h, w, _ in crops)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert (out < image).any()


def test_filters_sharpen_and_keep_the_size():
    image = np.zeros((64, 64, 3), dtype=np.uint8)
    image[:, 32:] = 200
    out = filter_adjustments(image)
    assert out.shape == image.shape and out.dtype == np.uint8
    # Sharpening overshoots at the edge and leaves flat areas alone.
    assert out[32, 32].max() > 200 and (out[:, 40:] == 200).all()


def test_workflow_constants():
    negative = config.negative_prompt("low quality,blur")
    assert negative.startswith("(nsfw:2), nipple, nude, naked, low quality,blur, lowres, two people")
    assert negative.endswith("poorly drawn eyes")
    assert config.EYES_POSITIVE == "perfect eyes"
    assert config.EYES_NEGATIVE == "deformed pupils, deformed eyes, ugly eyes"
    assert config.style_transfer_scale(3) == {"up": {"block_0": [0.0, 1.0, 0.0]}}
    assert [config.pose_seed(41, i) for i in range(3)] == [41, 42, 43]

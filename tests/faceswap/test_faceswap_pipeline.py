"""faceswap-v4 end to end on the tiny profile: every mode, seeds, and the failure modes of §6.8."""
from __future__ import annotations

import dataclasses
import itertools

import cv2
import numpy as np
import pytest

from pipelines.base import InputError
from pipelines.common.color_transfer import SKIN_CLASSES
from pipelines.faceswap import masks, swap
from pipelines.faceswap.params import Params
from pipelines.faceswap.pipeline import FaceSwapPipeline
from server.protocol import params_for

from .conftest import anchor_point, face_box_side, scene

# A non-square target whose face box (about 63 px) is above the diffusion threshold, and a small
# source: the source only gives the identity and, for head swaps, the hair.
TARGET_HW = (300, 420)
SOURCE_HW = (256, 256)
TARGET = scene(TARGET_HW, [(10, 9)], background=(70, 90, 60), skin=(200, 140, 100), texture=12.0, seed=1)
SOURCE = scene(SOURCE_HW, [(10, 10)], background=(50, 80, 130), skin=(110, 120, 160), seed=2)
MODES = list(itertools.product(("face", "head"), ("speed", "quality"), ("normal", "style")))


def run(pipeline, target=TARGET, source=SOURCE, seed=11, **params) -> np.ndarray:
    result = pipeline(params_for("faceswap-v4", Params, **params), {"source_image": source, "target_image": target}, seed)
    assert len(result.images) == 1
    return result.images[0]


@pytest.fixture(scope="module")
def results(faceswap):
    """Each mode run once on the shared scene, computed on first use."""
    cache: dict[tuple[str, str, str], np.ndarray] = {}

    def get(swap_type: str, model_type: str, style_type: str) -> np.ndarray:
        key = (swap_type, model_type, style_type)
        if key not in cache:
            cache[key] = run(faceswap, swap_type=swap_type, model_type=model_type, style_type=style_type)
        return cache[key]

    return get


def face_box(hw, anchor) -> tuple[int, int, int, int]:
    x, y = anchor_point(hw, *anchor)
    half = face_box_side(hw) / 2
    return int(x - half), int(y - half), int(x + half), int(y + half)


def test_the_scenes_hold_one_face_each(faceswap):
    for image, hw, anchor in ((TARGET, TARGET_HW, (10, 9)), (SOURCE, SOURCE_HW, (10, 10))):
        faces = faceswap.c.detector.detect_faces(np.ascontiguousarray(image[..., ::-1]))
        assert len(faces) == 1
        np.testing.assert_allclose(faces[0].bbox, face_box(hw, anchor), atol=1.5)
    assert face_box_side(TARGET_HW) >= swap.MIN_DIFFUSION_FACE > face_box_side(SOURCE_HW)


@pytest.mark.parametrize("swap_type,model_type,style_type", MODES)
def test_every_mode_swaps_the_face_and_keeps_the_target_shape(results, swap_type, model_type, style_type):
    out = results(swap_type, model_type, style_type)
    assert out.shape == TARGET.shape and out.dtype == np.uint8
    x0, y0, x1, y1 = face_box(TARGET_HW, (10, 9))
    changed = np.any(out != TARGET, axis=2)
    assert changed[y0:y1, x0:x1].mean() > 0.2
    if swap_type == "face":
        # A face swap works within twice the face box (the refine crop, §6.3 step 7).
        side = x1 - x0
        keep = np.ones(TARGET_HW, bool)
        keep[max(y0 - side, 0):y1 + side, max(x0 - side, 0):x1 + side] = False
        assert not changed[keep].any()


def test_head_swap_changes_more_than_the_face_swap(results):
    for model_type, style_type in itertools.product(("speed", "quality"), ("normal", "style")):
        face = np.any(results("face", model_type, style_type) != TARGET, axis=2).sum()
        head = np.any(results("head", model_type, style_type) != TARGET, axis=2).sum()
        assert head > face


def skin_lab_mean(image: np.ndarray, skin: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_RGB2LAB).astype(np.float32)[skin > 0].mean(axis=0)


@pytest.mark.parametrize("swap_type", ["face", "head"])
def test_colour_statistics_move_toward_the_target_only_under_style(faceswap, results, swap_type):
    face = faceswap.detect(TARGET, "target_image")
    skin = masks.class_mask(swap.parse_face(faceswap.c.parser, TARGET, face), SKIN_CLASSES)
    assert skin.sum() > 20
    target = skin_lab_mean(TARGET, skin)
    normal = np.linalg.norm(skin_lab_mean(results(swap_type, "speed", "normal"), skin) - target)
    styled = np.linalg.norm(skin_lab_mean(results(swap_type, "speed", "style"), skin) - target)
    # The direction is the property: how far the skin moves depends on what the random tiny SDXL
    # paints over it (0.74 of the normal distance for the head swap since the tiny SDXL took SDXL's
    # topology, under 0.7 before), so no margin calibrated on one random network is asserted.
    assert styled < normal


def test_same_seed_same_bytes_other_seed_other_head(faceswap):
    params = dict(swap_type="head", model_type="speed", style_type="style")
    first = run(faceswap, seed=7, **params)
    assert np.array_equal(first, run(faceswap, seed=7, **params))
    assert not np.array_equal(first, run(faceswap, seed=8, **params))


def test_face_swap_is_deterministic(faceswap, results):
    assert np.array_equal(results("face", "speed", "normal"),
                          run(faceswap, swap_type="face", model_type="speed", style_type="normal"))


@pytest.mark.parametrize("field", ["source_image", "target_image"])
def test_no_face_is_an_input_error_naming_the_image(faceswap, field):
    empty = scene((200, 200), [], seed=3)
    images = {"source": SOURCE, "target": TARGET, field.removesuffix("_image"): empty}
    with pytest.raises(InputError, match=f"^No face detected in {field}$"):
        run(faceswap, swap_type="face", model_type="speed", style_type="normal", **images)


def test_no_face_anywhere_names_the_source_first(faceswap):
    empty = scene((200, 200), [], seed=3)
    with pytest.raises(InputError, match="source_image"):
        run(faceswap, source=empty, target=empty, swap_type="head", model_type="speed", style_type="normal")


class GrowFaceNear:
    """The production detector, with the box of the face nearest ``point`` grown by ``factor``
    about its centre: the tiny SCRFD gives every face the same box (§9.4), and the face choice
    is by box size (§6.2)."""

    def __init__(self, detector, point, factor: float):
        self.detector, self.point, self.factor = detector, np.asarray(point, np.float32), factor

    def detect_faces(self, img_bgr):
        faces = self.detector.detect_faces(img_bgr)
        centres = [(f.bbox[:2] + f.bbox[2:]) / 2 for f in faces]
        nearest = int(np.argmin([np.linalg.norm(c - self.point) for c in centres]))
        box = faces[nearest].bbox
        centre, half = (box[:2] + box[2:]) / 2, (box[2:] - box[:2]) / 2 * self.factor
        faces[nearest] = dataclasses.replace(faces[nearest], bbox=np.concatenate([centre - half, centre + half]))
        return faces


@pytest.mark.parametrize("bigger", [0, 1])
def test_several_faces_the_largest_is_swapped(faceswap, bigger):
    hw = (320, 640)
    anchors = [(9, 4), (9, 15)]
    target = scene(hw, anchors, background=(120, 110, 100), seed=4)
    real = faceswap.c.detector.detect_faces(np.ascontiguousarray(target[..., ::-1]))
    assert len(real) == 2
    detector = GrowFaceNear(faceswap.c.detector, anchor_point(hw, *anchors[bigger]), 1.2)
    pipeline = FaceSwapPipeline(dataclasses.replace(faceswap.c, detector=detector), faceswap.report)
    out = run(pipeline, target=target, swap_type="face", model_type="speed", style_type="normal")
    changed = np.any(out != target, axis=2)
    halves = changed[:, : hw[1] // 2], changed[:, hw[1] // 2:]
    assert halves[bigger].sum() > 100 and halves[1 - bigger].sum() == 0


class CountingInpainter:
    def __init__(self, inpainter):
        self.inpainter, self.calls = inpainter, 0

    def inpaint(self, *args, **kwargs):
        self.calls += 1
        return self.inpainter.inpaint(*args, **kwargs)


@pytest.mark.parametrize("swap_type", ["face", "head"])
def test_tiny_faces_skip_diffusion(faceswap, swap_type):
    small_hw = (256, 256)
    assert face_box_side(small_hw) < swap.MIN_DIFFUSION_FACE
    small = scene(small_hw, [(10, 10)], background=(140, 100, 80), seed=5)
    counts = {}
    for name, target in (("tiny", small), ("normal", TARGET)):
        spy = CountingInpainter(faceswap.c.inpainter)
        pipeline = FaceSwapPipeline(dataclasses.replace(faceswap.c, inpainter=spy), faceswap.report)
        out = run(pipeline, target=target, swap_type=swap_type, model_type="speed", style_type="normal")
        assert out.shape == target.shape and np.any(out != target)
        counts[name] = spy.calls
    assert counts == {"tiny": 0, "normal": 1}


def test_stage_timings_are_reported(faceswap):
    result = faceswap(params_for("faceswap-v4", Params, swap_type="face", model_type="speed", style_type="normal"),
                      {"source_image": SOURCE, "target_image": TARGET}, 1)
    timings = result.info["timings"]
    assert {"detect", "embed", "parse", "swap", "restore", "refine", "relock", "style"} <= set(timings)
    assert all(t >= 0 for t in timings.values())

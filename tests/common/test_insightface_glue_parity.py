"""Parity of the InsightFace glue with insightface 0.7.3 (shared/parity/insightface_glue/README.md).

No network runs in the reference: raw SCRFD/inswapper/ArcFace outputs are stored and our glue
is applied to them. The only weight, the inswapper emap, is written into an inswapper-format
ONNX file (``buff2fs`` as the last initializer) and read back through ``INSwapper``. The paste is
checked through ``paste_back``, the function the swap pipeline runs, not a copy of insightface's.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
import pytest

from pipelines.common.alignment import estimate_norm, norm_crop
from pipelines.common.arcface import CROP_SIZE as ARCFACE_SIZE, recognition_blob
from pipelines.common.face_types import Face
from pipelines.common.inswapper import INSwapper, align_for_swap, prediction_to_bgr, swap_blob
from pipelines.common.nms import nms
from pipelines.common.paste_back import paste_back
from pipelines.common.scrfd import (
    NMS_THRESH,
    decode_head_outputs,
    detection_blob,
    detections_from_outputs,
    letterbox,
    letterbox_size,
)
from pipelines.common.tiny_insightface import tiny_inswapper_model
from tests.parity.fixtures import (
    assert_close,
    assert_close_from_opencv_u8,
    assert_opencv_u8,
    assert_output,
    load_npz,
    missing_fixtures,
    params,
    seed_of,
    state_dict_for,
)

MODULE = "insightface_glue"
FIXTURES = params(MODULE, MODULE)


def cases(fixture: dict, pattern: str) -> list[str]:
    """Case names found in the fixture's keys, e.g. ``in_scrfd_(.+)_image_u8`` -> wide, tall."""
    regex = re.compile(pattern)
    return sorted({m.group(1) for k in fixture if (m := regex.fullmatch(k))})


def scrfd_outputs(fixture: dict, case: str) -> list[np.ndarray]:
    """The raw outputs in det_10g's session order: scores, boxes, keypoints, each stride 8/16/32."""
    return [fixture[f"in_scrfd_{case}_{head}_s{s}"] for head in ("score", "bbox", "kps") for s in (8, 16, 32)]


def assert_exact(got, ref, name: str):
    """Exact: shapes, indices, keep lists, the emap and integer math done outside OpenCV (README §6)."""
    got, ref = np.asarray(got), np.asarray(ref)
    assert got.shape == ref.shape, f"{name}: shape {got.shape} != {ref.shape}"
    assert np.array_equal(got, ref), f"{name}: max difference {np.abs(got.astype(np.float64) - ref).max()}"


@pytest.mark.parametrize("path", FIXTURES)
def test_scrfd_decoding(path: Path):
    fx = load_npz(path)
    found = cases(fx, r"in_scrfd_(.+)_image_u8")
    assert found
    for case in found:
        img = fx[f"in_scrfd_{case}_image_u8"]
        assert_exact(letterbox_size(img.shape[:2]), fx[f"out_scrfd_{case}_resized_hw"], "resized_hw")
        det_img, det_scale = letterbox(img)
        assert det_scale == fx[f"out_scrfd_{case}_det_scale"]
        # cv2.resize is the reference's own resize: exact on the fixtures' machine, one level in
        # at most 0.5 % of values on another CPU (README §6).
        assert_opencv_u8(det_img, fx[f"out_scrfd_{case}_det_img_u8"], f"{case} det_img")
        # The blob is checked from the reference's canvas so that it is held to the default tolerance.
        assert_output(detection_blob(fx[f"out_scrfd_{case}_det_img_u8"]), fx, f"out_scrfd_{case}_blob")

        outputs = scrfd_outputs(fx, case)
        pre_det, pre_kps = decode_head_outputs(outputs, (640, 640), det_scale)
        ref_pre = fx[f"out_scrfd_{case}_pre_nms"]
        assert len(pre_det) == len(ref_pre)
        assert_close(pre_det, ref_pre, f"{case} pre_nms")
        assert_close(pre_kps, fx[f"out_scrfd_{case}_pre_nms_kps"], f"{case} pre_nms_kps")
        keep = nms(pre_det[:, :4], pre_det[:, 4], NMS_THRESH, pixel_offset=1.0)
        assert_exact(keep, fx[f"out_scrfd_{case}_keep"], f"{case} keep")

        det, kps = detections_from_outputs(outputs, (640, 640), det_scale, img.shape[:2])
        assert len(det) == len(fx[f"out_scrfd_{case}_bboxes"])
        assert_close(det, fx[f"out_scrfd_{case}_bboxes"], f"{case} bboxes")
        assert_close(kps, fx[f"out_scrfd_{case}_kps"], f"{case} kps")

        det2, kps2 = detections_from_outputs(outputs, (640, 640), det_scale, img.shape[:2], max_num=2)
        assert len(det2) == len(fx[f"out_scrfd_{case}_bboxes_max2"])
        assert_close(det2, fx[f"out_scrfd_{case}_bboxes_max2"], f"{case} bboxes_max2")
        assert_close(kps2, fx[f"out_scrfd_{case}_kps_max2"], f"{case} kps_max2")


@pytest.mark.parametrize("path", FIXTURES)
def test_batched_head_outputs_decode_alike(path: Path):
    """A batched export's rank-3 outputs decode to the same detections (§3.3 step 3)."""
    fx = load_npz(path)
    for case in cases(fx, r"in_scrfd_(.+)_image_u8"):
        outputs = scrfd_outputs(fx, case)
        flat = decode_head_outputs(outputs, (640, 640), 1.0)
        batched = decode_head_outputs([o[None] for o in outputs], (640, 640), 1.0)
        assert_exact(batched[0], flat[0], f"{case} batched pre_det")
        assert_exact(batched[1], flat[1], f"{case} batched kps")


@pytest.mark.parametrize("path", FIXTURES)
def test_alignment(path: Path):
    fx = load_npz(path)
    img = fx["in_align_image_u8"]
    for size in (112, 128, 224, 256):
        got = np.stack([estimate_norm(k, size) for k in fx["in_align_kps"]])
        assert_close(got, fx[f"out_align_M{size}"], f"M{size}")
    for size in (112, 128):
        crops = np.stack([norm_crop(img, k, size)[0] for k in fx["in_align_kps"]])
        # cv2.warpAffine: exact on the fixtures' machine, the cross-CPU rule elsewhere (README §6).
        assert_opencv_u8(crops, fx[f"out_align_crop{size}_u8"], f"crop{size}")


# Where insightface's blurred mask is at least this, its blend moves a value by under 0.26 levels
# before truncating, so the pasted image is the inverse-warped crop to within one level.
INTERIOR = 0.999


def assert_paste_matches_interior(frame, crop, m, fixture: dict, case: str):
    """The request path's ``paste_back`` (a full crop mask) against the reference's pasted image
    inside its mask's interior: within one level (measured: 0 or 1 on seed 0, plus OpenCV's
    cross-CPU level); an inverse warp half a pixel off is up to 100 levels away there."""
    interior = fixture[f"out_swap_{case}_mask"] >= INTERIOR
    assert interior.sum() > 1000, f"{case}: the reference mask has no interior to compare"
    ours = paste_back(frame, crop, m, np.ones(crop.shape[:2], np.float32)).astype(np.int16)
    diff = np.abs(ours - fixture[f"out_swap_{case}_pasted_u8"])[interior]
    assert diff.max() <= 1, f"{case} pasted: {diff.max()} levels off inside the reference mask"


def write_inswapper(path: Path, emap: np.ndarray) -> Path:
    """An inswapper_128-format file holding the fixture's emap as its last initializer ``buff2fs``."""
    onnx.save(tiny_inswapper_model(emap=emap), str(path))
    return path


@pytest.mark.parametrize("path", FIXTURES)
def test_inswapper_glue(path: Path, tmp_path: Path):
    fx = load_npz(path)
    emap = state_dict_for(path, MODULE)["emap"]
    assert_exact(emap, fx["in_swap_emap"], "emap rule")
    swapper = INSwapper(write_inswapper(tmp_path / "inswapper_128.onnx", emap), device="cpu")
    assert_exact(swapper.emap, emap, "emap read from the file")

    source = Face(bbox=np.zeros(4, np.float32), kps=np.zeros((5, 2), np.float32), det_score=1.0,
                  embedding=fx["in_swap_source_embedding"])
    assert_close(source.normed_embedding, fx["out_swap_normed_embedding"], "normed_embedding")
    assert_output(swapper.latent(source.embedding), fx, "out_swap_latent")

    img = fx["in_swap_target_u8"]
    found = cases(fx, r"in_swap_(.+)_kps")
    assert found
    for case in found:
        aimg, m = align_for_swap(img, fx[f"in_swap_{case}_kps"], 128)
        assert_close(m, fx[f"out_swap_{case}_M"], f"{case} M")
        assert_opencv_u8(aimg, fx[f"out_swap_{case}_aimg_u8"], f"{case} aimg")
        assert_output(swap_blob(fx[f"out_swap_{case}_aimg_u8"][None]), fx, f"out_swap_{case}_blob")
        fake = prediction_to_bgr(fx[f"in_swap_{case}_pred"])[0]
        assert_exact(fake, fx[f"out_swap_{case}_bgr_fake_u8"], f"{case} bgr_fake")
        assert_paste_matches_interior(img, fake, m, fx, case)


@pytest.mark.parametrize("path", FIXTURES)
def test_fixture_onnx_end_to_end(path: Path):
    """The fixture's own inswapper-interface ONNX (it returns case ``center``'s prediction) through
    the production session, emap reader and paste-back."""
    onnx_path = path.parent / f"{MODULE}.inswapper_tiny.seed{seed_of(path)}.onnx"
    if not onnx_path.exists():
        missing_fixtures(f"{onnx_path.name} not shipped beside {path.name}")
    fx = load_npz(path)
    swapper = INSwapper(onnx_path, device="cpu")
    assert_exact(swapper.emap, fx["in_swap_emap"], "emap from the fixture ONNX")
    img = fx["in_swap_target_u8"]
    aimg, m = align_for_swap(img, fx["in_swap_center_kps"], 128)
    latent = swapper.latent(fx["in_swap_source_embedding"])
    pred = swapper.run(swap_blob(aimg[None]), latent)
    assert_close(pred, fx["in_swap_center_pred"], "center pred")
    fake = swapper.swap_crops(aimg[None], latent)[0]
    assert_exact(fake, fx["out_swap_center_bgr_fake_u8"], "center bgr_fake")
    assert_paste_matches_interior(img, fake, m, fx, "center")


@pytest.mark.parametrize("path", FIXTURES)
def test_arcface_preprocessing(path: Path):
    fx = load_npz(path)
    assert_output(recognition_blob([fx["in_arcface_crop_u8"]], 127.5, 127.5), fx, "out_arcface_blob")
    crop, _ = norm_crop(fx["in_align_image_u8"], fx["in_align_kps"][0], ARCFACE_SIZE)
    # The crop is cv2.warpAffine's, so a value one level off becomes 1/127.5 in the blob (README §6).
    assert_close_from_opencv_u8(recognition_blob([crop], 127.5, 127.5), fx["out_arcface_blob"], 1 / 127.5,
                                "out_arcface_blob from our crop")
    face = Face(bbox=np.zeros(4, np.float32), kps=fx["in_align_kps"][0], det_score=1.0,
                embedding=fx["in_arcface_embedding"].ravel())
    assert_output(face.normed_embedding, fx, "out_arcface_normed_embedding")

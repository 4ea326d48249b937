"""Crop and alignment geometry (spec §5.3, §5.4) against the ``align_geometry`` fixture, plus
known-transform checks of the pure functions."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.io import savemat

from pipelines.sadtalker.align import LM3D_FILE, align_face, align_img, crop_face, five_points, load_lm3d, pos
from tests.parity.fixtures import assert_close, assert_u8_close, load_npz, params

# iBUG-68 rows that the 5-point reduction reads: eye corners, nose tip, mouth corners.
FIVE_POINT_ROWS = {"eye_left": [36, 39], "eye_right": [42, 45], "nose": [30], "mouth_left": [48], "mouth_right": [54]}


def write_lm3d_mat(folder, lm3d_std5: np.ndarray):
    """A ``similarity_Lm3D_all.mat`` whose 68 x 3 ``lm`` reduces to ``lm3d_std5``: the rows the
    reduction reads hold the five points (both eye corners the same eye point, so their mean is
    exact); the other rows are filler the reduction must ignore."""
    lm = np.full((68, 3), 7.0, dtype=np.float32)
    for rows, point in zip(FIVE_POINT_ROWS.values(), lm3d_std5):
        lm[rows] = point
    savemat(str(folder / LM3D_FILE), {"lm": lm})


@pytest.mark.parametrize("fixture", params("sadtalker", "align_geometry"))
def test_align_face(fixture):
    data = load_npz(fixture)
    height, width = data["image_rgb_u8"].shape[:2]
    rsize, crop, quad = align_face(width, height, data["landmarks68"], output_size=512)
    np.testing.assert_array_equal(rsize, data["rsize"])
    np.testing.assert_array_equal(crop, data["crop"])
    assert_close(np.array(quad), data["quad_lxlyrxry"], "quad_lxlyrxry")


@pytest.mark.parametrize("fixture", params("sadtalker", "align_geometry"))
def test_lm3d_from_mat(fixture, tmp_path):
    data = load_npz(fixture)
    write_lm3d_mat(tmp_path, data["lm3d_std5"])
    np.testing.assert_array_equal(load_lm3d(tmp_path), data["lm3d_std5"])


@pytest.mark.parametrize("fixture", params("sadtalker", "align_geometry"))
@pytest.mark.parametrize("lm3d_source", ["mat", "direct"])
def test_align_img(fixture, lm3d_source, tmp_path):
    data = load_npz(fixture)
    if lm3d_source == "mat":
        write_lm3d_mat(tmp_path, data["lm3d_std5"])
        lm3d = load_lm3d(tmp_path)
    else:
        lm3d = data["lm3d_std5"]
    image = data["crop256_rgb_u8"]
    lm = data["lm256"].copy()
    lm[:, 1] = image.shape[0] - 1 - lm[:, 1]  # the 3DMM step flips y up (spec §5.4 step 1)
    trans_params, aligned, lm_aligned = align_img(image, lm, lm3d)
    assert_close(trans_params.astype(np.float32), data["trans_params"], "trans_params")
    assert_u8_close(aligned, data["aligned224_rgb_u8"], "aligned224_rgb_u8")
    assert_close(lm_aligned, data["lm_aligned"], "lm_aligned")


@pytest.mark.parametrize("fixture", params("sadtalker", "align_geometry"))
@pytest.mark.parametrize("preprocess", ["crop", "full", "extcrop", "extfull", "resize"])
def test_crop_face_cuts_the_fixture_boxes(fixture, preprocess):
    data = load_npz(fixture)
    image = data["image_rgb_u8"]
    crop, info = crop_face(image, data["landmarks68"], preprocess)
    clx, cly, crx, cry = data["crop"]
    lx, ly, rx, ry = (int(v) for v in data["quad_lxlyrxry"])
    if preprocess == "resize":
        expected, box = image, (0, 0, image.shape[1], image.shape[0])
    elif preprocess.startswith("ext"):
        expected, box = image[cly:cry, clx:crx], (clx, cly, crx, cry)
    else:
        expected, box = image[cly:cry, clx:crx][ly:ry, lx:rx], (clx + lx, cly + ly, clx + rx, cly + ry)
    np.testing.assert_array_equal(crop, expected)
    assert info.paste_box == box
    if preprocess != "resize":
        assert info.size == (rx - lx, ry - ly)


def test_crop_face_maps_a_shrunk_box_back_to_the_original():
    """A face with qsize >= 2048 px is cropped from the image shrunk by ``shrink``; the paste box
    must come back in original pixels (spec §5.9 step 5)."""
    rng = np.random.default_rng(0)
    lm = rng.normal(0, 1, (68, 2)).astype(np.float32) * 10 + 1500
    lm[36:42] = [1100, 1200]
    lm[42:48] = [1700, 1200]
    lm[[48, 54]] = [[1250, 1700], [1750, 1700]]  # qsize 2400 px -> shrink 2
    image = np.zeros((3000, 3000, 3), np.uint8)
    shrunk = align_face(3000, 3000, lm)
    assert shrunk.rsize == (1500, 1500)
    _, info = crop_face(image, lm, "extfull")
    clx, cly, crx, cry = shrunk.crop
    assert info.paste_box == (2 * clx, 2 * cly, 2 * crx, 2 * cry)


def test_five_points_reduction():
    lm = np.arange(68 * 2, dtype=np.float64).reshape(68, 2)
    expected = [(lm[36] + lm[39]) / 2, (lm[42] + lm[45]) / 2, lm[30], lm[48], lm[54]]
    np.testing.assert_array_equal(five_points(lm), expected)


def test_pos_recovers_a_known_scaled_orthographic_projection():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3, 5))
    angle = 0.3
    rot = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    scale, t = 57.0, np.array([120.0, 131.0])
    xp = scale * rot[:2] @ x + t[:, None]
    t_got, s_got = pos(xp, x)
    np.testing.assert_allclose(t_got, t, atol=1e-9)
    assert s_got == pytest.approx(scale, abs=1e-9)


def test_align_img_centres_the_standard_face():
    """Landmarks that are the standard points seen at scale 102 / s and centred end up at the
    aligned crop's centre with scale s (the projection POS inverts). s = 1.25 on a 250 px image
    puts w0 * s = 312.5 half a pixel from the truncation to int: at s = 1 the least-squares scale
    lands on either side of 256 depending on the CPU's LAPACK kernels, moving every point 0.5 px."""
    lm3d = np.array([[-0.31, 0.29, 0.13], [0.31, 0.29, 0.13], [0.0, -0.05, 0.55], [-0.25, -0.38, 0.22],
                     [0.25, -0.38, 0.22]])
    image = np.full((250, 250, 3), 128, np.uint8)
    lm5 = lm3d[:, :2] * (102.0 / 1.25) + [125.0, 125.0]
    trans_params, aligned, lm_new = align_img(image, lm5, lm3d)
    np.testing.assert_allclose(trans_params, [250, 250, 1.25, 125.0, 125.0], atol=1e-9)
    # (lm - t + w0/2) s - (int(w0 s)/2 - 112) = 102 lm3d + 156.25 - 44
    np.testing.assert_allclose(lm_new, lm3d[:, :2] * 102.0 + 112.25, atol=1e-9)
    assert aligned.shape == (224, 224, 3) and (aligned == 128).all()

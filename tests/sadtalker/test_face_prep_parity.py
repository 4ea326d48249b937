"""Parity of RetinaFace-R50 and the AWing FAN with the reference fixtures (parity README §5.3, §7),
and the detection/landmark geometry around them (sadtalker.md §3.10) on known inputs.

Weights come from each fixture's manifest and seed (detweights rule v2), are written as the
official files hold them (``detection_Resnet50_Final.pth``: plain state dict, also with the
DataParallel ``module.`` prefix; ``alignment_WFLW_4HG.pth``: ``{"state_dict": sd}``) and loaded
through the production loaders. Run with ``-s`` for CPU times and max errors.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pipelines.common.face_loader import FAN_FILE, RETINAFACE_FILE, load_fan, load_retinaface
from pipelines.common.nms import nms
from pipelines.common.retinaface import (RetinaFaceConfig, decode_boxes, decode_landmarks, detector_input,
                                         prior_boxes)
from pipelines.sadtalker.landmarks import fan_input, heatmaps_to_points, landmarks_98_to_68
from tests.parity.fixtures import (assert_close, assert_close_from_opencv_u8, load_npz, params, report, timed,
                                   torch_state_dict_for)


@pytest.mark.parametrize("path", params("sadtalker", "retinaface"))
@torch.no_grad()
def test_retinaface_parity(path, tmp_path):
    fixture = load_npz(path)
    state = torch_state_dict_for(path, "retinaface")
    plain, prefixed = tmp_path / "plain" / RETINAFACE_FILE, tmp_path / "prefixed" / RETINAFACE_FILE
    for file, prefix in ((plain, ""), (prefixed, "module.")):
        file.parent.mkdir()
        torch.save({prefix + k: v for k, v in state.items()}, file)
    net = load_retinaface(prefixed)
    for key, value in load_retinaface(plain).state_dict().items():
        assert torch.equal(value, net.state_dict()[key]), key

    x = detector_input(fixture["image_bgr_u8"])
    assert np.array_equal(x.numpy(), fixture["x"])
    outputs, seconds = timed(net, x)
    for name, got in zip(("loc", "conf", "landms"), outputs):
        report(f"retinaface.{name}", got.numpy(), fixture[name], seconds)
        assert_close(got.numpy(), fixture[name], name)


@pytest.mark.parametrize("path", params("sadtalker", "fan_awing"))
@torch.no_grad()
def test_fan_awing_parity(path, tmp_path):
    fixture = load_npz(path)
    checkpoint = tmp_path / FAN_FILE
    torch.save({"state_dict": torch_state_dict_for(path, "fan_awing")}, checkpoint)
    net = load_fan(checkpoint)

    x = fan_input(fixture["image_rgb_u8"])
    # cv2.resize then /255: one level of the resized crop is 1/255 of the input (cross-CPU rule).
    assert_close_from_opencv_u8(x.numpy(), fixture["x"], 1 / 255, "fan x")
    x = torch.from_numpy(fixture["x"])
    (heatmaps, boundaries), seconds = timed(net, x)
    assert len(heatmaps) == len(boundaries) == 4
    report("fan_awing.heatmaps_last", heatmaps[-1].numpy(), fixture["heatmaps_last"], seconds)
    assert_close(heatmaps[-1].numpy(), fixture["heatmaps_last"], "heatmaps_last")
    assert_close(boundaries[-1].numpy(), fixture["boundary_last"], "boundary_last")

    # Decoded landmarks: the argmax is stable under rounding noise; the 0.25 px sub-pixel step
    # may flip only where two neighbours agree to within that noise.
    mine = heatmaps_to_points(heatmaps[-1][:, :-1].numpy())
    ref = heatmaps_to_points(fixture["heatmaps_last"][:, :-1])
    assert np.abs(mine - ref).max() <= 0.5
    assert (mine != ref).any(axis=-1).sum() <= 2


# ---------------------------------------------------------------- geometry on known inputs

def test_prior_boxes_follow_the_network_output_order():
    cfg = RetinaFaceConfig()
    priors = prior_boxes(256, 320, cfg.min_sizes, cfg.steps)
    # 2 anchors per cell of the stride-8, 16 and 32 maps (ceil for sizes not divisible).
    assert priors.shape == (2 * (32 * 40 + 16 * 20 + 8 * 10), 4)
    assert priors.dtype == np.float32
    np.testing.assert_allclose(priors[0], [4 / 320, 4 / 256, 16 / 320, 16 / 256], rtol=1e-7)
    np.testing.assert_allclose(priors[1], [4 / 320, 4 / 256, 32 / 320, 32 / 256], rtol=1e-7)
    np.testing.assert_allclose(priors[2], [12 / 320, 4 / 256, 16 / 320, 16 / 256], rtol=1e-7)
    np.testing.assert_allclose(priors[2 * 40], [4 / 320, 12 / 256, 16 / 320, 16 / 256], rtol=1e-7)
    np.testing.assert_allclose(priors[-1], [(9.5 * 32) / 320, (7.5 * 32) / 256, 512 / 320, 512 / 256],
                               rtol=1e-7)
    assert len(prior_boxes(250, 250, cfg.min_sizes, cfg.steps)) == 2 * (32 * 32 + 16 * 16 + 8 * 8)


def test_decoding_inverts_the_training_encoding():
    variance = RetinaFaceConfig().variance
    priors = torch.tensor([[0.5, 0.5, 0.2, 0.4]])
    # Zero regressions give the prior box itself and five points at its centre.
    np.testing.assert_allclose(decode_boxes(torch.zeros(1, 4), priors, variance), [[0.4, 0.3, 0.6, 0.7]])
    np.testing.assert_allclose(decode_landmarks(torch.zeros(1, 10), priors, variance), [[0.5] * 10])
    # A box with centre (0.52, 0.46) and size (0.3, 0.2), encoded as Pytorch_Retinaface trains it.
    loc = torch.tensor([[(0.52 - 0.5) / (0.1 * 0.2), (0.46 - 0.5) / (0.1 * 0.4),
                         np.log(0.3 / 0.2) / 0.2, np.log(0.2 / 0.4) / 0.2]], dtype=torch.float32)
    np.testing.assert_allclose(decode_boxes(loc, priors, variance), [[0.37, 0.36, 0.67, 0.56]], atol=1e-6)
    points = torch.tensor([[0.1 * k for k in range(10)]])
    expected = [0.5 + 0.1 * k * 0.1 * (0.2 if k % 2 == 0 else 0.4) for k in range(10)]
    np.testing.assert_allclose(decode_landmarks(points, priors, variance), [expected], atol=1e-7)


def test_nms_has_torchvision_semantics():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [0, 0, 10, 10], [20, 20, 30, 30], [0, 5, 10, 15]],
                     dtype=np.float32)
    scores = np.array([0.9, 0.95, 0.5, 0.8, 0.7], dtype=np.float32)
    # IoU(1, 0) = 90/110 > 0.4 and box 2 duplicates box 0: both suppressed by box 1.
    # IoU(4, 1) = 45/155 <= 0.4 keeps box 4 (no +1 in the areas).
    assert nms(boxes, scores, 0.4).tolist() == [1, 3, 4]
    # Suppression needs IoU strictly above the threshold: IoU exactly 0.5 survives 0.5.
    two = np.array([[0, 0, 3, 1], [1, 0, 4, 1]], dtype=np.float32)
    assert nms(two, np.array([1.0, 0.5], np.float32), 0.5).tolist() == [0, 1]
    assert nms(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), 0.4).tolist() == []


def peaked_heatmaps(peaks: list[tuple[int, int]], size: int = 64) -> np.ndarray:
    """(1, N, size, size) maps with a peak of 10 at each (row, col) and value 1 to its right/below."""
    maps = np.zeros((1, len(peaks), size, size), dtype=np.float32)
    for n, (r, c) in enumerate(peaks):
        maps[0, n, r, c] = 10
        maps[0, n, r, (c + 1) % size] = 1
        maps[0, n, (r + 1) % size, c] = 1
    return maps


def test_heatmap_decoding_moves_towards_the_larger_neighbour():
    points = heatmaps_to_points(peaked_heatmaps([(10, 20), (30, 5)]))
    np.testing.assert_array_equal(points[0], [[20.75, 10.75], [5.75, 30.75]])
    flipped = peaked_heatmaps([(10, 20)])[:, :, ::-1, ::-1].copy()  # peak at (53, 43), neighbours before it
    np.testing.assert_array_equal(heatmaps_to_points(flipped)[0], [[43.25, 53.25]])


def test_heatmap_decoding_boundary_quirk_applies_to_every_landmark():
    # A peak in the last row makes every landmark read flat element 4095 as its lower neighbour:
    # the first landmark's real lower neighbour (1) is ignored, element 4095 (0) is below its
    # upper neighbour (0.5) -> it moves up instead of down.
    maps = peaked_heatmaps([(10, 20), (63, 5)])
    maps[0, 0, 9, 20] = 0.5
    np.testing.assert_array_equal(heatmaps_to_points(maps[:, :1])[0, 0], [20.75, 10.75])
    np.testing.assert_array_equal(heatmaps_to_points(maps)[0, 0], [20.75, 10.25])
    # A peak in the first row switches every upper neighbour to flat element 0.
    maps = peaked_heatmaps([(10, 20), (0, 5)])
    maps[0, 0, 0, 0] = 5  # larger than the first landmark's lower neighbour
    np.testing.assert_array_equal(heatmaps_to_points(maps)[0, 0], [20.75, 10.25])
    # Without a boundary peak the real neighbours are used.
    np.testing.assert_array_equal(heatmaps_to_points(maps[:, :1])[0, 0], [20.75, 10.75])


def test_heatmap_decoding_survives_a_peak_at_the_last_pixel():
    # Upstream indexes past the end here; the x+1 index is clamped to the peak itself (§7).
    maps = np.zeros((1, 1, 64, 64), dtype=np.float32)
    maps[0, 0, 63, 63] = 10
    maps[0, 0, 63, 62] = 2
    np.testing.assert_array_equal(heatmaps_to_points(maps)[0, 0], [63.75, 63.75])


def test_98_to_68_map():
    points98 = np.stack([np.arange(98), 1000 + np.arange(98)], axis=1).astype(np.float64)
    points68 = landmarks_98_to_68(points98)
    assert points68.dtype == np.float32
    expected_x = ([2 * i for i in range(17)] + [33, 37.5, 37.5, 37.5, 37.5, 46, 46, 46, 46, 46]
                  + list(range(51, 60)) + [60, 61, 63, 64, 65, 67, 68, 69, 71, 72, 73, 75]
                  + list(range(76, 96)))
    np.testing.assert_array_equal(points68[:, 0], expected_x)
    np.testing.assert_array_equal(points68[:, 1], np.array(expected_x) + 1000)

"""Parity of GFPGANv1Clean (v1.4) and ParseNet with the reference fixtures (parity README §5.3, §7).

Weights come from each fixture's manifest and seed (detweights rule v2), are written as the
official files hold them (``GFPGANv1.4.pth``: ``{"params_ema": sd}``; ``parsing_parsenet.pth``:
the plain state dict) and loaded through the production loaders. Run with ``-s`` for CPU times
and max errors.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pipelines.common.face_restore_loader import GFPGAN_FILE, PARSENET_FILE, load_gfpgan, load_parsenet
from pipelines.common.gfpgan import faces_to_tensor, tensor_to_faces
from pipelines.common.parsenet import parsenet_input
from tests.parity.fixtures import (assert_close, assert_u8_close, default_tolerance, load_npz, params, report,
                                   timed, torch_state_dict_for)


@pytest.mark.parametrize("path", params("sadtalker", "gfpgan"))
@torch.no_grad()
def test_gfpgan_parity(path, tmp_path):
    fixture = load_npz(path)
    checkpoint = tmp_path / GFPGAN_FILE
    torch.save({"params_ema": torch_state_dict_for(path, "gfpgan")}, checkpoint)
    net = load_gfpgan(checkpoint)

    x = faces_to_tensor(fixture["face_rgb_u8"][None])
    (image, rgbs), seconds = timed(net, x, return_rgb=False, randomize_noise=False)
    assert rgbs == []

    report("gfpgan.image", image.numpy(), fixture["image"], seconds)
    assert_close(image.numpy(), fixture["image"], "image")
    restored = tensor_to_faces(image)[0]
    print(f"gfpgan.restored_rgb_u8: {(restored != fixture['restored_rgb_u8']).mean():.4%} values differ")
    assert_u8_close(restored, fixture["restored_rgb_u8"], "restored_rgb_u8")


@pytest.mark.parametrize("path", params("sadtalker", "parsenet"))
@torch.no_grad()
def test_parsenet_parity(path, tmp_path):
    fixture = load_npz(path)
    checkpoint = tmp_path / PARSENET_FILE
    torch.save(torch_state_dict_for(path, "parsenet"), checkpoint)
    net = load_parsenet(checkpoint)

    (logits, image), seconds = timed(net, parsenet_input(fixture["face_rgb_u8"][None]))
    logits, image = logits.numpy(), image.numpy()

    report("parsenet.mask_logits_s8", logits[:, :, ::8, ::8], fixture["mask_logits_s8"], seconds)
    assert_close(logits[:, :, ::8, ::8], fixture["mask_logits_s8"], "mask_logits_s8")
    assert_close(image[:, :, ::8, ::8], fixture["img_s8"], "img_s8")
    sums = logits[0].astype(np.float64).sum(axis=(1, 2))
    assert_close(sums, fixture["mask_logits_sum_per_class"], "mask_logits_sum_per_class")

    # README §7: at most 0.1 % of pixels differ, and only where the two best logits are
    # within the default tolerance of each other.
    labels = logits[0].argmax(axis=0)
    differ = labels != fixture["mask_argmax"]
    print(f"parsenet.mask_argmax: {differ.mean():.4%} pixels differ")
    assert differ.mean() <= 1e-3
    if differ.any():
        top2 = np.sort(logits[0][:, differ], axis=0)[-2:]
        atol, rtol = default_tolerance(logits)
        assert np.all(top2[1] - top2[0] <= atol + rtol * np.abs(top2[1]))

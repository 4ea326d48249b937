"""Tiny GFPGAN / ParseNet / RetinaFace / FAN checkpoints: official file layout, production loaders,
and the helpers around the networks (seeded noise, parsing, detection, landmarks)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pipelines.common.checkpoint import config_sidecar
from pipelines.common.face_loader import load_fan, load_retinaface
from pipelines.common.face_restore_loader import load_gfpgan, load_parsenet
from pipelines.common.gfpgan import draw_noise, faces_to_tensor, restore_face, tensor_to_faces
from pipelines.common.parsenet import parse_faces
from pipelines.common.retinaface import detect_faces
from pipelines.common.tiny_restore import (TINY_FAN, TINY_GFPGAN, TINY_PARSENET, TINY_RETINAFACE,
                                           write_tiny_restore)
from pipelines.sadtalker.landmarks import face_landmarks68, fan_landmarks98, landmarks_98_to_68


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny_restore(tmp_path_factory.mktemp("tiny"))


def smooth_faces(n: int, size: int = 512) -> np.ndarray:
    """(n, size, size, 3) uint8 smooth random pictures."""
    rng = np.random.default_rng(7)
    coarse = torch.from_numpy(rng.random((n, 3, 8, 8), dtype=np.float32))
    fine = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)
    return (fine.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def test_files_have_the_official_layout(tiny):
    assert {p.relative_to(p.parents[1]).as_posix() for p in tiny.values()} == {
        "gfpgan/GFPGANv1.4.pth", "facexlib/parsing_parsenet.pth",
        "facexlib/detection_Resnet50_Final.pth", "facexlib/alignment_WFLW_4HG.pth"}
    assert list(torch.load(tiny["gfpgan"], weights_only=True)) == ["params_ema"]
    assert list(torch.load(tiny["fan"], weights_only=True)) == ["state_dict"]
    assert "body.conv1.weight" in torch.load(tiny["retinaface"], weights_only=True)
    assert "out_mask_conv.conv2d.weight" in torch.load(tiny["parsenet"], weights_only=True)
    for path in tiny.values():
        assert config_sidecar(path).exists()
    # The 15 noise maps of a 512 px decoder alone are 2.8 MB; everything else stays small.
    assert tiny["gfpgan"].stat().st_size < 4.5e6
    assert all(tiny[k].stat().st_size < 2e6 for k in ("parsenet", "retinaface", "fan"))


def test_loaders_build_the_tiny_configs(tiny):
    assert load_gfpgan(tiny["gfpgan"]).config == TINY_GFPGAN
    assert load_parsenet(tiny["parsenet"]).config == TINY_PARSENET
    assert load_retinaface(tiny["retinaface"]).config == TINY_RETINAFACE
    assert load_fan(tiny["fan"]).config == TINY_FAN


@torch.no_grad()
def test_gfpgan_noise_is_seeded_per_face(tiny):
    net = load_gfpgan(tiny["gfpgan"])
    faces = smooth_faces(2)
    both = restore_face(net, faces, torch.Generator().manual_seed(5))
    assert both.shape == faces.shape and both.dtype == np.uint8
    # The first face of the batch alone, from the same seed: the same draws, so the same face
    # up to rounding (a batched grouped convolution accumulates in another order).
    alone = restore_face(net, faces[:1], torch.Generator().manual_seed(5))
    assert np.abs(both[:1].astype(int) - alone).max() <= 1
    assert not np.array_equal(restore_face(net, faces[:1], torch.Generator().manual_seed(6)), both[:1])
    # Without a generator: the checkpoint's noise buffers, i.e. the parity path.
    stored, _ = net(faces_to_tensor(faces[:1]), randomize_noise=False)
    np.testing.assert_array_equal(restore_face(net, faces[:1]), tensor_to_faces(stored))


def test_noise_is_drawn_face_by_face_in_layer_order():
    batch = draw_noise(64, 2, torch.Generator().manual_seed(3), "cpu", torch.float32)
    gen = torch.Generator().manual_seed(3)
    first, second = draw_noise(64, 1, gen, "cpu", torch.float32), draw_noise(64, 1, gen, "cpu", torch.float32)
    assert [tuple(n.shape) for n in batch] == [(2, 1, 4, 4)] + [(2, 1, r, r) for r in (8, 8, 16, 16, 32, 32, 64, 64)]
    for layer, noise in enumerate(batch):
        assert torch.equal(noise, torch.cat([first[layer], second[layer]]))


def test_parse_faces_gives_a_class_map(tiny):
    labels = parse_faces(load_parsenet(tiny["parsenet"]), smooth_faces(1))
    assert labels.shape == (1, 512, 512) and labels.dtype == np.uint8
    assert labels.max() < 19


def forced_detector(path, face: bool):
    """The tiny detector with its class heads forced to 'face' (or 'background') everywhere."""
    net = load_retinaface(path)
    logits = torch.tensor([-10.0, 10.0] if face else [10.0, -10.0])
    with torch.no_grad():
        for head in net.ClassHead:
            head.conv1x1.weight.zero_()
            head.conv1x1.bias.copy_(logits.repeat(2))
    return net


def test_detect_faces_thresholds_sorts_and_suppresses(tiny):
    image = smooth_faces(1, 160)[0]
    net = load_retinaface(tiny["retinaface"])
    everything = detect_faces(net, image, conf_threshold=0.0, nms_threshold=1.0)
    assert len(everything) == 2 * (20 * 20 + 10 * 10 + 5 * 5)
    assert np.all(np.diff(everything.scores) <= 0)
    assert everything.boxes.shape == (len(everything), 4)
    assert everything.landmarks.shape == (len(everything), 5, 2)
    assert len(detect_faces(net, image, conf_threshold=0.0, nms_threshold=0.4)) < len(everything)
    assert len(detect_faces(net, image, conf_threshold=1.0)) == 0


def test_face_landmarks68_crops_the_first_detection(tiny):
    image = smooth_faces(1, 160)[0]
    detector, fan = forced_detector(tiny["retinaface"], face=True), load_fan(tiny["fan"])
    box = detect_faces(detector, image, 0.97, rgb_as_bgr=True).boxes[0]
    x1, y1, x2, y2 = (max(int(v), 0) for v in box)
    expected = landmarks_98_to_68(fan_landmarks98(fan, image[y1:y2, x1:x2])) + np.float32([x1, y1])
    np.testing.assert_array_equal(face_landmarks68(detector, fan, image), expected)
    assert face_landmarks68(forced_detector(tiny["retinaface"], face=False), fan, image) is None

"""Tiny renderer checkpoints through the production loaders, batching, and the keypoint glue's
known transforms (spec §3.8, §3.9, §5.6)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from pipelines.common.checkpoint import write_config_sidecar
from pipelines.sadtalker.align import align_img, load_lm3d
from pipelines.sadtalker.animate import get_rotation_matrix, headpose_pred_to_degree, keypoint_transformation, \
    make_animation
from pipelines.sadtalker.coeff_loader import load_mapping_net
from pipelines.sadtalker.render_loader import load_render_networks
from pipelines.sadtalker.tiny_coeff import write_tiny_mapping
from pipelines.sadtalker.align import LM3D_FILE
from pipelines.sadtalker.tiny_render import tiny_render_state, write_tiny_lm3d

pytestmark = pytest.mark.usefixtures("seeded_no_grad")

FOREIGN_KEY = "audio2exp.mapping1.bias"


@pytest.fixture
def tiny_bundle(tmp_path):
    """A tiny ``SadTalker_V0.0.2_256.safetensors``: both renderer prefixes, a foreign key, and the
    ``{prefix: config}`` sidecar the coordinator's bundle carries."""
    path = tmp_path / "SadTalker_V0.0.2_256.safetensors"
    state = {FOREIGN_KEY: torch.zeros(4)}
    configs = {}
    for prefix, (sd, config) in tiny_render_state(seed=3).items():
        state.update({prefix + k: v.contiguous() for k, v in sd.items()})
        configs[prefix] = config
    save_file(state, str(path))
    write_config_sidecar(path, configs)
    return path


def test_tiny_checkpoint_is_small_and_in_the_official_layout(tiny_bundle):
    assert tiny_bundle.stat().st_size < 2_500_000
    keys = set(tiny_render_state(seed=3)["generator."][0])
    assert "decoder.G_middle_0.conv_0.weight_orig" in keys and "decoder.up_1.conv_s.weight_v" in keys
    assert "decoder.G_middle_0.conv_0.weight" not in keys
    assert sum(k.endswith("weight_orig") for k in keys) == 18
    assert "down.weight" in tiny_render_state(seed=3)["kp_extractor."][0]


def test_tiny_renderer_loads_and_renders(tiny_bundle):
    networks = load_render_networks(tiny_bundle)
    image = torch.rand(1, 3, 256, 256)
    kp = networks.kp_detector(image)
    assert kp.shape == (1, 15, 3) and kp.abs().max() <= 1
    out = networks.generator(image, kp_driving=kp * 0.9, kp_source=kp)
    assert out["prediction"].shape == (1, 3, 256, 256)
    assert out["occlusion_map"].shape == (1, 1, 64, 64)
    assert torch.isfinite(out["prediction"]).all()


def test_loader_folds_spectral_norm_like_torch(tiny_bundle):
    """The folded weight equals what torch's own spectral norm computes in eval mode from the stored u, v."""
    state, _ = tiny_render_state(seed=3)["generator."]
    generator = load_render_networks(tiny_bundle).generator
    prefix = "decoder.up_0.conv_0."
    conv = torch.nn.Conv2d(*state[prefix + "weight_orig"].shape[:2][::-1], kernel_size=3, padding=1)
    conv = torch.nn.utils.spectral_norm(conv)
    conv.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
    conv.eval()
    conv(torch.zeros(1, conv.in_channels, 4, 4))
    torch.testing.assert_close(generator.decoder.up_0.conv_0.weight, conv.weight, rtol=1e-6, atol=1e-7)


def test_generator_batch_of_two_equals_two_single_frames(tiny_bundle):
    """Mixing frames up would differ by O(0.1); oneDNN picks other conv kernels for other batch
    sizes, so float32 rounding may differ (exactly 0 at the official widths, ~1e-5 here)."""
    generator = load_render_networks(tiny_bundle).generator
    image = torch.rand(1, 3, 256, 256)
    kp_source = torch.rand(1, 15, 3) * 1.4 - 0.7
    kp_driving = kp_source + torch.randn(2, 15, 3) * 0.1
    feature = generator.encode_source(image)
    both = generator.render(feature, kp_source, kp_driving)
    for i in range(2):
        single = generator(image, kp_driving=kp_driving[i:i + 1], kp_source=kp_source)
        for key in ("prediction", "occlusion_map", "deformation"):
            torch.testing.assert_close(both[key][i:i + 1], single[key], rtol=1e-4, atol=1e-4)


def test_make_animation_chunking_does_not_change_frames(tiny_bundle, tmp_path):
    networks = load_render_networks(tiny_bundle)
    mapping = load_mapping_net(write_tiny_mapping(tmp_path, seed=1)[0], full_frame=False)
    image = torch.rand(1, 3, 256, 256)
    source = torch.randn(1, 70, 27) * 0.1
    targets = torch.randn(3, 70, 27) * 0.1
    by_one = torch.cat(list(make_animation(image, source, targets, networks.kp_detector, mapping,
                                           networks.generator, frames_per_batch=1)))
    by_two = list(make_animation(image, source, targets, networks.kp_detector, mapping, networks.generator,
                                 frames_per_batch=2))
    assert [len(b) for b in by_two] == [2, 1]
    torch.testing.assert_close(torch.cat(by_two), by_one, rtol=1e-4, atol=1e-4)


def one_hot_logits(degrees: float) -> torch.Tensor:
    """Logits that put all the mass on the bin of ``degrees`` (bins of 3 degrees from -99)."""
    logits = torch.full((1, 66), -1e4)
    logits[0, round((degrees + 99) / 3)] = 0
    return logits


def test_headpose_degrees_from_bins():
    assert headpose_pred_to_degree(one_hot_logits(0.0)).item() == pytest.approx(0.0)
    assert headpose_pred_to_degree(one_hot_logits(-99.0)).item() == pytest.approx(-99.0)
    # Uniform logits: the mean bin 32.5 -> 32.5 * 3 - 99 = -1.5 degrees.
    assert headpose_pred_to_degree(torch.zeros(1, 66)).item() == pytest.approx(-1.5)


def test_rotation_matrix_is_rx_ry_rz_with_upstream_pi():
    a = 90 / 180 * 3.14  # upstream's 3.14, not pi (spec §3.8)
    c, s = math.cos(a), math.sin(a)
    rx = torch.tensor([[1, 0, 0], [0, c, -s], [0, s, c]])
    ry = torch.tensor([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    rz = torch.tensor([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    ninety = torch.tensor([90.0])
    zero = torch.tensor([0.0])
    torch.testing.assert_close(get_rotation_matrix(zero, ninety, zero)[0], rx)
    torch.testing.assert_close(get_rotation_matrix(ninety, zero, zero)[0], ry)
    torch.testing.assert_close(get_rotation_matrix(zero, zero, ninety)[0], rz)
    torch.testing.assert_close(get_rotation_matrix(ninety, ninety, ninety)[0], rx @ ry @ rz)


def test_keypoint_transformation_keeps_only_vertical_translation():
    kp = torch.randn(1, 15, 3)
    exp = torch.randn(2, 45)
    he = {"yaw": one_hot_logits(0.0).repeat(2, 1), "pitch": one_hot_logits(0.0).repeat(2, 1),
          "roll": one_hot_logits(0.0).repeat(2, 1), "t": torch.tensor([[5.0, 0.25, 7.0], [1.0, -0.5, 2.0]]),
          "exp": exp}
    out = keypoint_transformation(kp, he)
    expected = kp + torch.tensor([[[0.0, 0.25, 0.0]], [[0.0, -0.5, 0.0]]]) + exp.view(2, 15, 3)
    torch.testing.assert_close(out, expected)


def test_tiny_bfm_aligns_an_image(tmp_path):
    lm3d = load_lm3d(write_tiny_lm3d(tmp_path / LM3D_FILE).parent)
    assert lm3d.shape == (5, 3)
    image = np.random.default_rng(0).integers(0, 255, (256, 256, 3), dtype=np.uint8)
    lm5 = lm3d[:, :2] * 90 + 128
    trans_params, aligned, _ = align_img(image, lm5, lm3d)
    assert aligned.shape == (224, 224, 3)
    assert trans_params[2] == pytest.approx(102 / 90)

"""The sticker's own networks against what the official files hold: parameter counts and key
names of RMBG-1.4's IS-Net and ESRGAN's RRDBNet, both key layouts of the latter, and the pure
helpers of background removal, depth and tiling."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pipelines.sticker.background import min_max, paste_through_mask
from pipelines.sticker.depth import depth_to_hint, input_size
from pipelines.sticker.isnet import ISNet
from pipelines.sticker.rrdbnet import RRDBNet, basicsr_state, esrgan_state, rrdbnet_config
from pipelines.sticker.upscale import context_box, load_esrgan, tile_grid


def test_isnet_matches_rmbg_1_4():
    state = ISNet().state_dict()
    params = sum(v.numel() for k, v in state.items() if not k.endswith("num_batches_tracked"))
    # briaai/RMBG-1.4 model.pth: 176 MB of float32, 44.1 M parameters.
    assert 44.0e6 < params < 44.2e6
    for key in ("conv_in.weight", "stage1.rebnconvin.conv_s1.weight", "stage1.rebnconv7.bn_s1.running_var",
                "stage5.rebnconv4.conv_s1.weight", "stage1d.rebnconv1d.bn_s1.weight", "side6.bias"):
        assert key in state, key


def test_isnet_output_is_a_probability_at_input_size():
    net = ISNet(width=8).eval()
    with torch.no_grad():
        out = net(torch.randn(1, 3, 96, 80))
    assert out.shape == (1, 1, 96, 80) and 0 <= out.min() and out.max() <= 1


def test_rrdbnet_both_layouts_load_the_same_network():
    net = RRDBNet(features=8, blocks=3, growth=4)
    original = esrgan_state(net)
    assert "model.0.weight" in original and "model.1.sub.2.RDB3.conv5.0.bias" in original
    assert "model.1.sub.3.weight" in original and "model.10.weight" in original
    converted = basicsr_state(original)
    assert set(converted) == set(net.state_dict())
    assert rrdbnet_config(converted) == {"in_channels": 3, "out_channels": 3, "features": 8, "blocks": 3, "growth": 4}
    # ESRGAN x4 (23 blocks, 64 features, growth 32): 16.7 M parameters, a 67 MB file.
    assert 16.6e6 < sum(p.numel() for p in RRDBNet().parameters()) < 16.8e6


def test_rrdbnet_upscales_four_times():
    with torch.no_grad():
        out = RRDBNet(features=8, blocks=1, growth=4)(torch.rand(1, 3, 10, 12))
    assert out.shape == (1, 3, 40, 48)


def test_paste_through_mask_scales_colour_and_alpha_by_the_mask():
    image = np.full((2, 2, 3), 200, dtype=np.uint8)
    mask = np.array([[0, 255], [128, 64]], dtype=np.uint8)
    rgba = paste_through_mask(image, mask)
    assert rgba[0, 0].tolist() == [0, 0, 0, 0] and rgba[0, 1].tolist() == [200, 200, 200, 255]
    assert rgba[1, 0, 3] == 128 and abs(int(rgba[1, 0, 0]) - 100) <= 1


def test_min_max_spans_zero_to_one():
    out = min_max(torch.tensor([2.0, 3.0, 6.0]))
    assert out.tolist() == pytest.approx([0.0, 0.25, 1.0])


def test_depth_hint_is_bright_near():
    depth = np.linspace(1.0, 5.0, 100).reshape(10, 10)
    hint = depth_to_hint(depth)
    assert hint.shape == (10, 10, 3) and hint[0, 0, 0] == 255 and hint[-1, -1, 0] == 0


def test_depth_input_keeps_aspect_on_the_32_grid():
    assert input_size(1024, 768, 384) == (512, 384)
    assert input_size(300, 300, 384) == (384, 384)


def test_tiles_cover_the_image_and_keep_their_context_inside():
    tiles = tile_grid(1100, 600)
    assert len(tiles) == 6 and tiles[-1] == (1024, 512, 1100, 600)
    assert context_box((0, 0, 512, 512), 1100, 600) == (0, 0, 544, 544)
    assert context_box((512, 0, 1024, 512), 1100, 600) == (496, 0, 1040, 544)
    assert context_box((1024, 512, 1100, 600), 1100, 600) == (992, 480, 1100, 600)


@pytest.mark.parametrize("wrapper", [None, "params", "params_ema"])
def test_esrgan_files_load_bare_or_wrapped(tmp_path, wrapper):
    net = RRDBNet(features=8, blocks=2, growth=4)
    state = esrgan_state(net)
    path = tmp_path / "4x.pth"
    torch.save(state if wrapper is None else {wrapper: state}, str(path))
    loaded = load_esrgan(path)
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), net(x))

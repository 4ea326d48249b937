"""Parity of the audio/coefficient networks and their glue with the reference fixtures.

Weights come from the fixture manifests (detweights rule v2), are written in the official file
format (bundle safetensors with prefix, or the mapping pickle's ``mapping`` entry; parity
README §6) and loaded through the production loaders (spec §8.4).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.signal import savgol_filter

from pipelines.sadtalker.audio2pose import pose_window_count
from pipelines.sadtalker.coeff_loader import load_expnet, load_mapping_net, load_pose_vae, load_recon_net
from pipelines.sadtalker.coefficients import (render_targets, semantic_windows, smooth_pose, source_coefficients,
                                              source_semantics, transform_semantic_target)
from tests.parity.fixtures import assert_close, load_npz, params, torch_state_dict_for
from tests.parity.sadtalker_bundle import write_sadtalker_bundle

pytestmark = pytest.mark.usefixtures("one_thread", "seeded_no_grad")


def write_bundle(tmp_path, fixture, module):
    """The fixture's weights as ``SadTalker_V0.0.2_256.safetensors`` would hold them."""
    return write_sadtalker_bundle(tmp_path / "SadTalker_V0.0.2_256.safetensors", fixture, [module])


@pytest.mark.parametrize("fixture", params("sadtalker", "audio2exp"))
def test_audio2exp(fixture, tmp_path):
    data = load_npz(fixture)
    net = load_expnet(write_bundle(tmp_path, fixture, "audio2exp"))
    mels = torch.from_numpy(data["indiv_mels"][0, :, 0])
    ref = torch.from_numpy(data["ref"][0])
    ratio = torch.from_numpy(data["ratio"][0])

    chunk = net(mels[:10].unsqueeze(1), ref[:10, :64], ratio[:10])
    assert_close(chunk[None].numpy(), data["chunk_exp"], "chunk_exp")
    # Upstream chunks of 10 frames are a batch size only: a batch of 16 must give the same.
    full = net.expression_sequence(mels, ref[0, :64], ratio[:, 0], batch_size=16)
    assert_close(full[None].numpy(), data["exp_coeff_pred"], "exp_coeff_pred")


@pytest.mark.parametrize("fixture", params("sadtalker", "audio2pose"))
def test_audio2pose(fixture, tmp_path):
    data = load_npz(fixture)
    net = load_pose_vae(write_bundle(tmp_path, fixture, "audio2pose"))
    mels = torch.from_numpy(data["indiv_mels"][0, :, 0])
    ref_pose = torch.from_numpy(data["ref"][0, 0, -6:])
    style = int(data["pose_style"])

    emb = net.audio_encoder(torch.from_numpy(data["indiv_mels"][:, 1:33]))
    assert_close(emb.numpy(), data["audio_emb_first_window"], "audio_emb_first_window")

    z = torch.from_numpy(data["z"]).reshape(-1, net.latent_size)
    assert pose_window_count(len(mels), net.seq_len) == len(z)
    motion = net.motion_sequence(mels, ref_pose, style, z)
    assert_close(motion[None].numpy(), data["pose_motion_pred"], "pose_motion_pred")
    pose = net.pose_sequence(mels, ref_pose, style, z)
    assert_close(pose[None].numpy(), data["pose_pred"], "pose_pred")
    assert_close(smooth_pose(pose.numpy())[None], data["pose_pred_savgol13"], "pose_pred_savgol13")
    assert_close(smooth_pose(data["pose_pred"][0])[None], data["pose_pred_savgol13"], "savgol on reference pose")

    # Shorter than one window: the padding branch (§3.4).
    short = int(data["short_T"])
    short_z = torch.from_numpy(data["short_z"]).reshape(-1, net.latent_size)
    short_pose = net.pose_sequence(mels[:short], ref_pose, style, short_z)
    assert_close(short_pose[None].numpy(), data["short_pose_pred"], "short_pose_pred")


@pytest.mark.parametrize("fixture", params("sadtalker", "net_recon"))
def test_net_recon(fixture, tmp_path):
    data = load_npz(fixture)
    net = load_recon_net(write_bundle(tmp_path, fixture, "net_recon"))
    assert_close(net(torch.from_numpy(data["x"])).numpy(), data["coeffs"], "coeffs")


def check_mapping(fixture, module, full_frame, file_name, tmp_path):
    data = load_npz(fixture)
    path = tmp_path / file_name
    # The official pickle also holds training state beside ``mapping``; only ``mapping`` is read.
    torch.save({"mapping": torch_state_dict_for(fixture, module), "epoch": 229}, path)
    net = load_mapping_net(path, full_frame)

    np.testing.assert_array_equal(transform_semantic_target(data["coeff_seq"], 5)[None], data["x"])
    out = net(torch.from_numpy(data["x"]))
    for key in ("yaw", "pitch", "roll", "t", "exp"):
        assert_close(out[key].numpy(), data[key], f"{module}.{key}")


@pytest.mark.parametrize("fixture", params("sadtalker", "mapping_crop"))
def test_mapping_crop(fixture, tmp_path):
    check_mapping(fixture, "mapping_crop", False, "mapping_00229-model.pth.tar", tmp_path)


@pytest.mark.parametrize("fixture", params("sadtalker", "mapping_full"))
def test_mapping_full(fixture, tmp_path):
    check_mapping(fixture, "mapping_full", True, "mapping_00109-model.pth.tar", tmp_path)


@pytest.mark.parametrize("fixture", params("sadtalker", "facerender_batch"))
@pytest.mark.parametrize(("mode", "full_frame", "still"), [
    ("full", True, False), ("crop", False, False), ("full_still", True, True)])
def test_render_targets(fixture, mode, full_frame, still):
    """Expression scale, crop-parameter append, still mode and windows (§5.6) against
    ``get_facerender_data(batch_size=2, expression_scale=1.4)``; its batch layout is row b =
    frames b*L .. b*L+L-1 after padding with the last window."""
    data = load_npz(fixture)
    source = data["first_coeff"][0]
    target = render_targets(data["generated_coeff"], source, 1.4, full_frame, still)
    windows = semantic_windows(target)
    assert int(data[f"{mode}/frame_num"]) == len(windows)
    padded = np.concatenate([windows, windows[-1:]])
    np.testing.assert_array_equal(padded.reshape(2, 4, *windows.shape[1:]), data[f"{mode}/target_semantics_list"])
    np.testing.assert_array_equal(np.repeat(source_semantics(source, full_frame)[None], 2, axis=0),
                                  data[f"{mode}/source_semantics"])


@pytest.mark.parametrize("n", range(3, 16))
def test_savgol_window_for_short_clips(n):
    # Upstream: window 13, or int((N-1)/2)*2+1 below 13 frames (§3.4); mode 'interp' over time.
    pose = np.random.default_rng(n).standard_normal((n, 6)).astype(np.float32)
    window = 13 if n >= 13 else (n if n % 2 else n - 1)
    np.testing.assert_array_equal(smooth_pose(pose), savgol_filter(pose, window, 2, axis=0))


def test_savgol_needs_three_frames():
    with pytest.raises(ValueError, match="at least 3 frames"):
        smooth_pose(np.zeros((2, 6), np.float32))


def test_source_coefficients_layout():
    recon = np.arange(257, dtype=np.float32)
    trans_params = np.array([256, 256, 1.5, 120.25, 130.5])
    coeff = source_coefficients(recon, trans_params)
    np.testing.assert_array_equal(coeff[:64], recon[80:144])
    np.testing.assert_array_equal(coeff[64:67], recon[224:227])
    np.testing.assert_array_equal(coeff[67:70], recon[254:257])
    np.testing.assert_array_equal(coeff[70:], np.float32([1.5, 120.25, 130.5]))


def test_semantic_windows_clamp_at_the_clip_ends():
    coeffs = np.arange(5, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32)
    windows = semantic_windows(coeffs)
    assert windows.shape == (5, 3, 27)
    np.testing.assert_array_equal(windows[0, 0], np.r_[np.zeros(13), np.arange(5), np.full(9, 4)])
    for i in range(5):
        np.testing.assert_array_equal(windows[i], transform_semantic_target(coeffs, i))


def test_expression_scale_touches_only_the_expression():
    rng = np.random.default_rng(0)
    generated = rng.standard_normal((4, 70)).astype(np.float32)
    source = rng.standard_normal(73).astype(np.float32)
    target = render_targets(generated, source, 2.0, full_frame=False, still=False)
    np.testing.assert_array_equal(target[:, :64], generated[:, :64] * 2)
    np.testing.assert_array_equal(target[:, 64:], generated[:, 64:])
    assert generated[0, 0] == target[0, 0] / 2  # the input is not modified in place
    still = render_targets(generated, source, 1.0, full_frame=True, still=True)
    np.testing.assert_array_equal(still[:, 64:], np.repeat(source[None, 64:], 4, axis=0))

"""Tiny checkpoints of the audio/coefficient networks load through the production loaders and run.

The tiny bundle is written here the way the coordinator assembles the real one: every
network's keys under its prefix in one safetensors file, plus ``<bundle>.config.json`` =
{prefix: config}. A foreign prefix (the renderer's) sits beside ours and must be ignored.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from pipelines.common.checkpoint import write_config_sidecar
from pipelines.sadtalker.audio import audio_features
from pipelines.sadtalker.audio2pose import pose_window_count
from pipelines.sadtalker.coeff_loader import (load_coefficient_nets, load_expnet, load_mapping_net, load_pose_vae,
                                              mapping_file, read_bundle)
from pipelines.sadtalker.coefficients import (blink_schedule, generated_coefficients, render_targets,
                                              semantic_windows, source_coefficients, source_semantics)
from pipelines.sadtalker.config import AUDIO2EXP_PREFIX, AUDIO2POSE_PREFIX, NET_RECON_PREFIX
from pipelines.sadtalker.tiny_coeff import tiny_coeff_state, write_tiny_mapping

pytestmark = pytest.mark.usefixtures("one_thread", "seeded_no_grad")

FOREIGN_PREFIX = "kp_extractor."


def write_tiny_bundle(path, states):
    tensors = {prefix + key: value.contiguous() for prefix, (state, _) in states.items() for key, value in state.items()}
    tensors[FOREIGN_PREFIX + "down.weight"] = torch.ones(3, 1, 13, 13)
    save_file(tensors, str(path))
    configs = {prefix: config for prefix, (_, config) in states.items()}
    write_config_sidecar(path, {**configs, FOREIGN_PREFIX: {"num_kp": 15}})
    return path


@pytest.fixture
def bundle(tmp_path):
    return write_tiny_bundle(tmp_path / "SadTalker_V0.0.2_256.safetensors", tiny_coeff_state(0))


def test_tiny_files_are_small(bundle, tmp_path):
    assert bundle.stat().st_size < 2_000_000
    for path in write_tiny_mapping(tmp_path):
        assert path.stat().st_size < 2_000_000


def test_read_bundle_splits_by_prefix(bundle):
    parts = read_bundle(bundle)
    assert set(parts) == {AUDIO2EXP_PREFIX, AUDIO2POSE_PREFIX, NET_RECON_PREFIX, FOREIGN_PREFIX}
    assert "mapping1.weight" in parts[AUDIO2EXP_PREFIX]


def test_tiny_states_are_seeded():
    a, b, c = tiny_coeff_state(1), tiny_coeff_state(1), tiny_coeff_state(2)
    key = "mapping1.weight"
    assert torch.equal(a[AUDIO2EXP_PREFIX][0][key], b[AUDIO2EXP_PREFIX][0][key])
    assert not torch.equal(a[AUDIO2EXP_PREFIX][0][key], c[AUDIO2EXP_PREFIX][0][key])


def test_loading_is_strict_within_the_prefix(tmp_path):
    states = tiny_coeff_state(0)
    state, config = states[AUDIO2EXP_PREFIX]
    missing = dict(state)
    del missing["mapping1.bias"]
    path = write_tiny_bundle(tmp_path / "missing.safetensors", {AUDIO2EXP_PREFIX: (missing, config)})
    with pytest.raises(ValueError, match="mapping1.bias"):
        load_expnet(path)
    extra = {**state, "mapping2.weight": torch.zeros(1)}
    path = write_tiny_bundle(tmp_path / "extra.safetensors", {AUDIO2EXP_PREFIX: (extra, config)})
    with pytest.raises(ValueError, match="mapping2.weight"):
        load_expnet(path)
    # The PoseVAE's training-only encoder and discriminator are part of its strict key set.
    state, config = states[AUDIO2POSE_PREFIX]
    no_disc = {k: v for k, v in state.items() if not k.startswith("netD_motion.")}
    path = write_tiny_bundle(tmp_path / "no_disc.safetensors", {AUDIO2POSE_PREFIX: (no_disc, config)})
    with pytest.raises(ValueError, match="netD_motion"):
        load_pose_vae(path)


@pytest.mark.parametrize("num_frames", [3, 9, 10, 20, 33])
def test_tiny_pose_vae_windows(bundle, num_frames):
    vae = load_pose_vae(bundle)
    mels = torch.randn(num_frames, 80, 16)
    ref_pose = torch.randn(6)
    z = vae.draw_noise(num_frames, torch.Generator().manual_seed(3))
    assert z.shape == (pose_window_count(num_frames, vae.seq_len), vae.latent_size)
    pose = vae.pose_sequence(mels, ref_pose, 45, z)
    assert pose.shape == (num_frames, 6) and torch.isfinite(pose).all()
    torch.testing.assert_close(pose[0], ref_pose, rtol=0, atol=0)
    again = vae.pose_sequence(mels, ref_pose, 45, vae.draw_noise(num_frames, torch.Generator().manual_seed(3)))
    torch.testing.assert_close(pose, again, rtol=0, atol=0)
    # Full windows do not depend on the remainder window (its z and frames).
    full = (num_frames - 1) // vae.seq_len * vae.seq_len
    if full and full + 1 < num_frames:
        head = vae.pose_sequence(mels[:full + 1], ref_pose, 45, z[:-1])
        torch.testing.assert_close(pose[:full + 1], head)


def test_tiny_pose_vae_rejects_bad_inputs(bundle):
    vae = load_pose_vae(bundle)
    mels = torch.randn(12, 80, 16)
    with pytest.raises(ValueError, match="pose_style"):
        vae.pose_sequence(mels, torch.zeros(6), 46, vae.draw_noise(12, torch.Generator()))
    with pytest.raises(ValueError, match="z of shape"):
        vae.pose_sequence(mels, torch.zeros(6), 0, torch.zeros(1, vae.latent_size))


@pytest.mark.parametrize("preprocess_full", [False, True])
def test_tiny_coefficient_flow(bundle, tmp_path, preprocess_full):
    """Audio -> ExpNet + PoseVAE -> smoothing -> render targets -> MappingNet, all tiny."""
    nets = load_coefficient_nets(bundle)
    recon = nets.recon_net(torch.rand(1, 3, 224, 224))
    assert recon.shape == (1, 257)
    source = source_coefficients(recon[0].numpy(), np.array([256, 256, 1.02, 128.5, 127.0]))
    assert source.shape == (73,)

    t = np.arange(16000 * 1.3) / 16000
    mels, n = audio_features((0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32))
    blink = blink_schedule(n, np.random.default_rng(5))
    exp = nets.expnet.expression_sequence(torch.from_numpy(mels), torch.from_numpy(source[:64]),
                                          torch.from_numpy(blink), batch_size=7)
    z = nets.pose_vae.draw_noise(n, torch.Generator().manual_seed(5))
    pose = nets.pose_vae.pose_sequence(torch.from_numpy(mels), torch.from_numpy(source[64:70]), 4, z)
    coeffs = generated_coefficients(exp.numpy(), pose.numpy())
    assert coeffs.shape == (n, 70) and np.isfinite(coeffs).all()

    write_tiny_mapping(tmp_path)
    mapping = load_mapping_net(tmp_path / "sadtalker" / mapping_file(preprocess_full), preprocess_full)
    target = render_targets(coeffs, source, 1.4, preprocess_full, still=preprocess_full)
    windows = torch.from_numpy(semantic_windows(target))
    out = mapping(windows)
    assert out["yaw"].shape == (n, 66) and out["exp"].shape == (n, 45) and out["t"].shape == (n, 3)
    src = mapping(torch.from_numpy(source_semantics(source, preprocess_full))[None])
    assert all(torch.isfinite(v).all() for v in src.values())

"""Batch sizes of the SadTalker networks (pipelines/sadtalker/batching.py): the memory rule, the
CPU sizes, the compile switch, and that the audio batch size leaves the coefficients unchanged."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pipelines.sadtalker.audio2exp import ExpNet
from pipelines.sadtalker.audio2pose import PoseVAE
from pipelines.sadtalker.batching import (CPU_AUDIO_FRAMES, CPU_ENHANCE_FACES, CPU_RENDER_FRAMES, CUDA_AUDIO_FRAMES,
                                          BatchSizes, MemoryCost, audio_frames_per_batch, batch_that_fits)
from pipelines.sadtalker.pipeline import COMPILE_ENV, SadTalkerSettings
from pipelines.sadtalker.tiny_coeff import TINY_AUDIO2EXP, TINY_AUDIO2POSE

pytestmark = pytest.mark.usefixtures("one_thread", "seeded_no_grad")

GiB = 2**30


def test_batch_that_fits_takes_the_fixed_part_and_the_headroom_into_account():
    cost = MemoryCost(fixed=2 * GiB, per_item=GiB)
    assert batch_that_fits(20 * GiB, cost, cap=64, headroom=0.5) == 8  # (10 - 2) / 1
    assert batch_that_fits(200 * GiB, cost, cap=64, headroom=0.5) == 64
    assert batch_that_fits(GiB, cost, cap=64, headroom=0.5) == 1  # never below one frame


def test_cpu_sizes_are_fixed_and_explicit_sizes_win():
    cpu = BatchSizes("cpu", {}, None)
    assert (cpu.audio(), cpu.render(256), cpu.render(512), cpu.enhance()) == (
        CPU_AUDIO_FRAMES, CPU_RENDER_FRAMES, CPU_RENDER_FRAMES, CPU_ENHANCE_FACES)
    fixed = BatchSizes("cuda:0", {}, None, render_frames=5, enhance_faces=3)
    assert (fixed.render(512), fixed.enhance()) == (5, 3)
    assert audio_frames_per_batch("cuda:1") == CUDA_AUDIO_FRAMES


@pytest.mark.parametrize("value, compiled", [("1", True), ("true", True), ("0", False), ("", False)])
def test_compile_switch_from_the_environment(value, compiled):
    assert SadTalkerSettings.from_environ({COMPILE_ENV: value}).compile_renderer is compiled
    assert SadTalkerSettings.from_environ({}).compile_renderer is False


def test_audio_batch_size_leaves_expression_and_pose_unchanged():
    """Frames are independent in both encoders (§3.3, §3.4): any batch size gives the same result
    up to float32 rounding: at most 4.8e-7 measured here on outputs up to 2.1 in size; 1e-5 leaves
    room for other CPUs' convolution kernels."""
    frames = 75  # nine full windows of the tiny seq_len 8 and a remainder of 2
    expnet, pose_vae = ExpNet(**TINY_AUDIO2EXP).eval(), PoseVAE(**TINY_AUDIO2POSE).eval()
    mels, blink = torch.randn(frames, 80, 16), torch.rand(frames)
    source_exp, ref_pose = torch.randn(expnet.mapping1.out_features), torch.randn(6)
    z = pose_vae.draw_noise(frames, torch.Generator().manual_seed(0))
    whole_exp = expnet.expression_sequence(mels, source_exp, blink, frames)
    whole_pose = pose_vae.pose_sequence(mels, ref_pose, 3, z, frames)
    for batch in (1, 10, CPU_AUDIO_FRAMES):
        np.testing.assert_allclose(expnet.expression_sequence(mels, source_exp, blink, batch).numpy(),
                                   whole_exp.numpy(), atol=1e-5)
        np.testing.assert_allclose(pose_vae.pose_sequence(mels, ref_pose, 3, z, batch).numpy(),
                                   whole_pose.numpy(), atol=1e-5)


def test_compile_switch_wraps_the_renderers_per_frame_pass(tiny_weights):
    """Compilation itself is lazy (the first call, or the CUDA batch sizing at load); on CPU loading
    only wraps the per-frame ``render`` at both sizes."""
    from pipelines.base import LoadOptions
    from pipelines.sadtalker.pipeline import SadTalkerPipeline

    plain = SadTalkerPipeline.load(LoadOptions(weights_dir=tiny_weights), SadTalkerSettings())
    compiled = SadTalkerPipeline.load(LoadOptions(weights_dir=tiny_weights), SadTalkerSettings(compile_renderer=True))
    for size in (256, 512):
        assert "render" not in vars(plain.models.bundles[size].render.generator)
        wrapped = vars(compiled.models.bundles[size].render.generator)["render"]
        assert hasattr(wrapped, "_torchdynamo_orig_callable")
    assert compiled.batches.render(256) == CPU_RENDER_FRAMES

"""InstantID's embeds as ComfyUI_InstantID builds them (sticker-and-character.md §2.2 step 5)."""
from __future__ import annotations

import numpy as np
import torch

from pipelines.common.instantid import INSTANTID_NOISE, instantid_embeds


def test_negative_is_noise_seeded_from_the_embedding_sum_and_positive_is_raw():
    face = np.random.default_rng(0).normal(0, 1.2, 512).astype(np.float32)  # un-normalised, norm ~27
    embeds = instantid_embeds(face)
    assert embeds.shape == (2, 1, 1, 512)
    torch.testing.assert_close(embeds[1, 0, 0], torch.from_numpy(face))
    seed = int(torch.from_numpy(face).sum().item()) % 1000000007
    want = INSTANTID_NOISE * torch.rand((1, 512), generator=torch.Generator().manual_seed(seed))
    torch.testing.assert_close(embeds[0, 0], want)
    assert 0 <= embeds[0].min() and embeds[0].max() < INSTANTID_NOISE


def test_no_noise_means_a_zero_negative():
    embeds = instantid_embeds(np.ones(512, np.float32), noise=0.0)
    assert not embeds[0].any()

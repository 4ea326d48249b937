"""Appearance feature extractor F: a 256² RGB crop → the feature volume f_s (spec §2.1)."""
from __future__ import annotations

import torch

from pipelines.common.motion_blocks import AppearanceEncoder


class AppearanceFeatureExtractor(AppearanceEncoder):
    """``F(source_image)`` → f_s (B, 32, 16, 64, 64) officially: face-vid2vid's appearance encoder,
    which SadTalker's generator holds too (pipelines/common/motion_blocks.py)."""

    def forward(self, source_image: torch.Tensor) -> torch.Tensor:
        return self.encode_source(source_image)

"""SPADE decoder G: the warped feature → a 512² RGB image through a sigmoid (spec §2.4).

Spectral norm lives only in the checkpoint: the loader folds ``weight_orig / σ`` into plain
``weight`` tensors (§2.4, §7.4), so conv_0 / conv_1 / conv_s are ordinary convolutions here.
"""
from __future__ import annotations

from pipelines.common import motion_blocks
from pipelines.common.motion_blocks import SPECTRAL_NORM_CONVS

# SPECTRAL_NORM_CONVS names the spectral-norm convolutions for the tiny-checkpoint writer.
__all__ = ["SPADEDecoder", "SPECTRAL_NORM_CONVS"]


class SPADEDecoder(motion_blocks.SPADEDecoder):
    """``G(feature=)`` → (B, 3, 4·upscale·H, 4·upscale·W) image in (0, 1): 64² → 512² officially.

    Takes models.yaml's arguments; the input width is the warping module's output width
    ``block_expansion·2^num_down_blocks`` (capped), 256 officially.
    """

    def __init__(self, upscale: int, block_expansion: int, max_features: int, num_down_blocks: int,
                 out_channels: int, spade_hidden: int):
        super().__init__(feature_channels=min(max_features, block_expansion * (2 ** num_down_blocks)),
                         out_channels=out_channels, hidden=spade_hidden, upscale=upscale)
